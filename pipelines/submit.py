"""Submit the pipeline to a Kubeflow Pipelines endpoint (kept thin: the request is all we can test here)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from crownsam.common.errors import InputError


def check_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown parameter names and missing required ones before anything is sent."""
    from crownsam.pipelines.crownsam_pipeline import crownsam_pipeline

    spec = crownsam_pipeline.component_spec.inputs or {}
    unknown = sorted(set(arguments) - set(spec))
    if unknown:
        raise InputError(
            None, f"unknown pipeline parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(spec))}"
        )
    missing = sorted(
        k for k, v in spec.items() if v.default is None and not v.optional and k not in arguments
    )
    if missing:
        raise InputError(None, f"missing pipeline parameter(s) {', '.join(missing)}")
    return arguments


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

    from crownsam.pipelines.compile import compile_pipeline

    check_arguments(arguments)
    client = client or Client(host=host, namespace=namespace)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "crownsam.yaml")
        return client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
