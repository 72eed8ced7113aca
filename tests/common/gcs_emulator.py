"""A real ``gcp-storage-emulator`` process on loopback, for tests that read and write ``gs://`` URIs."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

ENV = "STORAGE_EMULATOR_HOST"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Poll the bucket-list endpoint until it answers; fail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b?project=test", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gcp-storage-emulator silent at {url} after {timeout_s} s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def gcs_emulator(timeout_s: float = 30.0) -> Iterator[str]:
    """Run an in-memory emulator on a free loopback port; yield its URL with ``STORAGE_EMULATOR_HOST`` set.

    The variable is restored and the process stopped on exit. Buckets must be created by the caller.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        old = os.environ.get(ENV)
        try:
            try:
                _wait_until_up(url, proc, timeout_s)
            except RuntimeError as exc:
                log.seek(0)
                raise RuntimeError(f"{exc}\n{log.read().decode(errors='replace')[-2000:]}") from None
            os.environ[ENV] = url
            yield url
        finally:
            if old is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = old
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
