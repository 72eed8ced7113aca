"""Errors that reach the user as one actionable line."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path


class CrownsamError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = str(source) if source is not None else None
        self.problem = " ".join(problem.split())  # always one line
        super().__init__(f"{self.source}: {self.problem}" if self.source else self.problem)

    def __reduce__(self) -> tuple:
        """Pickle by (source, problem), so that the error crosses a process boundary unchanged (worker
        processes of :mod:`crownsam.common.window_pipeline`)."""
        return (type(self), (self.source, self.problem))


class InputError(CrownsamError):
    """A bad input file: missing, unreadable, or with content we cannot use."""


# Library errors that mean "this input is bad or unreachable", by family. Each ``except`` that turns one into
# a one-line InputError names its family, so that a programming error (ImportError, TypeError,
# AttributeError, NameError, ...) is never reported as bad input.

# A file that is not what it claims to be: torch.load raises UnpicklingError, EOFError, zipfile's
# BadZipFile or RuntimeError ("PytorchStreamReader failed ..."); PIL raises OSError
# (UnidentifiedImageError) and ValueError; plain I/O raises OSError.
FILE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    RuntimeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


def mlflow_errors() -> tuple[type[BaseException], ...]:
    """What an MLflow client raises for a store it cannot reach or a request it refuses."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException, OSError)


def vector_errors() -> tuple[type[BaseException], ...]:
    """What pyogrio raises for a file it cannot read as vector data (all RuntimeError subclasses)."""
    from pyogrio.errors import DataLayerError, DataSourceError

    return (DataSourceError, DataLayerError, OSError, ValueError)
