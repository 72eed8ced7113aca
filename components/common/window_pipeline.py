"""A window pipeline: keep the model busy while the host reads ahead and finishes behind it.

Every loop over windows with a model has the same three stages per item: **prepare** (read the window,
stretch it, compute its prompts), **model** (the accelerator's work, which must run in one thread, in
order, because the model holds state such as an image embedding) and **finish** (post-process the model's
output: masks to polygons, bookkeeping). :func:`run_pipeline` runs them so that they overlap:

* ``prepare`` runs in ``readers`` background threads (crownsam uses one: a raster dataset must not be
  shared between threads), at most ``batch + ahead`` items ahead of the model (raster reads and
  decompression release the GIL);
* ``model`` runs in the caller's thread on batches of up to ``batch`` prepared items, in input order;
* ``finish`` runs in ``workers`` worker processes (CPU-bound Python code holds the GIL, so threads would
  not run it in parallel; ``processes=False`` uses threads), at a lower CPU priority than the caller
  (:data:`WORKER_NICENESS`), on at most ``2 x workers`` items at a time:
  when that many are unfinished, the model waits for the oldest (back-pressure), so memory stays flat
  however many items there are;
* results come back in input order.

``workers=0`` is the sequential loop: prepare, model and finish one item after another in the caller's
thread. The pipeline computes exactly what the sequential loop computes (each stage sees the same
inputs); it only changes when things happen.

**Errors.** An exception raised by a stage is raised again in the caller's thread, unchanged (same type,
same message; from a worker process with the worker's traceback as its cause), for the first item in
input order that failed, and before any later item's result is returned, as the sequential loop would
raise it (a prepare or model error with ``batch > 1``: after the results of the batches before the
failing item's batch).
Pending work is cancelled and the pools are shut down. Exceptions from worker processes must
pickle (``crownsam.common.errors.CrownsamError`` does).

Functions given to worker processes must be picklable (module-level functions, or ``functools.partial``
of them with picklable arguments). Worker processes are started with the ``forkserver`` method: never a
``fork`` of a process that holds model threads or a CUDA context. As with any such start method, a
script that runs a pipeline must keep its work under ``if __name__ == "__main__":`` (the workers import
the main module; the ``crownsam`` command and KFP's executor do).
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from crownsam.common.params import Params, param

T = TypeVar("T")  # an item (a window of a plan)
A = TypeVar("A")  # a prepared item
B = TypeVar("B")  # the model's output for one item
R = TypeVar("R")  # a finished item

# modules that the forkserver imports once, so that each worker it forks starts ready
_PRELOAD: set[str] = set()

# Worker processes run this much nicer than the caller: when cores are short, the threads that feed the
# model (it waits for them) get one first, and the workers take the rest. Measured on 2 cores with a
# 10 ms stand-in: the model thread woke ~1 ms later per window without it.
WORKER_NICENESS = 10
# :func:`start_workers`' start tasks wait at most this long for the other workers to start
WORKER_START_TIMEOUT_S = 60.0
# in a worker process: the barrier its pool's start tasks meet at (:func:`_meet_the_other_workers`)
_START_BARRIER: Any = None


@dataclass(frozen=True)
class WindowLoopParams(Params):
    """How a step's window loop uses the host while the model works (the results never depend on it).

    ``workers``: workers that post-process and vectorise windows beside the model (processes; threads in
    tiled predict, whose masks cost more to send than to process); unset (the default): the task's CPUs
    (:func:`task_cpus`); ``0``: the plain sequential loop (read, model, post-process one window after
    another in one thread, nothing in the background); ``1``: the pipeline with one worker (windows read
    ahead in a thread, post-processed by one worker).
    ``window_batch``: windows per image-encoder call (SAM2's batch API; worth it on a GPU).
    """

    workers: int | None = param(
        None,
        "workers that post-process windows beside the model (default: the task's CPUs; 0: the plain "
        "sequential loop, nothing in the background)",
        ge=0,
        unset=-1,
        metavar="N",
    )
    window_batch: int = param(
        1, "windows per image-encoder call (SAM2's batch API; for GPUs)", ge=1, metavar="N"
    )

    def settings(self) -> PipelineSettings:
        """The :class:`PipelineSettings` these parameters stand for (``workers`` unset: :func:`task_cpus`)."""
        workers = task_cpus() if self.workers is None else self.workers
        return PipelineSettings(workers=workers, batch=self.window_batch)


@dataclass(frozen=True)
class PipelineSettings:
    """How a window loop overlaps its stages (see the module docstring)."""

    workers: int = 0  # finishing workers; 0: the sequential loop in the caller's thread
    readers: int = 1  # threads that prepare items ahead of the model
    ahead: int = 2  # prepared items waiting for the model, at most (besides one batch)
    batch: int = 1  # items per model call
    processes: bool = True  # finish in worker processes (else threads)

    def __post_init__(self) -> None:
        if self.workers < 0 or self.readers < 1 or self.ahead < 0 or self.batch < 1:
            raise ValueError(f"bad pipeline settings {self}")

    @property
    def sequential(self) -> bool:
        return self.workers == 0


def task_cpus(cgroup_root: str | Path = "/sys/fs/cgroup") -> int:
    """The CPUs this task may use: the CPUs it may run on (affinity), capped by its cgroup's CPU quota
    (a Kubernetes CPU limit; cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``,
    rounded up). At least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    root = Path(cgroup_root)
    quota: float | None = None
    try:
        parts = (root / "cpu.max").read_text().split()
        if parts and parts[0] != "max":
            quota = int(parts[0]) / int(parts[1])
    except (OSError, ValueError, IndexError):
        try:
            q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            if q > 0 and p > 0:
                quota = q / p
        except (OSError, ValueError):
            pass
    if quota is not None:
        n = min(n, max(1, -int(-quota // 1)))
    return max(1, n)


def preload(*modules: str) -> None:
    """Name modules that worker processes need (imported once by the forkserver, not by each worker)."""
    _PRELOAD.update(modules)


def forkserver_preload() -> list[str]:
    """What the forkserver imports once for all workers, so that no worker imports it again: a
    ``python -m`` main module, the main script (by :mod:`crownsam.common.forkserver_main`, which this
    tells its path), and the modules named by :func:`preload`."""
    from multiprocessing import spawn

    from crownsam.common.forkserver_main import MAIN_ENV

    main = spawn.get_preparation_data("forkserver")
    named = main.get("init_main_from_name")
    if "init_main_from_path" in main:
        os.environ[MAIN_ENV] = main["init_main_from_path"]
    else:  # not one inherited from a parent process that runs another script
        os.environ.pop(MAIN_ENV, None)
    first = [named] if named and named != "__main__" and not named.endswith(".__main__") else []
    return [*first, "crownsam.common.forkserver_main", *sorted(_PRELOAD)]


class _Starting:
    """Worker processes being started in a background thread (:func:`start_workers`)."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.pool: Executor | None = None
        self.started: list[Future] = []
        self.thread = threading.Thread(target=self._start, args=(settings,), name="start-workers")
        self.thread.daemon = True
        self.thread.start()

    def _start(self, settings: PipelineSettings) -> None:
        barrier = multiprocessing.get_context("forkserver").Barrier(settings.workers)
        pool = _new_pool(settings, barrier)
        try:
            # one task per worker; each waits for the others, so no worker takes two and the pool starts
            # a process for each (it starts one only for a task that finds no idle worker)
            self.started = [pool.submit(_meet_the_other_workers) for _ in range(settings.workers)]
        except (OSError, RuntimeError, BrokenProcessPool):  # the run starts its own pool (and reports)
            pool.shutdown(wait=False, cancel_futures=True)
            return
        self.pool = pool

    def result(self) -> Executor | None:
        self.thread.join()
        return self.pool

    def wait(self) -> None:
        """Until every worker process runs, its initializer done (or the start failed)."""
        if self.result() is not None:
            wait_for(self.started)


# worker pools being started ahead of their run, by (workers, processes): all a pool depends on
_STARTED: dict[tuple[int, bool], _Starting] = {}


@atexit.register
def _stop_started() -> None:
    for starting in _STARTED.values():
        pool = starting.result()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    _STARTED.clear()


def _new_pool(settings: PipelineSettings, barrier: Any = None) -> Executor:
    """Thread workers, or worker processes (that keep ``barrier``, a ``multiprocessing.Barrier`` or None,
    for :func:`start_workers`' start tasks)."""
    if not settings.processes:
        return ThreadPoolExecutor(settings.workers, thread_name_prefix="finish")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(forkserver_preload())
    return ProcessPoolExecutor(
        settings.workers, mp_context=ctx, initializer=_worker_start, initargs=(WORKER_NICENESS, barrier)
    )


def _worker_start(niceness: int, barrier: Any = None) -> None:
    """A worker process's initializer: run nicer (:data:`WORKER_NICENESS`), keep the start barrier."""
    global _START_BARRIER
    os.nice(niceness)
    _START_BARRIER = barrier


def _meet_the_other_workers() -> int:
    """A start task (:func:`start_workers`): wait until every worker process of the pool runs one (at most
    :data:`WORKER_START_TIMEOUT_S`), then return this process's ID."""
    if _START_BARRIER is not None:
        _START_BARRIER.wait(WORKER_START_TIMEOUT_S)
    return os.getpid()


def _finish_pool(settings: PipelineSettings) -> Executor:
    """The workers :func:`start_workers` started for these settings, else new ones."""
    starting = _STARTED.pop((settings.workers, settings.processes), None)
    pool = starting.result() if starting is not None else None
    return pool if pool is not None else _new_pool(settings)


def start_workers(settings: PipelineSettings, *, wait: bool = False) -> None:
    """Start the worker processes of the next :func:`run_pipeline` with these settings now, in a
    background thread: call it before loading the model, so that the workers' start (~1 s: the
    forkserver imports :func:`forkserver_preload`) overlaps with it. ``wait``: return once they run.
    Nothing for the sequential loop or thread workers."""
    if settings.sequential or not settings.processes:
        return
    key = (settings.workers, settings.processes)
    starting = _STARTED.get(key)
    if starting is None:
        starting = _STARTED[key] = _Starting(settings)
    if wait:
        starting.wait()


def run_pipeline(
    items: Iterable[T],
    prepare: Callable[[T], A],
    model: Callable[[Sequence[A]], Sequence[B]],
    finish: Callable[[A, B], R],
    settings: PipelineSettings,
    *,
    strip: Callable[[A], A] | None = None,
) -> Generator[R, None, None]:
    """Results of ``finish(prepare(item), output)`` for each item, in input order, where ``output`` is the
    item's share of ``model([prepared items of its batch])`` (see the module docstring).

    ``strip`` (optional) drops what ``finish`` does not need from a prepared item (an image) before it is
    sent to a finishing worker.
    """
    if settings.sequential:
        yield from _sequential(items, prepare, model, finish, settings.batch)
        return
    yield from _Run(items, prepare, model, finish, settings, strip).results()


def _sequential(
    items: Iterable[T],
    prepare: Callable[[T], A],
    model: Callable[[Sequence[A]], Sequence[B]],
    finish: Callable[[A, B], R],
    batch: int,
) -> Iterator[R]:
    """The sequential loop: each batch prepared, run through the model and finished in turn."""
    it = iter(items)
    while True:
        prepared = [prepare(item) for item in itertools.islice(it, batch)]
        if not prepared:
            return
        outputs = _call(model, prepared)
        for a, b in zip(prepared, outputs, strict=True):
            yield finish(a, b)


def _call(model: Callable[[Sequence[A]], Sequence[B]], batch: list[A]) -> Sequence[B]:
    outputs = model(batch)
    if len(outputs) != len(batch):
        raise ValueError(f"the model returned {len(outputs)} outputs for {len(batch)} items")
    return outputs


class _Run(Generic[T, A, B, R]):
    """One pipelined run (state of :func:`run_pipeline`)."""

    def __init__(
        self,
        items: Iterable[T],
        prepare: Callable[[T], A],
        model: Callable[[Sequence[A]], Sequence[B]],
        finish: Callable[[A, B], R],
        settings: PipelineSettings,
        strip: Callable[[A], A] | None,
    ) -> None:
        self.items = iter(items)
        self.prepare, self.model, self.finish, self.strip = prepare, model, finish, strip
        self.s = settings
        self.reading: deque[Future] = deque()  # prepare futures, input order
        self.finishing: deque[Future] = deque()  # finish futures, input order
        self.exhausted = False

    def _fill(self, readers: Executor) -> None:
        """Keep ``batch + ahead`` items being prepared or prepared."""
        while not self.exhausted and len(self.reading) < self.s.batch + self.s.ahead:
            try:
                item = next(self.items)
            except StopIteration:
                self.exhausted = True
                return
            self.reading.append(readers.submit(self.prepare, item))

    def _finished(self) -> Iterator[R]:
        """Every pending finished item, in order (raising the first error)."""
        while self.finishing:
            yield self.finishing.popleft().result()

    def results(self) -> Iterator[R]:
        readers = ThreadPoolExecutor(self.s.readers, thread_name_prefix="prepare")
        finishers = _finish_pool(self.s)
        try:
            while True:
                self._fill(readers)
                if not self.reading:
                    break
                batch: list[A] = []
                while self.reading and len(batch) < self.s.batch:
                    future = self.reading.popleft()
                    if future.exception() is not None:  # earlier items' results (or errors) come first
                        yield from self._finished()
                    batch.append(future.result())
                    self._fill(readers)
                try:
                    outputs = _call(self.model, batch)
                except BaseException:
                    yield from self._finished()
                    raise
                for a, b in zip(batch, outputs, strict=True):
                    while len(self.finishing) >= 2 * self.s.workers:  # back-pressure
                        yield self.finishing.popleft().result()
                    sent = self.strip(a) if self.strip is not None else a
                    self.finishing.append(finishers.submit(self.finish, sent, b))
                while self.finishing and self.finishing[0].done():
                    yield self.finishing.popleft().result()
            yield from self._finished()
        finally:
            for f in (*self.reading, *self.finishing):
                f.cancel()
            readers.shutdown(wait=True, cancel_futures=True)  # prepare may use a dataset the caller closes
            # every result is in (or the run failed): the workers exit in the background (for worker
            # processes, ~20 ms that the caller need not wait for)
            finishers.shutdown(wait=False, cancel_futures=True)
