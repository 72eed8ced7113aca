"""The window pipeline (``crownsam.common.window_pipeline``): same results in the same order as the
sequential loop, errors as the sequential loop raises them, bounded read-ahead, and its parameters."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from crownsam.common.errors import CrownsamError, InputError
from crownsam.common.window_pipeline import (
    PipelineSettings,
    WindowLoopParams,
    run_pipeline,
    start_workers,
    task_cpus,
)

# Stage functions are module-level: worker processes get them by name.


def prepare(x: int) -> dict:
    time.sleep(0.002 * (x % 3))  # readers finish out of step with the model
    return {"x": x, "image": [x] * 4}


def model(batch: Sequence[dict]) -> list[int]:
    return [10 * a["x"] + len(batch) for a in batch]


def finish(a: dict, b: int) -> tuple[int, int, int]:
    time.sleep(0.003 * ((a["x"] + 1) % 2))  # later items can finish before earlier ones
    return (a["x"], b, len(a["image"]))


def strip(a: dict) -> dict:
    return {"x": a["x"], "image": []}


def finish_fails_at_3(a: dict, b: int) -> tuple[int, int, int]:
    if a["x"] == 3:
        raise InputError("window 3", "cannot read pixels; truncated or corrupt raster? (test)")
    return finish(a, b)


def prepare_fails_at_5(x: int) -> dict:
    if x == 5:
        raise CrownsamError(None, "bad window 5")
    return prepare(x)


def model_fails_at_4(batch: Sequence[dict]) -> list[int]:
    if any(a["x"] == 4 for a in batch):
        raise InputError("model", "fails at 4")
    return model(batch)


def collect(
    prepare_, model_, finish_, settings: PipelineSettings, n: int = 12
) -> tuple[list, BaseException | None]:
    out: list = []
    try:
        for r in run_pipeline(range(n), prepare_, model_, finish_, settings, strip=strip):
            out.append(r)
    except CrownsamError as exc:
        return out, exc
    return out, None


SETTINGS = [
    PipelineSettings(workers=1),
    PipelineSettings(workers=2),
    PipelineSettings(workers=2, processes=False),
    PipelineSettings(workers=2, batch=3, ahead=1),
    PipelineSettings(workers=3, batch=5, ahead=0, processes=False),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_same_results_in_the_same_order_as_the_sequential_loop(settings: PipelineSettings) -> None:
    sequential, _ = collect(prepare, model, finish, PipelineSettings(workers=0, batch=settings.batch))
    piped, _ = collect(prepare, model, finish, settings)
    assert [r[0] for r in sequential] == list(range(12))
    assert piped == [(*r[:2], 0) for r in sequential]  # strip() emptied the image sent to finish
    # the model saw batches of `batch` (the last one shorter): 10 * x + len(batch)
    assert {r[1] - 10 * r[0] for r in piped[:-1]} <= {settings.batch, 12 % settings.batch or settings.batch}


@pytest.mark.parametrize("settings", [PipelineSettings(workers=0), *SETTINGS], ids=str)
@pytest.mark.parametrize(
    ("stages", "first_bad", "message"),
    [
        ((prepare_fails_at_5, model, finish), 5, "bad window 5"),
        ((prepare, model_fails_at_4, finish), 4, "model: fails at 4"),
        (
            (prepare, model, finish_fails_at_3),
            3,
            "window 3: cannot read pixels; truncated or corrupt raster?",
        ),
    ],
    ids=["prepare", "model", "finish"],
)
def test_errors_surface_as_the_sequential_loop_raises_them(
    settings: PipelineSettings, stages: tuple, first_bad: int, message: str
) -> None:
    """The same exception (type and one-line message), after the results of every item of the batches
    before the failing item's batch (as the sequential loop returns them), and none after."""
    out, exc = collect(*stages, settings)
    assert exc is not None and str(exc).startswith(message), exc
    assert "\n" not in str(exc)
    done = [r[0] for r in out]
    if stages[2] is not finish_fails_at_3:
        first_bad = first_bad - first_bad % settings.batch  # the failing batch's first item
    assert done == list(range(first_bad)), done
    if stages[2] is finish_fails_at_3:
        assert type(exc) is InputError and exc.source == "window 3"  # unpickled as it was raised


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_read_ahead_is_bounded(settings: PipelineSettings) -> None:
    """From an endless stream of items, taking 5 results pulls only a bounded number of items: at most
    ``batch + ahead`` prepared or being prepared, one batch at the model and ``2 x workers`` finishing."""
    pulled = itertools.count()
    items = (next(pulled) for _ in itertools.repeat(None))
    stream = run_pipeline(items, prepare, model, finish, settings, strip=strip)
    taken = [next(stream)[0] for _ in range(5)]
    stream.close()
    assert taken == [0, 1, 2, 3, 4]
    bound = 5 + 2 * settings.batch + settings.ahead + 2 * settings.workers
    assert next(pulled) <= bound


