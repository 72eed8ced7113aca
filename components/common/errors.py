"""Errors that reach the user as one actionable line."""

from __future__ import annotations

from pathlib import Path


class CrownsamError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""

    def __init__(self, source: str | Path | None, problem: str) -> None:
        self.source = str(source) if source is not None else None
        self.problem = " ".join(problem.split())  # always one line
        super().__init__(f"{self.source}: {self.problem}" if self.source else self.problem)


class InputError(CrownsamError):
    """A bad input file: missing, unreadable, or with content we cannot use."""
