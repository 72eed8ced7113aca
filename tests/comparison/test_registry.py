"""Champion/challenger promotion: the pure rule, and its application on a real MLflow server."""

from __future__ import annotations

import mlflow
import pytest
import torch
from mlflow_server import mlflow_server

from crownsam.common.tracking import using_tracking_uri as tracking_uri
from crownsam.comparison.registry import (
    CHALLENGER,
    CHAMPION,
    Candidate,
    current_champion,
    decide,
    register_and_promote,
)

C = [Candidate("coarse", "r1", 0.30), Candidate("pseudo", "r2", 0.42)]


def test_first_models_best_becomes_champion_other_challenger() -> None:
    d = decide(C, None, None)
    assert d.promoted and d.best == "pseudo"
    assert d.aliases == {CHAMPION: "pseudo", CHALLENGER: "coarse"}
    assert "champion" in d.reasons["pseudo"] and "below pseudo" in d.reasons["coarse"]


def test_best_must_beat_the_current_champion_strictly() -> None:
    d = decide(C, "7", 0.42)
    assert not d.promoted and d.aliases == {CHALLENGER: "pseudo"}
    assert "does not beat champion v7" in d.reasons["pseudo"]
    assert d.reasons["coarse"].startswith("no alias")
    d = decide(C, "7", 0.41)
    assert d.promoted and d.aliases[CHAMPION] == "pseudo" and "> previous champion v7" in d.reasons["pseudo"]


def test_champion_without_a_comparable_metric_is_kept() -> None:
    d = decide(C, "3", None)
    assert not d.promoted and d.aliases == {CHALLENGER: "pseudo"}
    assert "no segm_AP on this test set" in d.reasons["pseudo"]


def test_nan_metric_ranks_last() -> None:
    d = decide([Candidate("a", "r1", float("nan")), Candidate("b", "r2", 0.1)], None, None)
    assert d.best == "b"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(autouse=True)
def no_global_tracking(monkeypatch, tmp_path):
    """The registry must use the client it is given, not MLflow's global/env tracking URI."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}"):  # restores the process state after
        yield


def logged_run(uri: str, source: str) -> str:
    """A real run with a real (tiny) PyTorch model logged as ``model``: registry mechanics do not depend
    on the model's architecture."""
    with tracking_uri(uri):
        mlflow.set_experiment("registry-test")
        with mlflow.start_run(run_name=source) as run:
            mlflow.pytorch.log_model(torch.nn.Linear(2, 1), name="model", serialization_format="pickle")
    return run.info.run_id


def test_registry_round_trips(server) -> None:
    client = mlflow.MlflowClient(server)
    name = "crowns-test"
    first = [
        Candidate("coarse", logged_run(server, "coarse"), 0.30),
        Candidate("pseudo", logged_run(server, "p"), 0.42),
    ]
    d, versions = register_and_promote(client, name, first, test_set="T1", tags={"flight_id": "f1"})
    assert d.promoted
    assert current_champion(client, name)[0] == versions["pseudo"]
    mv = client.get_model_version(name, versions["coarse"])
    assert (
        mv.tags["flight_id"] == "f1" and mv.tags["label_source"] == "coarse" and mv.tags["test_set"] == "T1"
    )
    assert client.get_registered_model(name).aliases == {
        CHAMPION: versions["pseudo"],
        CHALLENGER: versions["coarse"],
    }
    with_uri = mlflow.MlflowClient(server)
    assert with_uri.get_model_version_by_alias(name, CHAMPION).run_id == first[1].run_id

    # a worse pair on the same test set: champion stays, the new best is challenger
    worse = [
        Candidate("coarse", logged_run(server, "c2"), 0.20),
        Candidate("pseudo", logged_run(server, "p2"), 0.35),
    ]
    d2, v2 = register_and_promote(client, name, worse, test_set="T1", tags={})
    assert not d2.promoted
    aliases = client.get_registered_model(name).aliases
    assert aliases[CHAMPION] == versions["pseudo"] and aliases[CHALLENGER] == v2["pseudo"]
    assert "does not beat" in client.get_model_version(name, v2["pseudo"]).tags["decision"]

    # another test set: the champion is re-measured on it before deciding
    calls: list[str] = []

    def reevaluate(version: str) -> float:
        calls.append(version)
        return 0.10

    better = [Candidate("pseudo", logged_run(server, "p3"), 0.25)]
    d3, v3 = register_and_promote(client, name, better, test_set="T2", tags={}, reevaluate=reevaluate)
    assert calls == [versions["pseudo"]] and d3.promoted
    assert client.get_registered_model(name).aliases[CHAMPION] == v3["pseudo"]

    # another test set and no way to re-measure: never replace the champion silently
    d4, v4 = register_and_promote(
        client, name, [Candidate("pseudo", logged_run(server, "p4"), 0.99)], test_set="T3", tags={}
    )
    assert not d4.promoted and client.get_registered_model(name).aliases[CHAMPION] == v3["pseudo"]
    assert client.get_registered_model(name).aliases[CHALLENGER] == v4["pseudo"]


def test_unregistrable_run_is_a_clear_error(server) -> None:
    from crownsam.common.errors import CrownsamError

    client = mlflow.MlflowClient(server)
    with pytest.raises(CrownsamError, match="cannot register run"):
        register_and_promote(client, "x", [Candidate("a", "no-such-run", 0.1)], test_set="T", tags={})
