"""MLflow: where runs go, logging the model, and loading a model back from any of its addresses.

* **Tracking URI**: the one given (config or ``--tracking-uri``), else ``MLFLOW_TRACKING_URI``, else an
  embedded sqlite store ``sqlite:///<run folder>/mlflow.db`` (MLflow 3 refuses plain file stores). For a
  new experiment in a sqlite store, artifacts go to ``<the database's folder>/mlartifacts`` (MLflow's
  default would be ``./mlruns`` in the current directory).
* **Model**: ``mlflow.pytorch.log_model(..., serialization_format="pickle")`` of the plain torchvision
  ``MaskRCNN`` (with its ``crownsam_meta`` dict), an input example (a float32 array (1, bands, 64, 64) in
  [0, 1]) and a tensor signature. Not ``pt2``: ``torch.export`` cannot trace Mask R-CNN (data-dependent
  shapes in ``batched_nms``: ``GuardOnDataDependentSymNode``). Loading needs torch and torchvision, not
  crownsam. The pyfunc flavour that MLflow adds cannot serve it (the model returns a list of dicts, pyfunc
  wants one tensor): load it with ``mlflow.pytorch.load_model`` and call it on a list of (C, H, W)
  tensors. MLflow's warning about that is kept out of our logs.
* **Model addresses** (:func:`load_model`): a run folder (``RUN/checkpoints/best.pt``, else ``last.pt``),
  a checkpoint file (local, ``gs://``, ``https://``), or any MLflow model URI (``runs:/<id>/model``,
  ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/m-<id>``, ``mlflow-artifacts:/...``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crownsam.common.environ import env_var
from crownsam.common.errors import FILE_ERRORS, CrownsamError, InputError, mlflow_errors
from crownsam.common.tracking import using_tracking_uri
from crownsam.training.model import get_meta, model_from_checkpoint

log = logging.getLogger(__name__)

MLFLOW_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:", "dbfs:/")
ARTIFACT_DIR = "mlartifacts"


def resolve_tracking_uri(uri: str | None, run_dir: str | Path) -> str:
    """The given URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<run_dir>/mlflow.db``."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(run_dir).resolve() / 'mlflow.db').as_posix()}"


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Keep MLflow's "View run ... at ..." lines off stdout (our results go there, one or two lines)."""
    with env_var("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"):
        yield


def experiment_id(name: str, uri: str) -> str:
    """Get or create the experiment ``name``; new experiments in a sqlite store keep their artifacts
    beside the database."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))  # sqlite:////abs/db -> /abs/db; sqlite:///rel -> rel
        location = (db.resolve().parent / ARTIFACT_DIR).as_uri()
    return client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def training_run(
    uri: str,
    experiment: str,
    run_name: str | None,
    earlier: Mapping[str, Any] | None,
    params: Callable[[], dict[str, Any]],
    tags: Mapping[str, str],
) -> Iterator[Any]:
    """The MLflow run of one training, active for the block: the ``earlier`` run (a resumed training's
    ``run.json``) when it was tracked at the same ``uri``, else a new run in ``experiment`` that gets
    ``params()`` and ``tags``. Yields MLflow's active run."""
    import mlflow

    with using_tracking_uri(uri), quiet_stdout():
        try:
            if earlier and earlier.get("run_id") and earlier.get("tracking_uri") == uri:
                run, new = mlflow.start_run(run_id=earlier["run_id"]), False
            else:
                exp = experiment_id(experiment, uri)
                run, new = mlflow.start_run(experiment_id=exp, run_name=run_name), True
        except mlflow_errors() as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CrownsamError(uri, f"cannot start an MLflow run ({first[:300]})") from exc
        with run:
            if new:
                mlflow.log_params(params())
                mlflow.set_tags(dict(tags))
            yield run


def log_epoch(record: Mapping[str, Any]) -> None:
    """One epoch's numbers (every number of ``record`` but ``epoch``) at step ``record["epoch"]``."""
    import mlflow

    metrics = {k: float(v) for k, v in record.items() if isinstance(v, int | float) and k != "epoch"}
    mlflow.log_metrics(metrics, step=int(record["epoch"]))


def log_result(
    model: torch.nn.Module,
    final: Mapping[str, float],
    picture: Path | None,
    summary: Mapping[str, Any],
    register_name: str | None,
) -> str:
    """The end of a training in its active run: final metrics, the prediction picture, the model
    (registered under ``register_name`` when given) and the summary as ``metrics.json``; returns the
    model's URI."""
    import mlflow

    mlflow.log_metrics(dict(final))
    if picture is not None:
        mlflow.log_artifact(str(picture))
    model_uri = log_model(model, registered_model_name=register_name)
    mlflow.log_dict({**summary, "model_uri": model_uri}, "metrics.json")
    return model_uri


class _DropServingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (
            msg.startswith("Failed to validate serving input example")
            or msg.startswith("Saving pytorch model by Pickle")
        )


@contextlib.contextmanager
def _quiet_model_logging() -> Iterator[None]:
    flt = _DropServingWarning()
    loggers = [logging.getLogger(n) for n in ("mlflow.models.model", "mlflow.pytorch")]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


