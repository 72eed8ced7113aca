"""KFP components: Mask R-CNN training (GPU) and its evaluation on the held-out test area."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from crownsam.common.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_op(
    coco: Input[Dataset],
    label_source: str,
    model: Output[Model],
    metrics: Output[Metrics],
    epochs: int = 20,
    max_iters: int = 0,
    lr: float = 0.005,
    batch_size: int = 2,
    model_version: str = "v2",
    init_weights: str = "",
    tracking_uri: str = "",
    experiment: str = "crownsam",
    flight_id: str = "",
    kfp_run_id: str = "",
    ortho_fingerprint: str = "",
) -> str:
    """Train on one label set; the model folder holds checkpoints (a retried task resumes from the last
    epoch), metrics.json and run.json; returns the MLflow run id."""
    from crownsam.training.steps import train_step

    result = train_step(
        coco.path,
        model.path,
        label_source,
        epochs=epochs,
        max_iters=max_iters,
        lr=lr,
        batch_size=batch_size,
        model_version=model_version,
        init_weights=init_weights,
        tracking_uri=tracking_uri,
        experiment=experiment,
        tags={"flight_id": flight_id, "kfp_run_id": kfp_run_id, "ortho_fingerprint": ortho_fingerprint},
    )
    for key, value in result["metrics"].items():
        metrics.log_metric(key, value)
    model.metadata["run_id"] = result["run_id"]
    return result["run_id"]


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate_model_op(
    model: Input[Model],
    coco: Input[Dataset],
    manual_uri: str,
    test_area_uri: str,
    ortho_uri: str,
    ortho_fingerprint: str,
    results: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    tracking_uri: str = "",
):
    """COCO segm/bbox AP on the test chips, and Jaccard of crowns predicted over the test area."""
    from pathlib import Path

    from crownsam.training.steps import evaluate_model_step, model_report_html

    for key, value in evaluate_model_step(
        model.path, coco.path, results.path, manual_uri, test_area_uri, ortho_uri, tracking_uri
    ).items():
        metrics.log_metric(key, value)
    Path(report.path).write_text(model_report_html(results.path))
