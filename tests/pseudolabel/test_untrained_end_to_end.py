"""Real SAM2 (hiera tiny, untrained, CPU) end to end through the installed ``crownsam`` command.

Untrained masks mean nothing, so this checks plumbing, accounting and georeferencing bounds only, and
that an untrained run says so everywhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import shapely

from crownsam.synthetic import generate_scene

CROWNSAM = shutil.which("crownsam", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    d = tmp_path_factory.mktemp("e2e")
    scene = generate_scene(d / "scene", size=1024, seed=1)
    tile = subprocess.run(
        [CROWNSAM, "tile", "--ortho", scene.ortho, "--segments", scene.coarse, "--out", d / "plan.json"],
        capture_output=True,
        text=True,
    )
    pseudo = subprocess.run(
        [CROWNSAM, "pseudolabel", "--ortho", scene.ortho, "--segments", scene.coarse,
         "--plan", d / "plan.json", "--out", d / "pseudo.gpkg",
         "--untrained", "--model", "sam2.1_hiera_t", "--device", "cpu"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return d, tile, pseudo


def test_commands_succeed_and_say_untrained(run) -> None:
    _, tile, pseudo = run
    assert tile.returncode == 0, tile.stderr
    assert pseudo.returncode == 0, pseudo.stderr
    assert "UNTRAINED" in pseudo.stderr and "UNTRAINED" in pseudo.stdout
    assert "Traceback" not in pseudo.stderr


def test_outputs_are_consistent(run) -> None:
    d, _, _ = run
    summary = json.loads((d / "pseudo.summary.json").read_text())
    labels = gpd.read_file(d / "pseudo.gpkg", layer="pseudolabels")
    coarse = gpd.read_file(d / "scene" / "coarse.gpkg")
    assert summary["untrained"] is True and "UNTRAINED" in summary["WARNING"]
    assert labels["untrained"].all() and (labels["model"] == "sam2.1_hiera_t").all()
    assert summary["windows_processed"] == summary["windows_planned"] == 1
    assert summary["segments_prompted"] == len(coarse) - summary["skipped_by_reason"].get("outside_raster", 0)
    assert summary["segments_labeled"] == len(labels)
    assert summary["segments_prompted"] == len(labels) + summary["skipped_by_reason"].get("empty_mask", 0)
    assert summary["seconds_in_model"] <= summary["seconds_total"]
    assert set(labels["segment_id"]) <= set(coarse["segment_id"])
    assert labels.crs.to_epsg() == 3067
    assert labels.geometry.is_valid.all()
    assert (labels.geom_type == "Polygon").all()
    with rasterio.open(d / "scene" / "ortho.tif") as src:
        bounds = shapely.box(*src.bounds)
        px = abs(src.transform.a * src.transform.e)
    assert labels.geometry.within(bounds.buffer(1e-6)).all()
    assert (labels["area"] - labels["area_px"] * px).abs().max() < 1e-9
    assert labels["sam_score"].between(-1, 2).all()
