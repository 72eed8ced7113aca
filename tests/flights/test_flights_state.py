"""Processed and trained, as MLflow says: runs on a real ``mlflow server``, queried with search_runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from crownsam.common.errors import CrownsamError
from crownsam.flights import state as S
from crownsam.flights.state import FlightInputs, FlightState, dataset_key, resolve_tracking_uri

A = FlightInputs("A", "sha256:aaaa", "coarse", "sha256:cccc")


@pytest.fixture
def state(flights_mlflow: str, request: pytest.FixtureRequest) -> FlightState:
    return FlightState(flights_mlflow, f"state-{request.node.name}")


def test_a_finished_run_with_the_same_fingerprints_is_processed(state: FlightState) -> None:
    assert state.experiment_id() is None and state.processed(A) is None  # nothing yet, nothing created
    run_id = state.start_flight(A, {"flight_date": "2024-06-01"})
    assert state.processed(A) is None  # RUNNING does not count
    state.finish(
        run_id, {"output_uri": "gs://b/work/flights/A/k", "pseudolabels_uri": "gs://b/p.gpkg"}, {"n": 3}
    )
    rec = state.processed(A)
    assert rec is not None and rec.run_id == run_id and rec.pseudolabels_uri == "gs://b/p.gpkg"
    run = state.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["n"] == 3
    tags = run.data.tags
    assert tags[S.KIND] == S.FLIGHT_KIND and tags["flight_id"] == "A" and tags["inputs_key"] == A.key
    assert tags["ortho_fingerprint"] == "sha256:aaaa" and tags["segments_fingerprint"] == "sha256:cccc"
    # new inputs (a re-uploaded orthophoto, other segments) are not processed
    assert state.processed(FlightInputs("A", "sha256:zzzz", "coarse", "sha256:cccc")) is None
    assert state.processed(FlightInputs("A", "sha256:aaaa", "chm", "sha256:cccc")) is None
    assert state.processed(FlightInputs("B", "sha256:aaaa", "coarse", "sha256:cccc")) is None


def test_failed_and_crashed_runs_do_not_count(state: FlightState) -> None:
    failed = state.start_flight(A, {})
    state.fail(failed, "bad data")
    state.start_flight(A, {})  # left RUNNING, like a killed pod
    assert state.processed(A) is None and state.flight_records() == []
    assert state.client.get_run(failed).data.tags["crownsam.failure"] == "bad data"
    done = state.start_flight(A, {})
    state.finish(done, {})
    assert [r.run_id for r in state.flight_records()] == [done]


def test_newest_finished_run_wins_and_records_are_paged(state: FlightState) -> None:
    ids = []
    for _ in range(3):
        ids.append(state.start_flight(A, {}))
        state.finish(ids[-1], {"output_uri": f"u{len(ids)}"})
    records = state.flight_records("A")
    assert [r.run_id for r in records] == ids[::-1]
    assert state.processed(A).run_id == ids[-1]


def test_a_dataset_is_trained_only_when_the_retraining_completed(state: FlightState) -> None:
    key = dataset_key([("B", "r2", "", ""), ("A", "r1", "m", "t")])
    assert key == dataset_key([("A", "r1", "m", "t"), ("B", "r2", "", "")])  # order does not matter
    assert key != dataset_key([("A", "r1", "m2", "t"), ("B", "r2", "", "")])  # new manual crowns do
    client = MlflowClient(state.tracking_uri)
    exp = state.experiment_id(create=True)
    run = client.create_run(exp, tags={S.KIND: S.TRAINING_KIND, S.DATASET_KEY: key})
    client.set_terminated(run.info.run_id, "FINISHED")
    assert state.trained(key) is None  # trained but not evaluated and registered
    state.complete_training(run.info.run_id, {"registered_version": "3"})
    assert state.trained(key) == run.info.run_id
    assert state.trained("0" * 16) is None
    assert state.last_training().info.run_id == run.info.run_id


def test_tracking_uri_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("http://mlflow:5000", "gs://b/work") == "http://mlflow:5000"
    assert resolve_tracking_uri(None, str(tmp_path / "w")) == f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}"
    with pytest.raises(CrownsamError, match="tracking URI is needed"):
        resolve_tracking_uri(None, "gs://b/work")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, "gs://b/work") == "http://env:5000"


def test_an_unreachable_server_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from common.gcs_emulator import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(CrownsamError, match="cannot reach MLflow") as err:
        FlightState(f"http://127.0.0.1:{free_port()}", "x").flight_records()
    assert "\n" not in str(err.value)
