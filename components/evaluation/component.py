"""KFP component: Jaccard evaluation of the coarse segments, the pseudolabels and (with the pipeline switch
``find_missed``) the pseudolabels completed with the crowns the coarse segments missed."""

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
    completed: Input[Dataset],
    untrained: bool,
    results: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    rgb_bands: str = "3,2,1",
    find_missed: bool = False,
):
    """Per-tree Jaccard (CSV), metrics (JSON and the KFP Metrics view) and the HTML report; parameters:
    ``EvaluateParams``; ``completed`` is one more label set when ``find_missed`` (``PipelineFindMissed``)
    is on (off: it is the pseudolabels passed through, and left out)."""
    import math
    import shutil
    from pathlib import Path

    from crownsam.common.artifacts import label_file
    from crownsam.evaluation.api import evaluate_files
    from crownsam.evaluation.params import EvaluateParams
    from crownsam.everything.params import PipelineFindMissed
    from crownsam.pseudolabel.params import UNTRAINED_BANNER

    sets = {"coarse": label_file(coarse.path), "pseudo": label_file(pseudo.path)}
    if PipelineFindMissed.from_pipeline(find_missed=find_missed).find_missed:
        sets["completed"] = label_file(completed.path)
    ev = evaluate_files(
        manual_uri,
        sets,
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
