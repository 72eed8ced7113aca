"""``crownsam train / predict / evaluate-model`` from the command line: bad input gives one line and
exit 2 before any model is built; the trained fixture model predicts and is evaluated end to end."""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from mlflow.tracking import MlflowClient

from crownsam import cli

try:
    from .synth import make_export
except ImportError:
    from synth import make_export


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("crownsam: error: ") and "Traceback" not in err
    return lines[0]


def test_train_bad_input_is_one_line_and_exit_2(capsys, tmp_path, synth):
    empty = make_export(tmp_path / "empty", grid=(2, 2), empty_train_labels=True)
    out = tmp_path / "run"
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    not_json = broken_copy(synth.root, tmp_path / "not-json", "train.json")
    export_not_json = broken_copy(synth.root, tmp_path / "export-not-json", "export.json")
    cases = [
        (["--coco", str(empty.root)], "the label set is empty"),
        (["--coco", str(synth.root), "--bands", "5"], "band 5 is not in the chips"),
        (["--coco", str(synth.root), "--bands", "1,2,3,4"], "band 4 is not in the chips"),
        (["--coco", str(tmp_path / "nope")], "COCO folder not found"),
        (["--coco", str(synth.root), "--epochs", "0"], "--epochs: must be a positive integer"),
        (["--coco", str(synth.root), "--lr", "0"], "--lr: must be a positive number"),
        (["--coco", str(synth.root), "--resume"], "nothing to resume"),
        (["--coco", str(synth.root), "--weights", str(tmp_path / "w.pt")], "weights not found"),
        (["--coco", str(synth.root), "--max-iters", "-1"], "--max-iters: must be a positive integer"),
        (["--coco", str(synth.root), "--batch-size", "0"], "--batch-size: must be a positive integer"),
        (["--coco", str(not_json)], "train.json: not readable COCO JSON"),
        (["--coco", str(export_not_json)], "export.json: not readable JSON"),
        (["--coco", str(synth.root), "--out", str(a_file)], f"{a_file}: is a file; --out needs a folder"),
    ]
    for extra, message in cases:
        code, stdout, err = run_cli(capsys, "train", "--out", str(out), "--no-tracking", *extra)
        assert code == 2, (extra, err)
        assert message in one_error_line(err), (extra, err)
        assert stdout == ""
        assert not (out / "checkpoints" / "last.pt").exists()
    # argparse-level mistakes: the same one-line form (argparse exits by itself)
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--coco", str(synth.root), "--out", str(out), "--bands", "a,b"])
    assert exc.value.code == 2 and "--bands" in one_error_line(capsys.readouterr().err)


def broken_copy(root, target, name: str):
    """A copy of a COCO export folder whose ``name`` is not JSON."""
    import shutil

    shutil.copytree(root, target)
    (target / name).write_text("{not json")
    return target


def test_train_from_the_command_line(capsys, tmp_path, synth):
    """One step from the command line, without MLflow: the options reach TrainConfig, the line says where."""
    out = tmp_path / "cli-run"
    code, stdout, _ = run_cli(
        capsys, "train", "--coco", str(synth.root), "--out", str(out), "--max-iters", "1",
        "--batch-size", "1", "--model", "v1", "--device", "cpu", "--no-tracking", "--no-progress",
        "--label-source", "cli",
    )  # fmt: skip
    assert code == 0 and stdout.splitlines()[0].endswith(f"-> {out}") and "trained 1 steps" in stdout
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["label_source"] == "cli" and saved["iterations"] == 1


def test_train_refuses_an_existing_run_without_resume(capsys, trained):
    before = (trained.out / "checkpoints" / "last.pt").stat().st_mtime_ns
    code, _, err = run_cli(capsys, "train", "--coco", str(trained.synth.root), "--out", str(trained.out))
    assert code == 2 and "already holds a training run; pass --resume" in one_error_line(err)
    assert (trained.out / "checkpoints" / "last.pt").stat().st_mtime_ns == before


