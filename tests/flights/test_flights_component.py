"""The pipeline's coarse-segments step on KFP's local runner (a real subprocess task): a flight given
``chm_uri`` without ``coarse_uri`` gets its crowns from CHM segmentation."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
from kfp import local

from crownsam.common.artifacts import label_file
from crownsam.flights.component import prepare_segments_op
from crownsam.synthetic import generate_scene


def test_chm_branch_runs_as_a_kfp_task(tmp_path: Path, monkeypatch) -> None:
    scene = generate_scene(tmp_path / "flight", size=1024, seed=5)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the task's temporary folder goes with it
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp"),
        workspace_root=str(tmp_path / "ws"),  # else a /tmp/kfp-workspace-* that only a pipeline run removes
    )
    task = prepare_segments_op(
        coarse_uri="", coarse_fingerprint="", chm_uri=str(scene.chm), chm_fingerprint="x"
    )
    artifact = task.outputs["segments"]
    crowns = gpd.read_file(label_file(artifact.path))  # a folder holding segments.gpkg
    assert artifact.metadata["source"] == "chm" and artifact.metadata["segments"] == len(crowns) > 10
    assert {"segment_id", "treetop_x", "treetop_y"} <= set(crowns.columns)
    truth = gpd.read_file(scene.truth)
    assert crowns.crs == truth.crs and crowns.union_all().intersection(truth.union_all()).area > 0
