"""The whole pipeline on KFP's local runner (real subprocess tasks), a tiny scene, a real MLflow server.

Untrained SAM2 and a two-iteration Mask R-CNN: this checks that every step runs, every artifact is
there and consistent, runs are tagged, and the registry holds champion and challenger. Not quality.
Slow (about 6-12 minutes on 2 cores: two Mask R-CNN trainings and evaluations on CPU); the default suite
runs the pseudolabel half of the pipeline on the same runner (test_local_pseudolabel.py).
"""

from __future__ import annotations

import json

import geopandas as gpd
import mlflow
import pytest
import torch
from mlflow_server import mlflow_server

from crownsam.pipelines.local import flight_arguments, run_local
from crownsam.synthetic import generate_scene

pytestmark = pytest.mark.slow

TINY = {
    "shards": 2,
    "chip": 256,
    "val_block": 1,
    "holdout_buffer_m": 0.5,
    "max_iters": 2,
    "epochs": 1,
    "batch_size": 1,
    "untrained": True,
    "registered_model_name": "crowns-e2e",
    "mlflow_experiment": "e2e",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    scene = generate_scene(root / "flight", size=1024, seed=4)
    with mlflow_server(root / "mlflow") as uri:
        args = flight_arguments(str(scene.root)) | {"flight_id": "f-e2e", "mlflow_tracking_uri": uri} | TINY
        result = run_local(args, root / "run")
        yield result, uri


def test_every_artifact_is_there(run) -> None:
    result, _ = run
    a = result.artifacts
    assert set(a) >= {
        "comparison_report",
        "comparison_markdown",
        "comparison",
        "label_report",
        "pseudolabels",
    }
    labels = gpd.read_file(a["pseudolabels"] / "pseudolabels.gpkg")
    summary = json.loads((a["pseudolabels"] / "pseudolabels.summary.json").read_text())
    assert len(labels) == summary["segments_labeled"] > 0 and labels["untrained"].all()
    assert summary["shards"] == 1  # a 1024 px scene has one window, so one non-empty shard
    assert "UNTRAINED" in a["label_report"].read_text()
    assert "UNTRAINED" in a["comparison_report"].read_text() and "<img" in a["comparison_report"].read_text()
    assert "| coarse |" in a["comparison_markdown"].read_text()
    for report in result.run_dir.rglob("evaluate-model-op*/report"):
        assert "segm_AP" in report.read_text() and "data:image/png;base64," in report.read_text()
    assert len(list(result.run_dir.rglob("evaluate-model-op*/report"))) == 2
    labels_eval = result.run_dir / "evaluate-labels-op" / "results"
    assert {"per_tree.csv", "metrics.json", "report.html"} <= {p.name for p in labels_eval.iterdir()}


def test_registry_and_runs(run, tmp_path) -> None:
    result, uri = run
    comparison = json.loads((result.artifacts["comparison"] / "comparison.json").read_text())
    reg = comparison["registry"]
    assert reg["promoted"] and set(reg["aliases"]) == {"champion", "challenger"}
    assert set(reg["versions"]) == {"coarse", "pseudo"}
    client = mlflow.MlflowClient(uri)
    model = client.get_registered_model("crowns-e2e")
    assert model.aliases == reg["aliases"]
    for source, version in reg["versions"].items():
        mv = client.get_model_version("crowns-e2e", version)
        assert mv.tags["label_source"] == source and mv.tags["flight_id"] == "f-e2e"
        assert mv.tags["test_set"] == reg["test_set"] and mv.tags["git_commit"]
        assert "decision" in mv.tags
        run_ = client.get_run(mv.run_id)
        assert run_.data.tags.get("flight_id") == "f-e2e" and run_.data.tags.get("kfp_run_id")
        assert "segm_AP" in "".join(run_.data.metrics)  # test metrics logged to the run
    champion = mlflow.pytorch.load_model("models:/crowns-e2e@champion", dst_path=str(tmp_path)).eval()
    with torch.no_grad():
        out = champion([torch.rand(3, 256, 256)])
    assert set(out[0]) >= {"boxes", "masks", "scores"}


def test_index_links_every_report_and_renders_in_chromium(run, tmp_path) -> None:
    """``index.html`` as ``crownsam run`` writes it, opened in headless Chromium: every linked report is
    an ``.html`` page beside it, the summary shows both label sets and both models, the page is not blank
    and carries the UNTRAINED banner."""
    import io
    import re

    import numpy as np
    from helpers import run_chromium
    from PIL import Image

    from crownsam.pipelines.run_report import collect, write_index

    result, uri = run
    out = tmp_path / "run"
    index = write_index(out, collect(result.run_dir), untrained=True, tracking_uri=uri, log=result.log)
    dom = run_chromium(tmp_path, "--dump-dom", index.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    links = re.findall(r'<a href="([^"]+)"', dom.stdout)
    assert len(links) == 5, links  # label report, comparison, two model evaluations, pseudolabel summary
    assert all(link.startswith("reports/") and link.endswith(".html") for link in links), links
    for link in links:
        page = (out / link).read_text()
        assert page.lstrip().lower().startswith("<!doctype html") or "<html" in page[:500].lower(), link
    text = dom.stdout
    assert "coarse" in text and "pseudo" in text and "segm AP" in text and "UNTRAINED" in text

    shot = tmp_path / "index.png"
    res = run_chromium(tmp_path, "--window-size=1280,1200", f"--screenshot={shot}", index.resolve().as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    assert img.shape == (1200, 1280, 3) and img.std() > 20  # not a blank page
    banner = np.abs(img[:300] - np.array([0xB0, 0x00, 0x20])).sum(axis=2) <= 40  # the UNTRAINED banner
    assert banner.sum() > 5000
