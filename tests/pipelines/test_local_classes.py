"""The whole pipeline with ``pseudo_classes = 2`` on KFP's local runner: the pseudolabels get two
pseudo-classes, the pseudo label set's COCO export has one category per class (the coarse one keeps one,
tree), the pseudo model trains with three classes (background + 2) and its MLflow run holds per-class AP
next to the class-agnostic AP. Untrained SAM2 and two Mask R-CNN steps: plumbing, not quality. Slow (a
whole pipeline run, two trainings on CPU); tests/classes and tests/training cover the parts in the
default suite."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import mlflow
import pytest
import torch

from crownsam.pipelines.local import flight_arguments, run_local
from crownsam.synthetic import generate_scene

try:
    from .test_local_run import TINY
except ImportError:
    from test_local_run import TINY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # two CPU trainings: 25+ min on a busy machine


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("e2e_classes")
    scene = generate_scene(root / "flight", size=1024, seed=4)
    args = flight_arguments(str(scene.root)) | {"flight_id": "f-classes"} | TINY | {"pseudo_classes": "2"}
    result = run_local(args, root / "run")
    return result


def one(run_dir: Path, pattern: str) -> Path:
    hits = sorted(run_dir.rglob(pattern))
    assert len(hits) == 1, (pattern, hits)
    return hits[0]


def test_pseudolabels_get_classes_and_the_pseudo_export_one_category_per_class(run) -> None:
    classed = gpd.read_file(one(run.run_dir, "pseudo-classes-op/classed/pseudo_classes.gpkg"))
    assert set(classed["pseudo_class"]) - {-1} == {0, 1}
    exports = {}
    for p in run.run_dir.rglob("export-coco-op*/coco/export.json"):
        s = json.loads(p.read_text())
        exports[Path(s["inputs"]["labels"]["path"]).name] = s
    assert [c["name"] for c in exports["pseudo_classes.gpkg"]["categories"]] == ["class_0", "class_1"]
    (coarse,) = [s for name, s in exports.items() if name != "pseudo_classes.gpkg"]
    assert [c["name"] for c in coarse["categories"]] == ["tree"]


def test_the_pseudo_model_is_multi_class_with_per_class_ap_in_mlflow(run) -> None:
    client = mlflow.MlflowClient(run.tracking_uri)
    exp = client.get_experiment_by_name(TINY["mlflow_experiment"])
    runs = {r.data.tags["crownsam.label_source"]: r for r in client.search_runs([exp.experiment_id])}
    pseudo, coarse = runs["pseudo"], runs["coarse"]
    assert pseudo.data.params["classes"] == "class_0,class_1" and "classes" not in coarse.data.params
    for key in ("val_segm_AP", "val_segm_mAP", "val_segm_AP/class_0", "val_segm_AP/class_1"):
        assert key in pseudo.data.metrics, key
    assert "val_segm_AP" in coarse.data.metrics and not [k for k in coarse.data.metrics if "/" in k]
    # both models are evaluated on the manual test crowns (no classes): the class-agnostic AP only, the
    # number the comparison and the registry use
    evals = [json.loads(p.read_text()) for p in run.run_dir.rglob("evaluate-model-op*/results/metrics.json")]
    assert len(evals) == 2
    for e in evals:
        assert 0.0 <= e["metrics"]["segm_AP"] <= 1.0 and not [k for k in e["metrics"] if "/class_" in k]
    assert (run.artifacts["comparison"] / "comparison.json").is_file()
