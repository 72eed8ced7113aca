"""Shared fixtures: one tiny export, and one 2-step training run logged to a real ``mlflow server``.

Mask R-CNN R50-FPN from scratch costs seconds per step on CPU even on 128-px chips, so the default suite
trains once (session scope) and the tests read that run; the resume test adds two more steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from crownsam.training.train import train

try:
    from .synth import REGISTERED, Synth, make_export, small_config
except ImportError:  # collected without package __init__ files
    from synth import REGISTERED, Synth, make_export, small_config


@dataclass
class TrainedRun:
    synth: Synth
    out: Path
    metrics: dict[str, Any]
    tracking_uri: str
    run_id: str


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return make_export(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(scope="session")
def trained(synth: Synth, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("run") / "run"
    metrics = train(small_config(synth, out, tracking_uri=mlflow_uri, register_name=REGISTERED))
    run = json.loads((out / "run.json").read_text())
    return TrainedRun(synth, out, metrics, mlflow_uri, run["run_id"])