def test_predict_bad_input(capsys, tmp_path, trained):
    s = trained.synth
    base = ["predict", "--model", str(trained.out), "--ortho", str(s.ortho)]
    in_the_way = trained.out / "metrics.json"  # an existing file where a folder should be
    cases = [
        (["--out", str(tmp_path / "p.shp")], "output must be a GeoPackage"),
        (
            ["--out", str(tmp_path / "p.gpkg"), "--bands", "1,2,7"],
            "band 7 out of range: the raster has bands 1..3",
        ),
        (["--out", str(tmp_path / "p.gpkg"), "--bands", "1,2"], "the model takes 3 bands"),
        (["--out", str(tmp_path / "p.gpkg"), "--overlap", "1.5"], "--overlap must be in [0, 1)"),
        (["--out", str(tmp_path / "p.gpkg"), "--area", str(tmp_path / "no.gpkg")], "area file not found"),
        (["--out", str(tmp_path / "p.gpkg"), "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--out", str(tmp_path / "p.gpkg"), "--window", "0"], "--window must be at least 32"),
        (["--out", str(tmp_path / "p.gpkg"), "--workers", "-1"], "--workers must be at least 0, got -1"),
        (["--out", str(in_the_way / "p.gpkg")], f"lies under the file {in_the_way}; --out needs a path"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(capsys, *base, *extra)
        assert code == 2 and message in one_error_line(err), (extra, err)
    code, _, err = run_cli(
        capsys, "predict", "--model", str(tmp_path), "--ortho", str(s.ortho), "--out", "x.gpkg"
    )
    assert code == 2 and "run folder without checkpoints" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_predict_writes_georeferenced_polygons_with_scores(capsys, tmp_path, trained):
    s = trained.synth
    out = tmp_path / "pred.gpkg"
    code, stdout, err = run_cli(
        capsys,
        "predict",
        "--model", str(trained.out),
        "--ortho", str(s.ortho),
        "--area", str(s.area),
        "--out", str(out),
        "--window", "128",
        "--overlap", "0",
        "--score-threshold", "0",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "crowns from 6 windows" in stdout
    gdf = gpd.read_file(out)
    assert gdf.crs.to_epsg() == 3067
    assert {"segment_id", "score", "area", "cut_by_window"} <= set(gdf.columns)
    area = gpd.read_file(s.area).geometry.iloc[0]
    if len(gdf):  # an untrained model predicts something or nothing; where it does, the rules hold
        assert gdf["score"].between(0, 1).all() and gdf["segment_id"].is_unique
        assert shapely.covers(area, gdf.geometry.centroid.values).all()
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["windows"] == 6 and summary["bands"] == [1, 2, 3]
    assert summary["run_id"] == trained.run_id


def test_evaluate_model_from_mlflow_uri_with_jaccard(capsys, tmp_path, trained):
    s = trained.synth
    out = tmp_path / "eval"
    code, stdout, err = run_cli(
        capsys,
        "evaluate-model",
        "--model", f"runs:/{trained.run_id}/model",
        "--coco", str(s.root),
        "--out", str(out),
        "--manual", str(s.manual),
        "--area", str(s.area),
        "--ortho", str(s.ortho),
        "--window", "128",
        "--overlap", "0",
        "--score-threshold", "0.05",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert f"logged to MLflow run {trained.run_id}" in stdout
    result = json.loads((out / "metrics.json").read_text())
    m = result["metrics"]
    for key in ("segm_AP", "segm_AP50", "segm_AP75", "segm_APs", "segm_AR100", "bbox_AP", "bbox_AP50"):
        assert -1.0 <= m[key] <= 1.0
    # the same statistics as training's final test evaluation: same model, same chips
    assert m["segm_AP"] == pytest.approx(trained.metrics["test"]["test_segm_AP"])
    assert m["n_trees"] == len(gpd.read_file(s.manual)) and "jaccard_mean/model" in m
    assert (out / "predictions.gpkg").is_file() and (out / "per_tree.csv").is_file()
    assert (out / "predictions_test.png").is_file()
    run = MlflowClient(trained.tracking_uri).get_run(trained.run_id)
    assert run.data.metrics["eval_segm_AP"] == pytest.approx(m["segm_AP"])
    assert "eval_jaccard_mean_model" in run.data.metrics


def test_evaluate_model_bad_input(capsys, tmp_path, trained):
    s = trained.synth
    base = [
        "evaluate-model",
        "--model",
        str(trained.out),
        "--coco",
        str(s.root),
        "--out",
        str(tmp_path / "e"),
    ]
    code, _, err = run_cli(capsys, *base, "--manual", str(s.manual))
    assert code == 2 and "--manual needs --ortho" in one_error_line(err)
    code, _, err = run_cli(capsys, *base, "--manual", str(tmp_path / "none.gpkg"), "--ortho", str(s.ortho))
    assert code == 2 and "manual crowns file not found" in one_error_line(err)
    assert not (tmp_path / "e").exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    code, _, err = run_cli(capsys, *base[:-1], str(a_file))
    assert code == 2 and f"{a_file}: is a file; --out needs a folder" in one_error_line(err)
    assert a_file.read_text() == "not a folder"
    not_json = broken_copy(s.root, tmp_path / "not-json", "test.json")
    code, _, err = run_cli(capsys, *base[:3], "--coco", str(not_json), "--out", str(tmp_path / "e"))
    assert code == 2 and "test.json: not readable COCO JSON" in one_error_line(err)
    code, _, err = run_cli(capsys, *base, "--workers", "-1")
    assert code == 2 and "--workers must be at least 0, got -1" in one_error_line(err)


def test_evaluate_model_refines_the_predicted_crowns_beside_the_raw_ones(capsys, tmp_path, trained):
    """--refine box with untrained SAM2 (plumbing: its numbers say nothing about refinement): the raw and
    refined crowns are evaluated side by side, and the refined files are written."""
    s = trained.synth
    out = tmp_path / "eval"
    code, _, err = run_cli(
        capsys,
        "evaluate-model",
        "--model", str(trained.out),
        "--coco", str(s.root),
        "--out", str(out),
        "--manual", str(s.manual),
        "--area", str(s.area),
        "--ortho", str(s.ortho),
        "--window", "128",
        "--overlap", "0",
        "--score-threshold", "0.05",
        "--refine", "box",
        "--sam2-untrained",
        "--device", "cpu",
        "--workers", "1",
        "--no-mlflow",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    for name in ("model", "refined"):
        assert f"jaccard_mean/{name}" in m and f"f1/{name}" in m
    assert "refined_segm_AP" in m and "refined_bbox_AP" in m
    refined = gpd.read_file(out / "refined.gpkg")
    predicted = gpd.read_file(out / "predictions.gpkg")
    assert m["refined_crowns"] == len(refined) and m["predicted_crowns"] == len(predicted)
    assert set(refined["segment_id"]) <= set(predicted["segment_id"])
    summary = json.loads((out / "refine.summary.json").read_text())
    assert summary["method"] == "box" and summary["untrained"] is True and refined["untrained"].all()
    assert summary["window_loop"] == {"workers": 1}  # --workers reaches the refinement
    per_tree = pd.read_csv(out / "per_tree.csv")
    assert set(per_tree["label_set"]) == {"model", "refined"}


def test_evaluate_model_refine_bad_input(capsys, tmp_path, trained):
    s = trained.synth
    base = ["evaluate-model", "--model", str(trained.out), "--coco", str(s.root)]
    base += ["--out", str(tmp_path / "e")]
    code, _, err = run_cli(capsys, *base, "--refine", "box", "--sam2-untrained")
    assert code == 2 and "--refine refines the crowns predicted over --ortho" in one_error_line(err)
    with_manual = [*base, "--manual", str(s.manual), "--ortho", str(s.ortho)]
    code, _, err = run_cli(capsys, *with_manual, "--refine", "box")
    assert code == 2 and "pass --sam2-checkpoint URI" in one_error_line(err)
    code, _, err = run_cli(capsys, *with_manual, "--refine", "sessrs", "--refine-t1", "2")
    assert code == 2 and "--refine-t1 must be in [0, 1], got 2" in one_error_line(err)
    assert not (tmp_path / "e").exists()
