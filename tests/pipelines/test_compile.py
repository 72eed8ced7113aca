"""The compiled pipeline: a golden file keeps the IR stable; structure, resources and parameters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crownsam.pipelines.compile import compile_pipeline

GOLDEN = Path(__file__).parent / "golden" / "crownsam_pipeline.yaml"
IMAGE_ENV = ("CROWNSAM_REGISTRY", "CROWNSAM_CPU_IMAGE", "CROWNSAM_GPU_IMAGE")


def compile_fresh(out: Path) -> str:
    """Compile in a child process with the default image names (the parent's env may name others)."""
    env = {k: v for k, v in os.environ.items() if k not in IMAGE_ENV}
    code = f"from crownsam.pipelines.compile import compile_pipeline; compile_pipeline({str(out)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return out.read_text()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> str:
    return compile_fresh(tmp_path_factory.mktemp("ir") / "pipeline.yaml")


def test_matches_golden_file(compiled: str) -> None:
    """Regenerate with `make golden` when a change to the pipeline is intended, and review the diff."""
    assert compiled == GOLDEN.read_text(), "compiled pipeline differs from the golden file; see `make golden`"


def test_structure_resources_and_caching(compiled: str) -> None:
    ir = yaml.safe_load(compiled)
    root = ir["root"]["dag"]["tasks"]
    names = set(root)
    assert {"prepare-segments-op", "evaluate-labels-op", "compare-op", "crownsam-pseudolabel"} <= names
    assert sum(n.startswith("train-op") for n in names) == 2  # once per label set
    assert sum(n.startswith("export-coco-op") for n in names) == 2
    fingerprints = [t for n, t in root.items() if n.startswith("fingerprint-op")]
    assert len(fingerprints) == 4 and all(t["cachingOptions"] == {} for t in fingerprints)  # caching off
    sub = ir["components"]["comp-crownsam-pseudolabel"]["dag"]["tasks"]
    assert "for-loop-1" in sub or any(t.get("parameterIterator") for t in sub.values())
    execs = ir["deploymentSpec"]["executors"]
    train = next(v for k, v in execs.items() if k.startswith("exec-train-op"))["container"]
    assert train["image"].endswith(":0.1.0") and "gpu" in train["image"]
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    cpu = next(v for k, v in execs.items() if k.startswith("exec-compare-op"))["container"]
    assert "cpu" in cpu["image"] and cpu["resources"]["resourceMemoryLimit"] == "8G"
    assert all("pip install" not in " ".join(e["container"].get("command", [])) for e in execs.values())


def test_compile_is_deterministic_and_atomic(tmp_path: Path, compiled: str) -> None:
    out = compile_pipeline(tmp_path / "p.yaml")
    assert out.read_text().count("exec-train-op") == compiled.count("exec-train-op")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]
