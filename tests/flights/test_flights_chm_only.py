"""Flights that carry a CHM but no ``coarse.gpkg`` (the usual case for a new flight): their coarse crowns
come from ``segment-chm``. Processed once, then a no-op; a second CHM-only flight added later is the only
one segmented and pseudolabeled.

The library scenario uses the known-answer SAM2 stand-in (see ``flight_helpers``: geometry is real, SAM2
itself costs ~30 s per flight here and adds nothing these checks need); the command-line test runs the
user's exact command with real, untrained SAM2.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from flight_helpers import TruthPredictors, make_scene, tiny_settings, upload_flight
from mlflow import MlflowClient

from crownsam import cli
from crownsam.flights.retrain import retrain, scan

CHM_ONLY = ("ortho.tif", "chm.tif", "manual.gpkg", "test_area.gpkg")


def flight_runs(tracking_uri: str, flight_id: str) -> list:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("crownsam-flights")
    return client.search_runs([exp.experiment_id], f"tags.flight_id = '{flight_id}'")


def test_chm_only_flights_are_segmented_once_and_only_when_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path / "cache"))
    scenes = {"A": make_scene(tmp_path / "A", 51), "B": make_scene(tmp_path / "B", 52)}
    root = tmp_path / "catalog"
    upload_flight(scenes["A"], str(root / "flights" / "A"), files=CHM_ONLY)
    predictors = TruthPredictors()
    for fid, scene in scenes.items():
        predictors.add(fid, scene)
    settings = tiny_settings(registered_model_name="chm-only")
    opts = {"predictor_factory": predictors}

    first = retrain(str(root), settings, **opts)
    assert first["status"] == "retrained", first["message"]
    assert first["pseudolabeled"] == ["A"] and predictors.calls == ["A"]
    tracking = first["tracking_uri"]
    (run_a,) = flight_runs(tracking, "A")
    assert run_a.data.tags["segments_source"] == "chm" and run_a.data.tags["segments_from"] == "chm"
    segments_a = root / "work" / "flights" / "A" / run_a.data.tags["inputs_key"] / "segments.gpkg"
    crowns = gpd.read_file(segments_a)
    assert len(crowns) > 10 and {"treetop_x", "treetop_y", "top_height_m"} <= set(crowns.columns)
    assert run_a.data.metrics["segments"] == len(crowns)
    stamp = segments_a.stat().st_mtime_ns

    again = retrain(str(root), settings, **opts)
    assert again["status"] == "up-to-date" and predictors.calls == ["A"]

    upload_flight(scenes["B"], str(root / "flights" / "B"), files=CHM_ONLY)
    assert [s.status for s in scan(str(root)).flights] == ["processed", "new"]
    third = retrain(str(root), settings, **opts)
    assert third["status"] == "retrained", third["message"]
    assert third["pseudolabeled"] == ["B"] and predictors.calls == ["A", "B"]
    assert third["trained_on"] == ["A", "B"]
    assert len(flight_runs(tracking, "A")) == 1 and segments_a.stat().st_mtime_ns == stamp
    (run_b,) = flight_runs(tracking, "B")
    assert run_b.data.tags["segments_from"] == "chm"


def test_cli_retrain_of_a_chm_only_flight_with_untrained_sam2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """The command from the bug report, on a catalog whose only flight has no coarse.gpkg."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "catalog"
    upload_flight(make_scene(tmp_path / "scene", 53), str(root / "flights" / "F1"), files=CHM_ONLY)
    argv = ["flights", "retrain", "--root", str(root), "--local", "--untrained", "--device", "cpu",
            "--chip", "256", "--max-iters", "1", "--batch-size", "1", "--epochs", "1", "--val-block", "1",
            "--buffer", "0.5", "--registered-model-name", "chm-cli"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capfd.readouterr().out.strip().splitlines()
    assert out[0] == "crownsam: pseudolabeled F1" and "trained on 1 flight(s) (F1)" in out[1]
    (summary,) = (root / "work" / "flights" / "F1").rglob("pseudolabels.summary.json")
    assert json.loads(summary.read_text())["segments_labeled"] > 0
    assert cli.main(argv) == 0
    assert "up-to-date: no new flight" in capfd.readouterr().out
