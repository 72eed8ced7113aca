"""Submit the pipeline to a Kubeflow Pipelines endpoint (kept thin: the request is all we can test here)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from crownsam.common.errors import CrownsamError, InputError
from crownsam.common.params import Params
from crownsam.pipelines.compile import compile_pipeline

CASTS = {"Integer": int, "Float": float, "String": str, "Boolean": bool}


def coerce(name: str, value: Any, kind: str) -> Any:
    """A parameter value as the pipeline's declared type (``2`` for a Float becomes ``2.0``)."""
    cast = CASTS.get(kind)
    if cast is None:
        return value
    if kind == "Boolean" and not isinstance(value, bool):
        if str(value).lower() not in ("true", "false"):
            raise InputError(None, f"pipeline parameter {name}={value!r}: expected true or false")
        return str(value).lower() == "true"
    if kind in ("Integer", "Float") and isinstance(value, bool):
        raise InputError(None, f"pipeline parameter {name}={value!r}: expected a number")
    try:
        out = cast(value)
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"pipeline parameter {name}={value!r}: expected {kind.lower()}") from exc
    if kind == "Integer" and isinstance(value, float) and value != out:
        raise InputError(None, f"pipeline parameter {name}={value!r}: expected an integer")
    return out


def check_arguments(arguments: dict[str, Any], pipeline: Any = None) -> dict[str, Any]:
    """Refuse unknown parameter names and missing required ones before anything is sent; return the
    arguments converted to the types the pipeline declares."""
    if pipeline is None:
        from crownsam.pipelines.crownsam_pipeline import crownsam_pipeline as pipeline

    spec = pipeline.component_spec.inputs or {}
    unknown = sorted(set(arguments) - set(spec))
    if unknown:
        known = ", ".join(sorted(spec))
        raise InputError(None, f"unknown pipeline parameter(s) {', '.join(unknown)}; known: {known}")
    missing = sorted(
        k for k, v in spec.items() if v.default is None and not v.optional and k not in arguments
    )
    if missing:
        raise InputError(None, f"missing pipeline parameter(s) {', '.join(missing)}")
    arguments = {k: coerce(k, v, spec[k].type) for k, v in arguments.items()}
    check_values(arguments)
    return arguments


def step_params() -> tuple[type[Params], ...]:
    """The step parameter classes whose fields are pipeline parameters."""
    from crownsam.coco.params import ExportParams
    from crownsam.evaluation.params import EvaluateParams
    from crownsam.flights.settings import RetrainSettings
    from crownsam.pseudolabel.params import PseudolabelParams, Sam2Params
    from crownsam.tiling.params import TileParams
    from crownsam.training.config import TrainConfig

    return (
        TileParams,
        Sam2Params,
        PseudolabelParams,
        ExportParams,
        EvaluateParams,
        TrainConfig,
        RetrainSettings,
    )


def _build(cls: type[Params], values: dict[str, Any]) -> None:
    from crownsam.training.config import TrainConfig

    if cls is TrainConfig:  # its paths are not pipeline parameters; it validates at its entry point
        TrainConfig.from_pipeline(coco_dir="-", out_dir="-", **values).validate()
    else:
        cls.from_pipeline(**values)


def check_values(arguments: dict[str, Any]) -> None:
    """Check every step's values as the step will (ranges, choices, rules between fields) before
    anything runs: ``shards=0`` is refused here, not minutes later in a task. One value at a time first,
    so the message names the parameter as given (``pipeline parameter shards=0: must be ...``)."""
    for cls in step_params():
        fields = {f.pipeline_name: f for f in cls.pipeline_fields()}
        given = {k: v for k, v in arguments.items() if k in fields}
        for key, value in given.items():
            try:
                _build(cls, {key: value})
            except CrownsamError as exc:
                problem = exc.problem.removeprefix(fields[key].label).lstrip(": ")
                raise InputError(None, f"pipeline parameter {key}={value!r}: {problem}") from exc
        try:
            _build(cls, given)
        except CrownsamError as exc:
            raise InputError(None, f"pipeline parameters {', '.join(sorted(given))}: {exc.problem}") from exc


def submit(
    host: str,
    arguments: dict[str, Any],
    *,
    experiment: str = "crownsam",
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    namespace: str = "kubeflow",
    client=None,
):
    """Compile and submit one run; returns kfp's RunPipelineResult."""
    from kfp import Client

    arguments = check_arguments(arguments)
    client = client or Client(host=host, namespace=namespace)
    return send(
        client,
        None,
        arguments,
        run_name=run_name,
        experiment=experiment,
        namespace=namespace,
        pipeline_root=pipeline_root,
        service_account=service_account,
    )


def send(client: Any, pipeline: Any, arguments: dict[str, Any], **options: Any) -> Any:
    """Compile ``pipeline`` (None: the crownsam pipeline) to a temporary package and create one run of it.

    ``options``: run_name, experiment, namespace, pipeline_root, service_account, enable_caching.
    """
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", pipeline)
        experiment = options.pop("experiment", None)
        return client.create_run_from_pipeline_package(
            str(package), arguments=arguments, experiment_name=experiment, **options
        )
