"""KFP component: compare the label sets and the two models; register both, set champion/challenger."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from crownsam.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def compare_op(
    label_eval: Input[Dataset],
    coarse_model_eval: Input[Dataset],
    pseudo_model_eval: Input[Dataset],
    manual_uri: str,
    test_area_uri: str,
    registered_model_name: str,
    mlflow_tracking_uri: str,
    flight_id: str,
    ortho_fingerprint: str,
    manual_fingerprint: str,
    untrained: bool,
    kfp_run_id: str,
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    result: Output[Dataset],
):
    """One report (HTML + Markdown), flat metrics, and the registry decision (JSON)."""
    import shutil

    from crownsam.common.provenance import image_ref
    from crownsam.comparison.api import compare_step
    from crownsam.pseudolabel.params import UNTRAINED_BANNER

    r = compare_step(
        label_eval.path,
        {"coarse": coarse_model_eval.path, "pseudo": pseudo_model_eval.path},
        result.path,
        manual_uri=manual_uri,
        test_area_uri=test_area_uri,
        register_name=registered_model_name,
        tracking_uri=mlflow_tracking_uri,
        tags={
            "flight_id": flight_id,
            "ortho_fingerprint": ortho_fingerprint,
            "manual_fingerprint": manual_fingerprint,
            "image": image_ref(),
            "kfp_run_id": kfp_run_id,
        },
        banner=UNTRAINED_BANNER if untrained else None,
    )
    shutil.copyfile(f"{result.path}/comparison.html", report.path)
    shutil.copyfile(f"{result.path}/comparison.md", summary.path)
    for key, value in r["metrics"].items():
        metrics.log_metric(key.replace("/", "_"), value)