def log_model(
    model: torch.nn.Module, *, registered_model_name: str | None = None, example_size: int = 64
) -> str:
    """Log ``model`` (CPU, eval mode) to the active run as ``model``; return its model URI."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    bands = len(get_meta(model).get("bands") or [0, 0, 0])
    example = np.random.default_rng(0).random((1, bands, example_size, example_size), dtype=np.float32)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, bands, -1, -1))]))
    import torchvision

    reqs = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={torchvision.__version__.split('+')[0]}",
    ]
    with _quiet_model_logging():
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format="pickle",
            input_example=example,
            signature=signature,
            pip_requirements=reqs,
            registered_model_name=registered_model_name,
        )
    return info.model_uri


@dataclass
class LoadedModel:
    """A model ready for inference, its metadata, and the MLflow run it came from (if known)."""

    model: torch.nn.Module
    meta: dict[str, Any]
    source: str
    run_id: str | None = None
    tracking_uri: str | None = None


def _run_of_mlflow_uri(uri: str, tracking_uri: str) -> str | None:
    """The run that produced an MLflow model URI, or None when it cannot be told."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("runs:/"):
        return uri.removeprefix("runs:/").split("/", 1)[0] or None
    if uri.startswith("models:/"):
        client = MlflowClient(tracking_uri)
        ref = uri.removeprefix("models:/").strip("/")
        try:
            if ref.startswith("m-") and "/" not in ref and "@" not in ref:
                return client.get_logged_model(ref).source_run_id
            if "@" in ref:
                name, alias = ref.split("@", 1)
                return client.get_model_version_by_alias(name, alias).run_id
            name, _, version = ref.rpartition("/")
            if name and version.isdigit():
                return client.get_model_version(name, version).run_id
        except mlflow_errors():  # the run is optional information
            return None
    return None


def _read_run_json(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "run.json"
    if p.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            return json.loads(p.read_text())
    return {}


def load_checkpoint(path: Path, source: str) -> dict[str, Any]:
    """Read a crownsam checkpoint (``last.pt``/``best.pt``) or raise InputError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FILE_ERRORS as exc:
        raise InputError(source, f"not a readable crownsam checkpoint ({type(exc).__name__})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "meta" not in ckpt:
        raise InputError(source, "not a crownsam checkpoint (needs 'model' and 'meta')")
    return ckpt


def load_model(uri: str, *, tracking_uri: str | None = None, cache_dir: str | None = None) -> LoadedModel:
    """Load a trained model for inference from a run folder, a checkpoint or an MLflow model URI."""
    text = str(uri)
    if text.startswith(MLFLOW_SCHEMES):
        import mlflow.pytorch

        turi = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not turi:
            raise CrownsamError(uri, "an MLflow model URI needs --tracking-uri or MLFLOW_TRACKING_URI")
        # MLflow downloads the model to a new temporary folder and leaves it there (177 MB for Mask
        # R-CNN on every load): download into one we remove once the weights are in memory.
        with using_tracking_uri(turi), tempfile.TemporaryDirectory(prefix="crownsam-mlflow-model-") as dst:
            try:
                model = mlflow.pytorch.load_model(text, dst_path=dst, map_location="cpu")
            except (*mlflow_errors(), *FILE_ERRORS) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(uri, f"cannot load the MLflow model ({first[:300]})") from exc
        if not isinstance(model, torch.nn.Module):
            raise InputError(uri, "the MLflow model is not a PyTorch module")
        meta = get_meta(model)
        if not meta.get("bands"):
            raise InputError(
                uri, "the model has no crownsam metadata (bands, stretch); not from crownsam train"
            )
        return LoadedModel(model.eval(), meta, text, _run_of_mlflow_uri(text, turi), turi)
    from crownsam.common.storage import fetch, is_remote

    run_json: dict[str, Any] = {}
    if not is_remote(text) and Path(text).is_dir():
        run_dir = Path(text)
        for name in ("best.pt", "last.pt"):
            cand = run_dir / "checkpoints" / name
            if cand.is_file():
                path = cand
                break
        else:
            raise InputError(uri, "run folder without checkpoints/best.pt or checkpoints/last.pt")
        run_json = _read_run_json(run_dir)
    else:
        path = fetch(text, cache_dir, what="model checkpoint")
        if path.parent.name == "checkpoints":
            run_json = _read_run_json(path.parent.parent)
    ckpt = load_checkpoint(path, text)
    try:
        model = model_from_checkpoint(ckpt)
    except (KeyError, RuntimeError) as exc:
        raise InputError(uri, f"checkpoint does not match its model description ({exc})") from exc
    return LoadedModel(model, dict(ckpt["meta"]), text, run_json.get("run_id"), run_json.get("tracking_uri"))


def log_metrics_to_run(
    run_id: str, tracking_uri: str, metrics: Mapping[str, float], artifacts: Mapping[str, Path] | None = None
) -> None:
    """Add metrics (and artifact files) to an existing run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for k, v in metrics.items():
        client.log_metric(run_id, k, float(v))
    for sub, path in (artifacts or {}).items():
        client.log_artifact(run_id, str(path), artifact_path=sub or None)
