"""Compile the pipeline to KFP's IR YAML."""

from __future__ import annotations

from pathlib import Path

from crownsam.common.atomic import atomic_path


def compile_pipeline(out: str | Path) -> Path:
    """Write the compiled pipeline package (atomically)."""
    from kfp import compiler

    from crownsam.pipelines.crownsam_pipeline import crownsam_pipeline

    with atomic_path(out) as tmp:
        compiler.Compiler().compile(crownsam_pipeline, str(tmp))
    return Path(out)
