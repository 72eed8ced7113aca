"""Environment variables set for a block of code."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """For the block: ``name`` is ``value`` in this process's environment (and so in subprocesses it
    starts); afterwards it is what it was before, unset if it was unset."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
