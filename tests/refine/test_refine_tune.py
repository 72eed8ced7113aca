"""``--tune``: t1 and t2 chosen on validation crowns, the grid and the choice in the summary and in MLflow.

Known answer: the SAM objects are the true crowns of a synthetic scene, the predictions the true crowns
degraded by ``degrade.py``, the validation crowns the truth. Every grid pair is scored by refining and
computing the mean Jaccard, so the chosen pair must have the grid's highest mean Jaccard, and the
refined output written with the chosen pair must score exactly that.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from degrade import degraded_scene

from crownsam import cli
from crownsam.evaluation.api import evaluate_label_sets

T1, T2 = "0.3,0.5,0.9", "0.5,0.7,0.95"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("refine-tune")
    scene, truth = degraded_scene(d, size=768, seed=3)
    return d, scene, truth


def tune_argv(d: Path, scene, out: Path, *extra: str) -> list[str]:
    return [
        "refine", "--ortho", str(scene.ortho), "--predictions", str(d / "pred.gpkg"), "--out", str(out),
        "--method", "sessrs", "--masks", str(scene.truth), "--tune", "--tune-truth", str(scene.truth),
        "--t1-grid", T1, "--t2-grid", T2, "--no-progress", *extra,
    ]  # fmt: skip


def test_tune_records_the_grid_and_picks_its_best_pair(scene, tmp_path: Path, capfd) -> None:
    d, sc, truth = scene
    out = tmp_path / "refined.gpkg"
    assert cli.main(tune_argv(d, sc, out)) == 0
    assert "tuned t1" in capfd.readouterr().out
    s = json.loads((tmp_path / "refined.summary.json").read_text())
    grid = s["sessrs"]["tune"]["grid"]
    assert [(g["t1"], g["t2"]) for g in grid] == [(a, b) for a in (0.3, 0.5, 0.9) for b in (0.5, 0.7, 0.95)]
    best = max(g["jaccard_mean"] for g in grid)
    assert s["tune"]["jaccard_mean"] == best and (s["sessrs"]["t1"], s["sessrs"]["t2"]) == (
        s["tune"]["t1"],
        s["tune"]["t2"],
    )
    # the grid differs (the thresholds matter) and the choice beats the predictions
    assert min(g["jaccard_mean"] for g in grid) < best
    assert best > s["sessrs"]["tune"]["prediction_jaccard_mean"] + 0.25
    assert s["tune"]["mlflow_run"] is None
    ev = evaluate_label_sets(truth, {"r": gpd.read_file(out)}, None, label_id_column="crown_id", n_boot=1)
    assert ev.metrics["jaccard_mean/r"] == pytest.approx(best, abs=1e-9)


def test_tune_logs_the_choice_to_the_models_mlflow_run(scene, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    d, sc, _ = scene
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("refine-tune"))
    out = tmp_path / "refined.gpkg"
    argv = tune_argv(d, sc, out, "--tracking-uri", uri, "--run-id", run.info.run_id)
    assert cli.main(argv) == 0
    s = json.loads((tmp_path / "refined.summary.json").read_text())
    assert s["tune"]["mlflow_run"] == run.info.run_id
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["refine_t1"] == s["tune"]["t1"] and metrics["refine_t2"] == s["tune"]["t2"]
    assert metrics["refine_tune_jaccard"] == pytest.approx(s["tune"]["jaccard_mean"])
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "refine")]
    assert arts == ["refine/refine_tune.json"]


def test_tune_on_coco_val_labels(scene, tmp_path: Path) -> None:
    """--tune-coco: the val split of an export of the true crowns, traced back to polygons, validates."""
    from crownsam.refine.chips import split_crowns
    from crownsam.training.data import load_coco

    d, sc, truth = scene
    coco = tmp_path / "coco"
    export = ["export-coco", "--ortho", str(sc.ortho), "--labels", str(sc.truth), "--out", str(coco)]
    assert (
        cli.main([*export, "--chip", "256", "--overlap", "0", "--val-block", "1", "--val-fraction", "0.3"])
        == 0
    )
    val, area = split_crowns(load_coco(coco / "val.json"), str(truth.crs), "val.json")
    # crowns wholly inside the val chips come back as they were, to within a pixel's width along the edge
    region = area.geometry.iloc[0]
    by_id = truth.set_index("tree_id").geometry
    inside = [(i, g) for i, g in zip(val["tree_id"], val.geometry, strict=True) if by_id[i].within(region)]
    assert inside
    for i, g in inside:
        t = by_id[i]
        assert g.intersection(t).area / g.union(t).area > 0.9
    out = tmp_path / "refined.gpkg"
    argv = tune_argv(d, sc, out)
    argv[argv.index("--tune-truth") : argv.index("--tune-truth") + 2] = ["--tune-coco", str(coco)]
    assert cli.main(argv) == 0
    s = json.loads((tmp_path / "refined.summary.json").read_text())
    assert s["tune"]["on"].startswith("COCO val labels")
    assert s["sessrs"]["tune"]["validation_crowns"] == len(val)
    assert s["tune"]["jaccard_mean"] > s["sessrs"]["tune"]["prediction_jaccard_mean"]
