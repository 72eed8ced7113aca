"""One real ``mlflow server`` for the flight tests (each test uses its own experiment and model name)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def flights_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("flights-mlflow")) as uri:
        yield uri
