"""KFP component: Jaccard evaluation of the coarse segments and the pseudolabels."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from crownsam.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate_labels_op(
    manual_uri: str,
    manual_fingerprint: str,
    test_area_uri: str,
    ortho_uri: str,
    ortho_fingerprint: str,
    coarse: Input[Dataset],
    pseudo: Input[Dataset],
    untrained: bool,
    results: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
):
    """Per-tree Jaccard (CSV), metrics (JSON and the KFP Metrics view) and the HTML report."""
    from crownsam.evaluation.steps import evaluate_step

    values = evaluate_step(
        manual_uri,
        test_area_uri,
        ortho_uri,
        {"coarse": coarse.path, "pseudo": pseudo.path},
        results.path,
        report.path,
        untrained=untrained,
    )
    for key, value in values.items():
        metrics.log_metric(key, value)
