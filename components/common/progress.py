"""Progress of long loops (windows, training steps, chips), for whoever watches.

* A person at a terminal (``enabled``): a tqdm bar on stderr.
* A supervising process (``crownsam run`` runs each step as a subprocess and reads its output): with
  ``CROWNSAM_PROGRESS=lines`` in the environment, one line ``crownsam-progress: <desc> <n>/<total>`` on
  stdout per update, at most every :data:`LINE_INTERVAL_S` seconds, and always the last one. The
  supervisor draws its own bar from them (:func:`parse_line`).
* Otherwise nothing.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

ENV = "CROWNSAM_PROGRESS"
PREFIX = "crownsam-progress:"
LINE_INTERVAL_S = 1.0
_LINE = re.compile(rf"^\s*{re.escape(PREFIX)} (?P<desc>.+?) (?P<n>\d+)/(?P<total>\d+)\s*$")

T = TypeVar("T")


def lines_wanted() -> bool:
    """Whether a supervising process asked for progress lines (``CROWNSAM_PROGRESS=lines``)."""
    return os.environ.get(ENV, "") == "lines"


def parse_line(line: str) -> tuple[str, int, int] | None:
    """``(desc, n, total)`` of a progress line, or None for any other line."""
    m = _LINE.match(line)
    return (m["desc"], int(m["n"]), int(m["total"])) if m else None


class LineProgress(Generic[T]):
    """The tqdm subset our loops use (``update``, ``set_postfix``, ``close``, iteration, ``with``),
    printing progress lines for a supervisor instead of a bar."""

    def __init__(
        self, iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, initial: int = 0
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = int(total or 0)
        self.desc = desc
        self.n = initial
        self._last = -1.0
        self._shown = -1
        self._emit(force=True)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        due = force or now - self._last >= LINE_INTERVAL_S or self.n >= self.total
        if due and self.n != self._shown:
            print(f"{PREFIX} {self.desc} {self.n}/{self.total}", file=sys.stdout, flush=True)
            self._shown, self._last = self.n, now

    def update(self, n: int = 1) -> None:
        self.n += n
        self._emit()

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Accepted for tqdm compatibility; the supervisor shows counts only."""

    def close(self) -> None:
        self._emit(force=True)

    def __iter__(self) -> Iterator[T]:
        assert self.iterable is not None, "LineProgress over no iterable"
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool,
    initial: int = 0,
    leave: bool = True,
    report: bool = True,
) -> Any:
    """A tqdm bar when ``enabled``, else progress lines when a supervisor asked for them
    (:func:`lines_wanted`), else a disabled tqdm (no output). ``report=False`` (e.g. a worker process
    that is not rank 0) shows nothing either way."""
    enabled = enabled and report
    if not enabled and report and lines_wanted():
        return LineProgress(iterable, total=total, desc=desc, initial=initial)
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        initial=initial,
        leave=leave,
        dynamic_ncols=True,
    )
