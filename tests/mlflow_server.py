"""A real ``mlflow server`` process on loopback for tests (sqlite backend, local proxied artifacts)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from common.gcs_emulator import free_port


@contextlib.contextmanager
def mlflow_server(root: Path, timeout_s: float = 90.0) -> Iterator[str]:
    """Start ``mlflow server`` with its store under ``root``; yield its tracking URI; stop it after.

    Sets and restores ``MLFLOW_TRACKING_URI`` so code that reads the environment uses this server.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [
        mlflow_bin, "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    log = open(root / "server.log", "w")  # noqa: SIM115  (closed below)
    # MLflow 3.17 starts job-runner (huey) processes for GenAI features we do not use: keep tests light.
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.3)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield uri
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()
