"""Run the whole pipeline on this machine: KFP's local runner, a local folder as object storage, a local
MLflow store (sqlite). Same pipeline definition as on a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from crownsam.common import storage
from crownsam.common.environ import env_var
from crownsam.common.errors import InputError

if TYPE_CHECKING:
    from crownsam.pipelines.console import RunConsole, Step

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

    def __init__(self, step: Step, log: Path | None) -> None:
        self.step = step
        why = step.message or f"it ended with status {step.status} without an error message"
        where = f"its log: {step.log}" + (f"; all: {log}" if log else "")
        super().__init__(f"step '{step.label}' failed: {why} ({where})")


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
def task_temp_dir() -> Iterator[Path]:
    """For the block: the task subprocesses' temporary folder (``TMPDIR``, inherited by them) is a new
    folder, removed with all it holds after the block. KFP's lightweight components each write their own
    source to a ``mktemp -d`` folder that nothing removes (harmless in a container; on this machine every
    local run left dozens in ``/tmp``)."""
    with tempfile.TemporaryDirectory(prefix="crownsam-tasks-") as tmp, env_var("TMPDIR", tmp):
        yield Path(tmp)


@contextlib.contextmanager
def quiet_local_runner() -> Iterator[None]:
    """For the block: progress lines are asked of the steps (``CROWNSAM_PROGRESS=lines``, inherited by
    the task subprocesses), and one warning of KFP's local runner is filtered by its text: "...custom or
    non-Python base image..." (our images hold this same package, and a local run uses this environment
    on purpose: ``SubprocessRunner(use_venv=False)``)."""
    import warnings

    from crownsam.common.progress import ENV

    with env_var(ENV, "lines"), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*custom or non-Python base image", category=RuntimeWarning
        )
        yield


def _dags(spec: Any) -> list[Any]:
    return [spec.root.dag] + [
        c.dag for c in spec.components.values() if c.WhichOneof("implementation") == "dag"
    ]


def step_names(pipeline_spec: Any) -> tuple[dict[str, str], frozenset[str]]:
    """From a compiled pipeline: the runner's task name -> the step's display name, and the task names
    that run once per item of a ``ParallelFor`` (they are numbered on screen)."""
    labels: dict[str, str] = {}
    loop_comps: set[str] = set()
    for dag in _dags(pipeline_spec):
        for key, task in dag.tasks.items():
            labels.setdefault(key, task.task_info.name or key)
            if task.WhichOneof("iterator"):
                loop_comps.add(task.component_ref.name)
    loops = frozenset(key for name in loop_comps for key in pipeline_spec.components[name].dag.tasks)
    return labels, loops


def local_spec(pipeline_spec: Any) -> Any:
    """A copy of a compiled pipeline without what only a cluster uses, which KFP's local runner would
    otherwise warn about or act on: CPU, memory and GPU requests (ignored locally), display names (the
    console shows them itself), and retries (for preempted nodes; a local failure is deterministic, so
    the run ends at the first one instead of repeating it after a back-off)."""
    spec = type(pipeline_spec)()
    spec.CopyFrom(pipeline_spec)
    for dag in _dags(spec):
        for key, task in dag.tasks.items():
            task.ClearField("retry_policy")
            task.task_info.name = key
    for executor in spec.deployment_spec["executors"].values():
        if "container" in executor and "resources" in executor["container"]:
            del executor["container"]["resources"]
    return spec


def run_pipeline(console: RunConsole, pipeline: Any, arguments: dict, pipeline_root: Path) -> None:
    """Run a compiled ``pipeline`` (a ``@dsl.pipeline`` function) with KFP's SubprocessRunner (this
    Python environment) as :func:`local_spec` makes it, inside an entered ``console``. A failed step
    raises :class:`StepFailed`."""
    from kfp import local
    from kfp.local.pipeline_orchestrator import run_local_pipeline

    from crownsam.pipelines.console import following

    with quiet_local_runner(), kfp_local_hygiene(), task_temp_dir(), following(console):
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
        try:
            run_local_pipeline(pipeline_spec=local_spec(pipeline.pipeline_spec), arguments=arguments)
        except RuntimeError as exc:  # the runner's "finished with status FAILURE"
            if not console.failed:
                raise
            raise StepFailed(console.failed[0], console.log_path) from exc


def run_local(
    arguments: dict, out: str | Path, *, verbose: bool = False, stream: TextIO | None = None
) -> LocalRun:
    """Run ``crownsam_pipeline`` on this machine under ``out`` (see :func:`run_pipeline`).

    What the runner and the steps print goes to ``out/run.log`` (and ``out/logs/<task>.log``); ``stream``
    (default stdout) shows one line per step as it starts and ends (see :class:`RunConsole`), and
    everything live with ``verbose``. A failed step raises :class:`StepFailed`."""
    from crownsam.pipelines.console import RunConsole
    from crownsam.pipelines.crownsam_pipeline import crownsam_pipeline
    from crownsam.pipelines.submit import check_arguments

    arguments = check_arguments(arguments)
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; --out needs a folder for the run")
    console = RunConsole(out, *step_names(crownsam_pipeline.pipeline_spec), verbose=verbose, stream=stream)
    run = LocalRun(out=out, pipeline_root=out / "kfp", tracking_uri="", log=console.log_path)
    before = set(run.pipeline_root.glob("*")) if run.pipeline_root.exists() else set()
    with console:
        tracking = arguments.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking:
            tracking = local_tracking(out, arguments.get("mlflow_experiment", "crownsam"))
        run.tracking_uri = tracking
        run_pipeline(
            console, crownsam_pipeline, arguments | {"mlflow_tracking_uri": tracking}, run.pipeline_root
        )
    run.steps, run.seconds = console.steps, console.elapsed()
    new = sorted(set(run.pipeline_root.glob("*")) - before, key=lambda p: p.stat().st_mtime)
    if new:
        run.run_dir = new[-1]
        run.artifacts = find_artifacts(run.run_dir)
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
