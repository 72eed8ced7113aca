"""Real SAM2 (hiera tiny, untrained, CPU) through SAM2's own automatic mask generator, end to end.

Untrained masks mean nothing: these tests check plumbing, accounting, georeferencing bounds, and that an
untrained run says so everywhere. Quality thresholds are set to 0 so that SAM2's masks come through.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import shapely
from helpers import write_raster

from crownsam import cli
from crownsam.everything.run import COLUMNS
from crownsam.pseudolabel.sam2_model import UNTRAINED_WARNING

CROWNSAM = shutil.which("crownsam", path=str(Path(sys.executable).parent))
OPEN = ["--pred-iou-start", "0", "--pred-iou-floor", "0", "--stability-start", "0", "--stability-floor", "0"]


def check_output(out: Path, ortho: Path) -> tuple[gpd.GeoDataFrame, dict]:
    masks = gpd.read_file(out)
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    with rasterio.open(ortho) as src:
        bounds = shapely.box(*src.bounds)
        assert masks.crs.to_epsg() == src.crs.to_epsg()
    assert list(masks.columns) == [*COLUMNS, "geometry"]
    assert len(masks) == summary["objects"] >= 1
    assert masks["untrained"].all() and set(masks["model"]) == {"sam2.1_hiera_t"}
    assert masks.geometry.within(bounds).all() and masks.is_valid.all()
    assert shapely.union_all(masks.geometry.values).area == pytest.approx(masks.area.sum(), rel=1e-9)
    assert summary["untrained"] is True and summary["WARNING"] == UNTRAINED_WARNING
    assert summary["masks_from_sam2"] >= 1 and summary["seconds_in_model"] > 0
    cov = summary["coverage_per_pass"]
    assert cov and all(b >= a for a, b in itertools.pairwise(cov)) and summary["coverage"] == cov[-1]
    return masks, summary


def test_one_tile_one_pass(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ortho = write_raster(tmp_path / "ortho.tif", width=200, height=180)
    out = tmp_path / "out" / "masks.gpkg"
    argv = ["segment-everything", "--ortho", str(ortho), "--out", str(out), "--untrained", "--device", "cpu"]
    argv += [
        "--tile",
        "256",
        "--padding",
        "0",
        "--passes",
        "1",
        "--points-per-side",
        "4",
        *OPEN,
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    stdout, stderr = capfd.readouterr()
    assert len(stdout.splitlines()) == 1 and "UNTRAINED SAM2" in stdout and "1 tiles" in stdout
    assert UNTRAINED_WARNING in stderr
    _, s = check_output(out, ortho)
    assert list(s["per_tile"]) == ["r000c000"] and s["grid"]["tiles"] == 1
    assert s["per_tile"]["r000c000"]["points"] == 16
    assert sorted(p.name for p in out.parent.iterdir()) == ["masks.gpkg", "masks.summary.json"]


@pytest.mark.slow
def test_four_tiles_two_passes_with_the_installed_command(tmp_path: Path) -> None:
    ortho = write_raster(tmp_path / "ortho.tif", width=300, height=260)
    out = tmp_path / "masks.gpkg"
    proc = subprocess.run(
        [CROWNSAM, "segment-everything", "--ortho", ortho, "--out", out, "--untrained", "--device", "cpu",
         "--tile", "160", "--padding", "32", "--passes", "2", "--points-per-side", "4", *OPEN],
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and UNTRAINED_WARNING in proc.stderr
    _, s = check_output(out, ortho)
    assert s["grid"]["tiles"] == 4 and len(s["per_tile"]) == 4
    assert s["merge"]["seams"] == 6
