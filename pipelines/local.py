"""Run the whole pipeline on this machine: KFP's local runner, a local folder as object storage, a local
MLflow store (sqlite). Same pipeline definition as on a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from crownsam.common import storage
from crownsam.common.errors import InputError

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
    """Where a local run put things."""

    out: Path
    pipeline_root: Path
    tracking_uri: str
    run_dir: Path | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)


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


def run_local(arguments: dict, out: str | Path) -> LocalRun:
    """Run ``crownsam_pipeline`` with KFP's SubprocessRunner (this Python environment) under ``out``."""
    from kfp import local

    from crownsam.pipelines.crownsam_pipeline import crownsam_pipeline
    from crownsam.pipelines.submit import check_arguments

    arguments = check_arguments(arguments)

    out = Path(out).resolve()
    tracking = arguments.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        tracking = local_tracking(out, arguments.get("mlflow_experiment", "crownsam"))
    arguments = arguments | {"mlflow_tracking_uri": tracking}
    run = LocalRun(out=out, pipeline_root=out / "kfp", tracking_uri=tracking)
    before = set(run.pipeline_root.glob("*")) if run.pipeline_root.exists() else set()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(run.pipeline_root))
    with kfp_local_hygiene():
        crownsam_pipeline(**arguments)
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
