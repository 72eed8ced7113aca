"""Real SAM2 code (untrained weights, CPU) through both methods on a small synthetic raster: plumbing only.

The numbers of an untrained model say nothing about crown quality; these tests check that the run
completes, writes every crown once in the raster's CRS with the documented columns, and says loudly that
SAM2 was untrained.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from degrade import degraded_scene

from crownsam import cli
from crownsam.refine.api import COLUMNS

# segment-everything over the crowns kept small: one pass, 8 x 8 points on 512 px tiles
AMG = ["--tile", "512", "--padding", "64", "--passes", "1", "--points-per-side", "8"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["box", "sessrs"])
def test_untrained_sam2_runs_end_to_end(method: str, tmp_path: Path, capfd) -> None:
    scene, truth = degraded_scene(tmp_path, size=512, seed=3)
    out = tmp_path / "refined.gpkg"
    argv = ["refine", "--ortho", str(scene.ortho), "--predictions", str(tmp_path / "pred.gpkg")]
    argv += ["--out", str(out), "--method", method, "--untrained", "--device", "cpu", "--no-progress"]
    assert cli.main(argv + (AMG if method == "sessrs" else [])) == 0
    captured = capfd.readouterr()
    assert "UNTRAINED SAM2" in captured.out and "UNTRAINED SAM2" in captured.err
    got = gpd.read_file(out, layer="refined")
    pred = gpd.read_file(tmp_path / "pred.gpkg")
    s = json.loads((tmp_path / "refined.summary.json").read_text())
    assert s["untrained"] is True and "WARNING" in s
    assert set(COLUMNS) <= set(got.columns) and got["untrained"].all()
    assert got.crs == truth.crs and got["crown_id"].is_unique
    assert set(got["crown_id"]) | set(s["dropped"]) == set(range(1, len(pred) + 1))
    assert set(got["refined_by"]) <= {"prediction", "sam2" if method == "box" else "sam_objects"}
    assert got.geometry.is_valid.all() and (got.geom_type == "Polygon").all()
    if method == "sessrs":
        objects = s["sessrs"]["sam_objects"]
        assert objects["source"] == "generated" and objects["tiles"] == 1 and objects["untrained"] is True