def test_workers_parameter() -> None:
    assert WindowLoopParams().workers is None  # the task's CPUs
    assert WindowLoopParams().settings().workers == task_cpus() >= 1
    assert WindowLoopParams(workers=0).settings().sequential
    assert WindowLoopParams.from_pipeline(workers=-1, window_batch=2) == WindowLoopParams(None, 2)
    assert WindowLoopParams.pipeline_defaults() == {"workers": -1, "window_batch": 1}
    with pytest.raises(CrownsamError, match="--workers must be at least 0, got -2"):
        WindowLoopParams(workers=-2)
    with pytest.raises(CrownsamError, match="--window-batch must be a positive integer, got 0"):
        WindowLoopParams(window_batch=0)


@pytest.mark.parametrize(
    ("files", "cap"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs rounded up
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_task_cpus_follows_the_cgroup_quota(tmp_path: Path, files: dict[str, str], cap: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    import os

    affinity = len(os.sched_getaffinity(0))
    assert task_cpus(tmp_path) == (min(affinity, cap) if cap else affinity)


def worker_pid(a: dict, b: int) -> int:
    return os.getpid()


def test_started_workers_run_the_next_pipeline() -> None:
    """``start_workers`` starts the worker processes of the next run with the same settings (while the
    model loads, in the commands); that run uses them and takes them: the run after it starts its own."""
    from crownsam.common import window_pipeline

    settings = PipelineSettings(workers=2, ahead=1)
    start_workers(settings, wait=True)
    started = window_pipeline._STARTED[(2, True)].result()
    assert started is not None
    started_pids = set(started._processes)  # type: ignore[attr-defined]
    assert len(started_pids) == 2
    pids = set(run_pipeline(range(12), prepare, model, worker_pid, settings))
    assert pids and pids <= started_pids
    assert (2, True) not in window_pipeline._STARTED
    again = set(run_pipeline(range(12), prepare, model, worker_pid, settings))
    assert again and not again & started_pids
    start_workers(PipelineSettings(workers=0))  # the sequential loop has no workers to start
    assert (0, True) not in window_pipeline._STARTED


def test_waiting_for_started_workers_waits_for_every_one() -> None:
    """``start_workers(wait=True)`` returns once every worker process runs, its initializer done (each
    already nicer), not once the first one up has answered every start task (the pool then started the
    others late, or only when the run's first windows came)."""
    from crownsam.common import window_pipeline
    from crownsam.common.window_pipeline import WORKER_NICENESS

    nicer = min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
    settings = PipelineSettings(workers=3)
    for _ in range(3):
        start_workers(settings, wait=True)
        pool = window_pipeline._finish_pool(settings)
        try:
            pids = list(pool._processes)  # type: ignore[attr-defined]
            assert len(pids) == 3
            assert [os.getpriority(os.PRIO_PROCESS, p) for p in pids] == [nicer] * 3
        finally:
            pool.shutdown(wait=True)


def worker_niceness(a: dict, b: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def test_worker_processes_run_nicer_than_the_caller() -> None:
    """Worker processes yield the cores to the threads that feed the model (reader and model threads)."""
    from crownsam.common.window_pipeline import WORKER_NICENESS

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    got = set(run_pipeline(range(6), prepare, model, worker_niceness, PipelineSettings(workers=2)))
    assert got == {min(19, mine + WORKER_NICENESS)} and WORKER_NICENESS > 0
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine  # the caller keeps its own


SCRIPT = """
import os, sys
with open(os.environ["IMPORTS_LOG"], "a") as log:  # one line per import of this script
    log.write(f"{os.getpid()}\\n")
from crownsam.common.window_pipeline import PipelineSettings, run_pipeline


def finish(a, b):
    return os.getpid()


if __name__ == "__main__":
    settings = PipelineSettings(workers=2)
    pids = set(run_pipeline(range(16), lambda x: x, lambda batch: list(batch), finish, settings))
    print(" ".join(str(p) for p in sorted(pids)))
"""


def test_workers_do_not_import_the_main_script_again(tmp_path: Path) -> None:
    """A script that runs a pipeline is imported once more, by the forkserver, not once by each worker
    process (CPython 3.11 skips its ``__main__`` preload; each worker would import the script and all
    it imports again, 1-2 s with torch). Its workers still find the script's functions."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run_pipeline_script.py"
    script.write_text(SCRIPT)
    log = tmp_path / "imports.log"
    env = os.environ | {"IMPORTS_LOG": str(log)}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    workers = {int(p) for p in out.stdout.split()}
    importers = [int(p) for p in log.read_text().split()]
    assert len(workers) >= 1 and not workers & set(importers)
    assert len(importers) == 2  # the script itself, and the forkserver
