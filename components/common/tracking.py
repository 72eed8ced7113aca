"""MLflow's process-wide tracking URI, switched for a block and restored exactly."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block, then restore exactly what was there before:
    the process-wide URI (possibly unset) and ``MLFLOW_TRACKING_URI``, which ``set_tracking_uri`` also
    writes. (MLflow's own ``_use_tracking_uri`` unsets that variable when no URI had been set.)"""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    raw, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(raw)  # type: ignore[arg-type]  # None unsets the URI and the variable ...
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env  # ... so put back the caller's own
