"""Slow tests (``make test-slow``): two-process DistributedDataParallel training under ``torchrun``, and
the whole chain on the synthetic scene: export-coco (4 bands) -> train (embedded sqlite MLflow store) ->
predict -> evaluate-model with Jaccard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import torch
from mlflow.tracking import MlflowClient

from crownsam import cli

try:
    from .synth import make_export
except ImportError:
    from synth import make_export

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_torchrun_two_processes_train_with_ddp(tmp_path):
    s = make_export(tmp_path / "data", grid=(2, 3))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    cmd = [
        str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2",
        "-m", "crownsam.cli", "train",
        "--coco", str(s.root), "--out", str(out), "--max-iters", "2", "--batch-size", "1",
        "--device", "cpu", "--threads", "1", "--no-progress", "--no-tracking", "--seed", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("crownsam: trained 2 steps") == 1  # rank 0 reports, rank 1 stays quiet
    ckpt = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["world_size"] == 2
    # 2 train chips / (1 chip x 2 processes) = 1 step per epoch: 2 steps are 2 epochs
    assert ckpt["state"]["iteration"] == 2 and ckpt["state"]["epoch"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert all(h["train_images_per_s"] > 0 for h in metrics["history"])


@pytest.mark.slow
def test_export_train_predict_evaluate_on_the_synthetic_scene(tmp_path, monkeypatch, capsys):
    from crownsam.coco.export import export_coco
    from crownsam.synthetic import generate_scene

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    scene = generate_scene(tmp_path / "scene", size=1536, seed=0)
    coco = tmp_path / "coco"
    export_coco(
        scene.ortho,
        scene.coarse,
        coco,
        holdout=scene.test_area,
        manual=scene.manual,
        chip=256,
        bands=(3, 2, 1, 4),
        buffer_m=1.0,
        val_block=2,
    )
    run = tmp_path / "run"
    code = cli.main(
        [
            "train", "--coco", str(coco), "--out", str(run), "--label-source", "coarse",
            "--max-iters", "2", "--batch-size", "1", "--device", "cpu", "--no-progress",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tracking_uri"] == f"sqlite:///{(run / 'mlflow.db').resolve()}"
    client = MlflowClient(metrics["tracking_uri"])
    r = client.get_run(metrics["run_id"])
    assert r.data.params["bands"] == "3,2,1,4" and r.data.params["label_source"] == "coarse"
    assert (run / "mlartifacts").is_dir()  # artifacts beside the embedded store, not ./mlruns
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["model"]["backbone.body.conv1.weight"].shape[1] == 4

    pred = tmp_path / "pred.gpkg"
    code = cli.main(
        [
            "predict", "--model", str(run), "--ortho", str(scene.ortho), "--area", str(scene.test_area),
            "--out", str(pred), "--window", "256", "--score-threshold", "0.05", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    gdf = gpd.read_file(pred)
    assert gdf.crs.to_epsg() == 3067 and "score" in gdf

    code = cli.main(
        [
            "evaluate-model", "--model", str(run), "--coco", str(coco), "--out", str(tmp_path / "eval"),
            "--manual", str(scene.manual), "--area", str(scene.test_area), "--ortho", str(scene.ortho),
            "--window", "256", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "segm_AP" in result["metrics"] and "jaccard_mean/model" in result["metrics"]
    assert "eval_segm_AP" in client.get_run(metrics["run_id"]).data.metrics
