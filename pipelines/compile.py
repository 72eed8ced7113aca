"""Compile the pipeline to KFP's IR YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crownsam.common.atomic import atomic_path


def compile_pipeline(out: str | Path, pipeline: Any = None) -> Path:
    """Write a compiled pipeline package (atomically); default: the crownsam pipeline."""
    from kfp import compiler

    if pipeline is None:
        from crownsam.pipelines.crownsam_pipeline import crownsam_pipeline as pipeline

    with atomic_path(out) as tmp:
        compiler.Compiler().compile(pipeline, str(tmp))
    return Path(out)
