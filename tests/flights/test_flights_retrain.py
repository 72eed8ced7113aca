"""The issue's scenario: a flight catalog in a bucket (real GCS emulator), state in a real MLflow server.

Add flight A -> retrain (A pseudolabeled once, first model champion) -> retrain again (up-to-date,
nothing changes) -> add flight B -> retrain (only B pseudolabeled; one model trained on A and B; the
champion re-measured on the new evaluation set, A's and B's manual crowns; the alias moves only if the
new model is better). A half-uploaded flight C (no flight.yaml) is listed as incomplete and never
processed. Pseudolabels come from a known-answer stand-in for SAM2 (see flight_helpers for why); Mask R-CNN
trains for one step on 256-px chips.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import pytest
from common.gcs_emulator import gcs_emulator
from flight_helpers import TruthPredictors, make_scene, tiny_settings, upload_flight
from mlflow import MlflowClient
from mlflow.entities import ViewType

from crownsam import cli
from crownsam.common import storage
from crownsam.flights.catalog import FlightMeta
from crownsam.flights.retrain import retrain, scan
from crownsam.flights.state import DATASET_KEY

EXP = "flights-scenario"
MODEL = "flights-scenario-maskrcnn"


def all_runs(client: MlflowClient, flight_id: str | None = None) -> list:
    exp = client.get_experiment_by_name(EXP)
    query = f"tags.flight_id = '{flight_id}'" if flight_id else ""
    return client.search_runs([exp.experiment_id], query, run_view_type=ViewType.ALL, max_results=1000)


def versions(client: MlflowClient) -> list[str]:
    return sorted(v.version for v in client.search_model_versions(f"name='{MODEL}'"))


def test_new_flights_are_pseudolabeled_once_and_the_model_retrained_on_all(
    tmp_path: Path, flights_mlflow: str, monkeypatch: pytest.MonkeyPatch, caplog, capfd
) -> None:
    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # MLflow's default store is ./mlflow.db: nothing may fall back on it
    caplog.set_level(logging.INFO, logger="crownsam")
    scenes = {fid: make_scene(tmp_path / fid, seed) for fid, seed in (("A", 11), ("B", 12), ("C", 13))}
    predictors = TruthPredictors()
    for fid, scene in scenes.items():
        predictors.add(fid, scene)
    settings = tiny_settings(tracking_uri=flights_mlflow, experiment=EXP, registered_model_name=MODEL)
    opts = {"predictor_factory": predictors}
    client = MlflowClient(flights_mlflow)
    from google.cloud import storage as gcs

    with gcs_emulator():
        gcs.Client.create_anonymous_client().create_bucket("catalog")
        root = "gs://catalog"
        upload_flight(scenes["A"], f"{root}/flights/A")
        upload_flight(scenes["C"], f"{root}/flights/C", files=("ortho.tif", "coarse.gpkg"), meta=None)

        # -- 1: flight A is new: pseudolabeled, trained on, first model becomes champion
        first = retrain(root, settings, **opts)
        assert first["status"] == "retrained", first["message"]
        assert first["pseudolabeled"] == ["A"] and predictors.calls == ["A"]
        assert first["flights"]["C"]["status"] == "incomplete"
        assert first["trained_on"] == ["A"] and first["evaluation_flights"] == ["A"]
        reg = first["registry"]
        assert reg["promoted"] and reg["alias"] == "champion" and reg["champion_before"] is None
        assert client.get_model_version_by_alias(MODEL, "champion").version == reg["version"]
        work = storage.list_prefix(f"{root}/work/flights/A")
        names = {p.rsplit("/", 1)[-1] for p in work}
        assert {"segments.gpkg", "pseudolabels.gpkg", "pseudolabels.summary.json", "export.json"} <= names
        assert not [p for p in work if ".parts/" in p]  # resume parts removed once done
        (run_a,) = all_runs(client, "A")
        assert run_a.info.status == "FINISHED" and run_a.data.tags["pseudolabels_uri"].startswith(root)

        # -- 2: nothing new: up-to-date, and nothing changes
        runs_before, versions_before = len(all_runs(client)), versions(client)
        second = retrain(root, settings, **opts)
        assert second["status"] == "up-to-date" and "nothing done" in second["message"]
        assert second["training_run_id"] == first["training_run_id"]
        assert predictors.calls == ["A"]
        assert len(all_runs(client)) == runs_before and versions(client) == versions_before
        assert client.get_model_version_by_alias(MODEL, "champion").version == reg["version"]

        # -- 3: flight B arrives: only B is pseudolabeled, the model is trained on both
        upload_flight(scenes["B"], f"{root}/flights/B")
        caplog.clear()
        third = retrain(root, settings, **opts)
        assert third["status"] == "retrained", third["message"]
        assert third["pseudolabeled"] == ["B"] and predictors.calls == ["A", "B"]
        assert len(all_runs(client, "A")) == 1  # A was not processed again
        assert third["trained_on"] == ["A", "B"] and third["evaluation_flights"] == ["A", "B"]
        train_run = client.get_run(third["training_run_id"])
        assert train_run.data.tags["flight_ids"] == "A,B"
        assert train_run.data.tags["crownsam.label_source"] == "pseudo"
        assert train_run.data.tags["crownsam.retrain_complete"] == "true"
        assert train_run.data.tags[DATASET_KEY] == third["dataset_key"] != first["dataset_key"]
        merged = client.download_artifacts(third["training_run_id"], "merged_export.json", str(tmp_path))
        sources = json.loads(Path(merged).read_text())["sources"]
        assert set(sources) == {"A", "B"}
        assert all(sources[f]["splits"]["train"]["chips"] > 0 for f in ("A", "B"))  # chips from both
        assert all(sources[f]["splits"]["test"]["chips"] > 0 for f in ("A", "B"))  # evaluation set: both
        assert train_run.data.metrics["eval_segm_AP"] == pytest.approx(third["metric"])

        # the decision follows the numbers, measured on the same (new) evaluation set
        reg3 = third["registry"]
        assert third["test_set"] != first["test_set"]
        assert reg3["champion_before"] == reg["version"]
        assert f"re-evaluated champion v{reg['version']} on this test set" in caplog.text
        old_on_new_set = reg3["champion_before_metric"]
        assert isinstance(old_on_new_set, float)
        better = third["metric"] > old_on_new_set
        assert reg3["promoted"] == better
        champion = client.get_model_version_by_alias(MODEL, "champion").version
        new_version = client.get_model_version(MODEL, reg3["version"])
        assert new_version.tags["decision"] == reg3["reason"]
        assert new_version.tags["test_set"] == third["test_set"]
        if better:
            assert champion == reg3["version"] and reg3["reason"].startswith("champion")
        else:
            assert champion == reg["version"]
            assert client.get_model_version_by_alias(MODEL, "challenger").version == reg3["version"]
            assert "does not beat" in reg3["reason"]

        # -- the half-uploaded flight was never touched; once its flight.yaml lands it is new
        assert third["flights"]["C"]["status"] == "incomplete" and len(all_runs(client, "C")) == 0
        assert not storage.list_prefix(f"{root}/work/flights/C")
        upload_flight(scenes["C"], f"{root}/flights/C", files=())
        capfd.readouterr()
        args = ["flights", "scan", "--root", root, "--tracking-uri", flights_mlflow, "--experiment", EXP]
        assert cli.main(args) == 0
        table = capfd.readouterr().out.splitlines()
        status = {line.split()[0]: line.split()[1] for line in table[1:-1]}
        assert status == {"A": "processed", "B": "processed", "C": "new"}
        assert table[-1].endswith("next retraining: pseudolabel")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_flights_without_manual_crowns_are_pseudolabeled_but_not_trained_on_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No evaluation set, no model: the flight is processed once; new segments make it new again."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path / "cache"))
    scene = make_scene(tmp_path / "scene", seed=41)
    root = tmp_path / "catalog"
    upload_flight(scene, str(root / "flights" / "N1"), files=("ortho.tif", "coarse.gpkg"))
    predictors = TruthPredictors()
    predictors.add("N1", scene)
    settings = tiny_settings(registered_model_name="no-eval")
    opts = {"predictor_factory": predictors}
    first = retrain(str(root), settings, **opts)
    assert first["status"] == "no-evaluation-set" and first["pseudolabeled"] == ["N1"]
    assert "nothing to evaluate a model on" in first["message"]
    again = retrain(str(root), settings, **opts)
    assert again["status"] == "no-evaluation-set" and predictors.calls == ["N1"]
    assert scan(str(root)).action == "no-evaluation-set"
    # new coarse segments (same names, other content): the flight is new again
    coarse = root / "flights" / "N1" / "coarse.gpkg"
    gdf = gpd.read_file(coarse)
    gdf.iloc[:-1].to_file(coarse, layer="segments", driver="GPKG")
    plan = scan(str(root))
    (n1,) = plan.flights
    assert n1.status == "new" and n1.reason.startswith("inputs changed since MLflow run")
    assert plan.action == "pseudolabel"


def test_flights_whose_bands_differ_are_invalid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    scene = make_scene(tmp_path / "scene", seed=42)
    root = tmp_path / "catalog"
    upload_flight(scene, str(root / "flights" / "early"), files=("ortho.tif", "coarse.gpkg"))
    other = FlightMeta("2024-07-01", "EPSG:3067", ("red", "green", "blue", "nir", "rededge", "thermal"), "x")
    upload_flight(scene, str(root / "flights" / "late"), files=("ortho.tif", "coarse.gpkg"), meta=other)
    short = FlightMeta("2024-08-01", "EPSG:3067", ("gray", "nir"), "x")
    upload_flight(scene, str(root / "flights" / "two"), files=("ortho.tif", "coarse.gpkg"), meta=short)
    status = {s.flight_id: s for s in scan(str(root)).flights}
    assert status["early"].status == "new"
    assert status["late"].status == "invalid"
    assert "bands 3,2,1 are blue,green,red here but red,green,blue in flight early" in status["late"].reason
    assert (
        status["two"].status == "invalid"
        and "bands lists 2 names; --bands 3,2,1 needs more" in status["two"].reason
    )
