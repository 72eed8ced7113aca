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
    lost = {k: v for k, v in summary["skipped_by_reason"].items() if k != "outside_raster"}
    assert set(lost) <= {"empty_mask", "empty_after_exclusive"}
    assert summary["segments_prompted"] == len(labels) + sum(lost.values())
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


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Every new part on: NDVI filter, treetops from the CHM as points with the boxes, negative prompt
    calibration, and (defaults) exclusive labels and the fallback. A small scene (512 px, 13 segments,
    two of them false) keeps the decoder calls few; the window is still a full 1024 px embedding."""
    d = tmp_path_factory.mktemp("full")
    scene = generate_scene(d / "scene", size=512, seed=1).root
    proc = subprocess.run(
        [CROWNSAM, "pseudolabel", "--ortho", scene / "ortho.tif", "--segments", scene / "coarse.gpkg",
         "--out", d / "full.gpkg", "--chm", scene / "chm.tif", "--min-ndvi", "0.3",
         "--prompt", "box+point", "--negative-calibration",
         "--untrained", "--model", "sam2.1_hiera_t", "--device", "cpu", "--no-progress"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return d, proc


def test_the_whole_path_runs_on_real_sam2(full) -> None:
    d, proc = full
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "UNTRAINED" in proc.stdout
    s = json.loads((d / "full.summary.json").read_text())
    labels = gpd.read_file(d / "full.gpkg", layer="pseudolabels")
    coarse = gpd.read_file(d / "scene" / "coarse.gpkg")
    prompted = s["segments_prompted"]
    assert s["vegetation"]["dropped"] == s["skipped_by_reason"]["low_ndvi"] >= 1  # a roof
    assert s["treetop_sources"] == {"chm": prompted}
    cal = s["calibration"]
    assert cal["overlap_after_calibration"] is not None and cal["reprompts"] <= prompted
    assert (labels["negatives"] > 0).sum() <= cal["reprompts"]
    assert set(labels["prompt"]) == {"box+point"}
    # exclusive: no two labels share area; every label one valid polygon
    assert s["overlap_in_output"]["pairs"] == 0 and s["exclusive"]["pending"] is False
    assert labels.geometry.is_valid.all() and (labels.geom_type == "Polygon").all()
    # fallback: the columns and the summary agree
    assert set(labels["label_source"]) <= {"sam2", "coarse"}
    fell = labels[labels["label_source"] == "coarse"]
    assert s["fallbacks_by_reason"] == fell["fallback_reason"].value_counts().sort_index().to_dict()
    assert s["segments_labeled"] == len(labels) and set(labels["segment_id"]) <= set(coarse["segment_id"])
    assert s["settings"]["negative_calibration"] is True and s["untrained"] is True
    assert set(s["seconds_by_stage"]) == {
        "read",
        "embed",
        "first_pass",
        "calibration",
        "postprocess",
        "exclusive",
    }
