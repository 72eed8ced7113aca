"""`crownsam submit`: arguments are checked before anything is sent; the request is what KFP expects.

No Kubeflow Pipelines API server can run here, so the client is the one stand-in in this suite: a
recorder with kfp.Client's method signature. Everything up to the HTTP call (compile, checks) is real.
"""

from __future__ import annotations

import inspect

import kfp
import pytest
import yaml

from crownsam import cli
from crownsam.common.errors import InputError
from crownsam.pipelines.submit import check_arguments, submit

REQUIRED = {"flight_id": "f1", "ortho_uri": "gs://b/f1/ortho.tif", "manual_uri": "gs://b/f1/m.gpkg",
            "test_area_uri": "gs://b/f1/t.gpkg"}  # fmt: skip


class RecordingClient:
    """Stands in for kfp.Client (no cluster here); keeps the request it would send."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        inspect.signature(kfp.Client.create_run_from_pipeline_package).bind(self, pipeline_file, **kwargs)
        with open(pipeline_file) as f:
            kwargs["package"] = yaml.safe_load(f)
        self.calls.append(kwargs)
        return type("Result", (), {"run_id": "run-123"})()


def test_request_carries_package_and_arguments() -> None:
    client = RecordingClient()
    result = submit(
        "https://kfp.example", REQUIRED | {"shards": 8}, pipeline_root="gs://b/root", client=client
    )
    assert result.run_id == "run-123"
    (call,) = client.calls
    assert call["arguments"]["shards"] == 8 and call["pipeline_root"] == "gs://b/root"
    assert call["experiment_name"] == "crownsam"
    assert call["package"]["pipelineInfo"]["name"] == "crownsam"


def test_unknown_and_missing_parameters_are_refused() -> None:
    with pytest.raises(InputError, match="unknown pipeline parameter"):
        check_arguments(REQUIRED | {"shard": 3})
    with pytest.raises(InputError, match=r"missing pipeline parameter.*ortho_uri"):
        check_arguments({k: v for k, v in REQUIRED.items() if k != "ortho_uri"})


def test_cli_refuses_bad_parameters_in_one_line(capfd) -> None:
    assert cli.main(["submit", "--host", "http://127.0.0.1:9", "--param", "nope=1"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown pipeline parameter(s) nope" in err[0]


def test_arguments_take_the_declared_types() -> None:
    args = check_arguments(
        REQUIRED | {"holdout_buffer_m": 2, "shards": 3.0, "untrained": "true", "epochs": "5"}
    )
    assert args["holdout_buffer_m"] == 2.0 and isinstance(args["holdout_buffer_m"], float)
    assert args["shards"] == 3 and isinstance(args["shards"], int)
    assert args["untrained"] is True and args["epochs"] == 5
    for bad in ({"shards": 2.5}, {"untrained": "maybe"}, {"epochs": "many"}):
        with pytest.raises(InputError, match="pipeline parameter"):
            check_arguments(REQUIRED | bad)
