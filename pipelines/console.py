"""What a person sees of ``crownsam run``.

KFP's local runner runs each task as a subprocess and prints everything: its own log lines, warnings,
the executor's JSON documents and every line the task prints. :class:`RunConsole` takes this process's
``sys.stdout`` and ``sys.stderr`` for the duration of a run and sorts it:

* **run.log** (in the run folder) gets every line, without colour codes; **logs/<task>.log** gets the
  lines of one task (the runner runs a task in one thread, so lines are told apart by thread).
* **The person** gets one line per pipeline step as it starts and as it ends (its display name, its
  status, its seconds), and on a terminal one live line with the running steps, their elapsed time and
  progress (``crownsam-progress:`` lines of :mod:`crownsam.common.progress`) that is redrawn in place.
  With ``verbose`` every line is shown as well, live.
* A failed step keeps its last exception line, so the run can end with that step's own error.

Steps start and end where the runner hands a task to its task handler (:func:`following`): the
runner's own "finished with status" log lines are not reliable with parallel tasks (each task swaps the
root logger's handlers, and a task that ends first takes them away from one still running).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from crownsam.common.progress import parse_line

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The last line of a Python traceback: ``package.module.SomeError: message``.
EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (?P<message>.+)$")
BAD_INPUT_TYPES = ("crownsam.common.errors.CrownsamError", "crownsam.common.errors.InputError")
TICK_S = 1.0


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for elapsed time."""
    s = round(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``4 min 36 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


def bar(n: int, total: int, width: int = 20) -> str:
    """A text progress bar ``[#####-----]``."""
    filled = round(width * min(n, total) / total) if total > 0 else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


@dataclass
class Step:
    """One task of the run as the console follows it."""

    task: str  # the runner's task name (``train-op-2``)
    label: str  # the pipeline's display name (``train Mask R-CNN (pseudo)``)
    log: Path
    started: float
    ended: float | None = None
    status: str = "RUNNING"
    progress: tuple[str, int, int] | None = None
    error: str | None = None  # the last exception line it printed
    error_type: str | None = None
    lines: int = 0
    file: TextIO | None = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def message(self) -> str | None:
        """Its error for a person: a crownsam error's own text, else ``Type: text``."""
        if self.error is None or self.error_type is None:
            return self.error
        short = self.error_type.rsplit(".", 1)[-1]
        text = self.error.removeprefix(self.error_type + ": ")
        return text if self.bad_input else f"{short}: {text}"

    @property
    def bad_input(self) -> bool:
        """Whether the step stopped on a user's mistake (a crownsam error) rather than a fault."""
        return self.error_type in BAD_INPUT_TYPES


@dataclass
class _ThreadState:
    buffer: str = ""
    step: Step | None = None


class _Tap(io.TextIOBase):
    """A text stream that hands what is written to the console (``sys.stdout``/``sys.stderr`` stand-in)."""

    def __init__(self, console: RunConsole) -> None:
        self._console = console

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._console.feed(s)
        return len(s)

    def isatty(self) -> bool:
        return False


@dataclass
class RunConsole:
    """See the module docstring. Use as a context manager around the runner's call."""

    out: Path
    labels: Mapping[str, str] = field(default_factory=dict)  # runner task name -> display name
    loops: frozenset[str] = frozenset()  # task names that run once per loop item (numbered)
    verbose: bool = False
    stream: TextIO | None = None  # where the person looks (default: sys.stdout at __enter__)
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_path = self.out / "run.log"
        self.logs_dir = self.out / "logs"
        self._lock = threading.RLock()
        self._threads: dict[int, _ThreadState] = {}
        self._counts: dict[str, int] = {}
        self._status_shown = False
        self._t0 = time.monotonic()
        self._stop = threading.Event()

    # -- context ------------------------------------------------------------------------------------

    def __enter__(self) -> RunConsole:
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        for old in self.logs_dir.glob("*.log"):
            old.unlink()
        self._log = open(self.log_path, "w", encoding="utf-8", buffering=1)  # closed in __exit__
        self.stream = self.stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = _Tap(self)
        self._t0 = time.monotonic()
        if self.tty and not self.verbose:
            threading.Thread(target=self._tick, name="crownsam-console", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            for state in self._threads.values():
                if state.buffer:
                    self._line(state, state.buffer)
                    state.buffer = ""
            self._clear_status()
            sys.stdout, sys.stderr = self._saved
            for step in self.steps:
                if step.file is not None:
                    step.file.close()
            self._log.close()

    # -- what the person sees -----------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A line for the person (the live status line, if any, is redrawn below it)."""
        with self._lock:
            self._clear_status()
            assert self.stream is not None
            self.stream.write(text + "\n")
            self.stream.flush()
            self._draw_status()

    def _elapsed(self) -> str:
        return clock(time.monotonic() - self._t0).rjust(7)

    def _status_text(self) -> str:
        parts = []
        for s in self.steps:
            if s.status != "RUNNING":
                continue
            text = f"{s.label} {clock(s.seconds)}"
            if s.progress:
                desc, n, total = s.progress
                text += f" {bar(n, total, 12)} {n}/{total} {desc}"
            parts.append(text)
        return " | ".join(parts)

    def _clear_status(self) -> None:
        if self._status_shown and self.stream is not None:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._status_shown = False

    def _draw_status(self) -> None:
        if not self.tty or self.verbose or self.stream is None:
            return
        text = self._status_text()
        if not text:
            return
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns - 1
        if len(text) > width:
            text = text[: max(0, width - 3)] + "..."
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self._status_shown = True

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                if not self._stop.is_set():
                    self._clear_status()
                    self._draw_status()

    # -- what the runner and the tasks write --------------------------------------------------------

    def feed(self, text: str) -> None:
        """Take text written by any thread; complete lines are sorted (see the module docstring)."""
        with self._lock:
            state = self._threads.setdefault(threading.get_ident(), _ThreadState())
            state.buffer += text
            *lines, state.buffer = state.buffer.split("\n")
            for line in lines:
                self._line(state, line)

    def _line(self, state: _ThreadState, raw: str) -> None:
        line = ANSI.sub("", raw).rstrip("\r")
        body = line.strip()
        progress = parse_line(body)
        if progress and state.step is not None:
            state.step.progress = progress
            self._clear_status()
            self._draw_status()
            return
        self._log.write(line + "\n")
        if self.verbose:
            assert self.stream is not None
            self._clear_status()
            self.stream.write(line + "\n")
        step = state.step
        if step is not None and step.file is not None:
            step.file.write(line + "\n")
            step.lines += 1
            if m := EXCEPTION.match(body):
                step.error, step.error_type = body, m["type"]
            elif body.startswith("crownsam: error: "):
                step.error, step.error_type = body.removeprefix("crownsam: error: "), BAD_INPUT_TYPES[0]

    def log(self, text: str) -> None:
        """A line for run.log only."""
        with self._lock:
            self._log.write(text + "\n")

    def begin(self, task: str) -> Step:
        """Task ``task`` starts in this thread: what this thread writes from now on is its output."""
        with self._lock:
            step = self._start(task)
            self._threads.setdefault(threading.get_ident(), _ThreadState()).step = step
            return step

    def finish(self, step: Step, status: str) -> None:
        """``step`` ended (``SUCCESS`` or ``FAILURE``) in this thread."""
        with self._lock:
            state = self._threads.setdefault(threading.get_ident(), _ThreadState())
            if state.buffer:
                self._line(state, state.buffer)
                state.buffer = ""
            state.step = None
            self._end(step, status)

    def _start(self, task: str) -> Step:
        label = self.labels.get(task, task)
        self._counts[task] = self._counts.get(task, 0) + 1
        name = task
        if task in self.loops:
            label = f"{label} {self._counts[task]}"
            name = f"{task}-{self._counts[task]}"
        step = Step(task=task, label=label, log=self.logs_dir / f"{name}.log", started=time.monotonic())
        step.file = open(step.log, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 (closed in __exit__)
        self.steps.append(step)
        self.say(f"{self._elapsed()}  start   {label}")
        return step

    def _end(self, step: Step, status: str) -> None:
        step.ended, step.status = time.monotonic(), status
        if step.file is not None:
            step.file.close()
            step.file = None
        word = "done" if status == "SUCCESS" else "FAILED"
        self.say(f"{self._elapsed()}  {word:<7} {step.label:<40} {duration(step.seconds):>12}")

    # -- after the run ------------------------------------------------------------------------------

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if s.status not in ("SUCCESS", "RUNNING")]

    def elapsed(self) -> float:
        return time.monotonic() - self._t0


@contextlib.contextmanager
def following(console: RunConsole, fail_fast: bool = True) -> Iterator[None]:
    """For the block, tell ``console`` when KFP's local runner starts and ends each task: its task
    dispatcher's ``run_single_task_implementation`` (kfp 2.17; called by keyword from the orchestrator
    in the task's thread) is wrapped, and restored afterwards.

    ``fail_fast``: once a step has failed, the tasks the runner would still start (it goes on with every
    task that does not depend on the failed one) are not run but reported failed at once, so the run
    ends with the first failure instead of minutes later."""
    from kfp.local import executor_input_utils, status, task_dispatcher

    real = task_dispatcher.run_single_task_implementation

    def followed(*args: Any, **kwargs: Any) -> Any:
        component = kwargs["component_name"] if "component_name" in kwargs else args[1]
        task = executor_input_utils.get_local_task_resource_name(component)
        if fail_fast and console.failed:
            console.log(f"crownsam: task {task!r} not run: an earlier step failed")
            return {}, status.Status.FAILURE
        step = console.begin(task)
        outcome = "FAILURE"
        try:
            result = real(*args, **kwargs)
            outcome = "SUCCESS" if result[1] == status.Status.SUCCESS else "FAILURE"
            return result
        finally:
            console.finish(step, outcome)

    task_dispatcher.run_single_task_implementation = followed
    try:
        yield
    finally:
        task_dispatcher.run_single_task_implementation = real
