"""Run the whole pipeline on this machine: KFP's local runner, a local folder as object storage, a local
MLflow store (sqlite). Same pipeline definition as on a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from crownsam.common import storage
from crownsam.common.errors import InputError

if TYPE_CHECKING:
    from crownsam.pipelines.console import Step

log = logging.getLogger(__name__)

FLIGHT_FILES = {
    "ortho_uri": "ortho.tif",
    "chm_uri": "chm.tif",
    "coarse_uri": "coarse.gpkg",
    "manual_uri": "manual.gpkg",
    "test_area_uri": "test_area.gpkg",
}
REQUIRED = ("ortho_uri", "manual_uri", "test_area_uri")


def flight_arguments(flight: str) -> dict[str, str]:
    """Pipeline URI arguments for a flight folder (``ortho.tif``, ``chm.tif`` and/or ``coarse.gpkg``,
    ``manual.gpkg``, ``test_area.gpkg``); absent optional files give ''."""
    args = {}
    for key, name in FLIGHT_FILES.items():
        uri = storage.join(flight, name)
        if storage.is_remote(uri):
            args[key] = uri if storage.exists(uri) else ""
        else:
            p = Path(uri).resolve()
            args[key] = str(p) if p.exists() else ""
    missing = [FLIGHT_FILES[k] for k in REQUIRED if not args[k]]
    if missing:
        raise InputError(flight, f"flight folder lacks {', '.join(missing)}")
    if not args["coarse_uri"] and not args["chm_uri"]:
        raise InputError(flight, "flight folder needs coarse.gpkg or chm.tif (to derive coarse segments)")
    return args


@dataclass
class LocalRun:
    """Where a local run put things, and how its steps went."""

    out: Path
    pipeline_root: Path
    tracking_uri: str
    run_dir: Path | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    log: Path | None = None
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0


class StepFailed(Exception):
    """A pipeline step failed: its display name, its own last error line and its log."""

    def __init__(self, step: Step, run: LocalRun) -> None:
        self.step, self.run = step, run
        why = step.message or f"it ended with status {step.status} without an error message"
        super().__init__(f"step '{step.label}' failed: {why} (its log: {step.log}; all: {run.log})")


def local_tracking(out: Path, experiment: str) -> str:
    """The embedded MLflow store under ``out`` (sqlite; artifacts in ``out/mlartifacts``), with the
    experiment created so its artifacts land there too."""
    import mlflow

    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=(out / "mlartifacts").resolve().as_uri())
    return uri


@contextlib.contextmanager
def kfp_local_hygiene() -> Iterator[None]:
    """Undo what KFP's local runner can leave behind in this process: it swaps ``builtins.print`` for an
    indenting one per task, and with parallel tasks (threads) an interleaved restore can leave the
    swapped one in place (every later ``print(..., file=sys.stderr)`` then writes spaces to stdout);
    it also reconfigures the root logger."""
    import builtins
    import logging

    root = logging.getLogger()
    saved_print, saved_level, saved_handlers = builtins.print, root.level, root.handlers[:]
    try:
        yield
    finally:
        builtins.print = saved_print
        root.setLevel(saved_level)
        root.handlers[:] = saved_handlers


@contextlib.contextmanager
def quiet_local_runner() -> Iterator[None]:
    """Warnings of KFP's local runner that say nothing about this run, filtered by their text:

    * "Task '...': settings [...] have no effect in the current local runner": memory, CPU, accelerator
      and display-name settings are for the cluster; the local runner ignores them by design.
    * "...custom or non-Python base image...": our images hold this same package, and the local run
      uses this environment on purpose (``SubprocessRunner(use_venv=False)``).

    Progress lines are asked of the steps (``CROWNSAM_PROGRESS=lines``, inherited by the tasks)."""
    import warnings

    from crownsam.common.progress import ENV

    old = os.environ.get(ENV)
    os.environ[ENV] = "lines"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"Task '.*': settings \[.*\] have no effect", category=UserWarning
            )
            warnings.filterwarnings(
                "ignore", message=r".*custom or non-Python base image", category=RuntimeWarning
            )
            yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


def step_names(pipeline_spec: Any) -> tuple[dict[str, str], frozenset[str]]:
    """From a compiled pipeline: the runner's task name -> the step's display name, and the task names
    that run once per item of a ``ParallelFor`` (they are numbered on screen)."""
    comps = pipeline_spec.components
    dags = [pipeline_spec.root.dag] + [
        c.dag for c in comps.values() if c.WhichOneof("implementation") == "dag"
    ]
    labels: dict[str, str] = {}
    loop_comps: set[str] = set()
    for dag in dags:
        for key, task in dag.tasks.items():
            labels.setdefault(key, task.task_info.name or key)
            if task.WhichOneof("iterator"):
                loop_comps.add(task.component_ref.name)
    loops = frozenset(key for name in loop_comps for key in comps[name].dag.tasks)
    return labels, loops


def run_local(
    arguments: dict, out: str | Path, *, verbose: bool = False, stream: TextIO | None = None
) -> LocalRun:
    """Run ``crownsam_pipeline`` with KFP's SubprocessRunner (this Python environment) under ``out``.

    What the runner and the steps print goes to ``out/run.log`` (and ``out/logs/<task>.log``); ``stream``
    (default stdout) shows one line per step as it starts and ends (see :class:`RunConsole`), and
    everything live with ``verbose``. A failed step raises :class:`StepFailed`."""
    from kfp import local

    from crownsam.pipelines.console import RunConsole
    from crownsam.pipelines.crownsam_pipeline import crownsam_pipeline
    from crownsam.pipelines.submit import check_arguments

    arguments = check_arguments(arguments)

    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; --out needs a folder for the run")
    labels, loops = step_names(crownsam_pipeline.pipeline_spec)
    console = RunConsole(out, labels, loops, verbose=verbose, stream=stream)
    run = LocalRun(out=out, pipeline_root=out / "kfp", tracking_uri="", log=console.log_path)
    before = set(run.pipeline_root.glob("*")) if run.pipeline_root.exists() else set()
    failure: RuntimeError | None = None
    with console, quiet_local_runner(), kfp_local_hygiene():
        tracking = arguments.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking:
            tracking = local_tracking(out, arguments.get("mlflow_experiment", "crownsam"))
        run.tracking_uri = tracking
        arguments = arguments | {"mlflow_tracking_uri": tracking}
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run.pipeline_root))
        try:
            crownsam_pipeline(**arguments)
        except RuntimeError as exc:  # the runner's "finished with status FAILURE"
            if not console.failed:
                raise
            failure = exc
    run.steps, run.seconds = console.steps, console.elapsed()
    new = sorted(set(run.pipeline_root.glob("*")) - before, key=lambda p: p.stat().st_mtime)
    if new:
        run.run_dir = new[-1]
        run.artifacts = find_artifacts(run.run_dir)
    if failure is not None:
        raise StepFailed(console.failed[0], run) from failure
    return run


def find_artifacts(run_dir: Path) -> dict[str, Path]:
    """The outputs a person wants from a local run folder (task folders are named after components)."""
    wanted = {
        "comparison_report": ("compare-op", "report"),
        "comparison_markdown": ("compare-op", "summary"),
        "comparison": ("compare-op", "result"),
        "label_report": ("evaluate-labels-op", "report"),
        "pseudolabels": ("merge-labels-op", "labels"),
    }
    found = {}
    for key, (task, name) in wanted.items():
        hits = sorted(run_dir.rglob(f"{task}/{name}"))
        if hits:
            found[key] = hits[-1]
    return found
