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
    rgb_bands: str = "3,2,1",
):
    """Per-tree Jaccard (CSV), metrics (JSON and the KFP Metrics view) and the HTML report; parameters:
    ``EvaluateParams``."""
    import math
    import shutil
    from pathlib import Path

    from crownsam.common.artifacts import label_file
    from crownsam.evaluation.api import evaluate_files
    from crownsam.evaluation.params import EvaluateParams
    from crownsam.pseudolabel.params import UNTRAINED_BANNER

    ev = evaluate_files(
        manual_uri,
        {"coarse": label_file(coarse.path), "pseudo": label_file(pseudo.path)},
        results.path,
        area=test_area_uri or None,
        ortho=ortho_uri or None,
        banner=UNTRAINED_BANNER if untrained else None,
        params=EvaluateParams.from_pipeline(rgb_bands=rgb_bands),
    )
    shutil.copyfile(Path(results.path) / "report.html", report.path)
    for key, value in ev.metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics.log_metric(key, float(value))
