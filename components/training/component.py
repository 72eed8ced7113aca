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
    mlflow_tracking_uri: str = "",
    mlflow_experiment: str = "crownsam",
    flight_id: str = "",
    kfp_run_id: str = "",
    ortho_fingerprint: str = "",
) -> str:
    """Train on one label set (parameters: ``TrainConfig``); the model folder holds checkpoints (a retried
    task resumes from the last epoch), metrics.json and run.json; returns the MLflow run id."""
    from crownsam.common.metrics import finite_metrics
    from crownsam.common.provenance import git_commit, image_ref
    from crownsam.training.config import TrainConfig
    from crownsam.training.train import has_checkpoint, train

    tags = {"flight_id": flight_id, "kfp_run_id": kfp_run_id, "ortho_fingerprint": ortho_fingerprint}
    cfg = TrainConfig.from_pipeline(
        coco_dir=coco.path,
        out_dir=model.path,
        label_source=label_source,
        epochs=epochs,
        max_iters=max_iters,
        lr=lr,
        batch_size=batch_size,
        model_version=model_version,
        init_weights=init_weights,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_experiment=mlflow_experiment,
        tags={k: v for k, v in tags.items() if v} | {"git_commit": git_commit(), "image": image_ref()},
        resume=has_checkpoint(model.path),
        progress=False,
        evaluate_test=False,  # evaluate_model_op predicts the test chips and logs them to this same run
    )
    result = train(cfg)
    for key, value in finite_metrics(result).items():
        metrics.log_metric(key, value)
    run_id = str(result.get("run_id") or "")
    model.metadata["run_id"] = run_id
    return run_id


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
    mlflow_tracking_uri: str = "",
    refine: str = "none",
    refine_t1: float = 0.5,
    refine_t2: float = 0.5,
    rgb_bands: str = "3,2,1",
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
):
    """COCO segm/bbox AP on the test chips, and Jaccard of crowns predicted over the test area; with
    ``refine`` (``box``/``sessrs``) the predicted crowns refined by SAM2 beside them. Parameters:
    ``RefineParams`` and ``Sam2Params``."""
    from pathlib import Path

    from crownsam.common.metrics import finite_metrics
    from crownsam.pseudolabel.params import Sam2Params
    from crownsam.refine.api import RefineSetup
    from crownsam.refine.params import RefineParams
    from crownsam.training.api import evaluate_model, model_report_html

    setup = RefineSetup(
        params=RefineParams.from_pipeline(
            refine=refine, refine_t1=refine_t1, refine_t2=refine_t2, rgb_bands=rgb_bands
        ),
        sam2=Sam2Params.from_pipeline(
            sam2_model=sam2_model, sam2_checkpoint=sam2_checkpoint, untrained=untrained
        ),
        progress=False,
    )

    result = evaluate_model(
        model.path,
        coco.path,
        results.path,
        manual=manual_uri or None,
        area=test_area_uri or None,
        ortho=ortho_uri if manual_uri else None,
        tracking_uri=mlflow_tracking_uri or None,
        progress=False,
        refine=setup,
    )
    for key, value in finite_metrics(result["metrics"]).items():
        metrics.log_metric(key.replace("/", "_"), value)
    Path(report.path).write_text(model_report_html(results.path))
