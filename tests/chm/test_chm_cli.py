"""``crownsam segment-chm``: output file and summary, bad input as one line with exit 2 and no output,
``gs://`` paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from helpers import files_in, truncate_copy, write_random_bytes

from crownsam.chm import ChmParams, segment_chm_file
from crownsam.chm.blocks import COLUMNS, LAYER, segment_chm
from crownsam.cli import main
from crownsam.common.errors import InputError


def write_chm(path: Path, data: np.ndarray, *, crs: str | None = "EPSG:3067", res: float = 0.2, **kw) -> Path:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": "float32",
        "transform": rasterio.Affine(res, 0.0, 385000.0, 0.0, -res, 6672000.0),
        "nodata": -9999.0,
        **kw,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(np.float32), 1)
    return path


def test_cli_writes_crowns_and_summary(
    chm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, summary = tmp_path / "coarse.gpkg", tmp_path / "summary.json"
    rc = main(["segment-chm", "--chm", str(chm_path), "--out", str(out), "--summary", str(summary)])
    assert rc == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    assert len(stdout) == 1 and "crowns" in stdout[0] and str(out) in stdout[0]
    g = gpd.read_file(out, layer=LAYER)
    assert list(g.columns) == [*COLUMNS, "geometry"]
    assert g.crs.to_epsg() == 3067 and set(g.geom_type) == {"Polygon"}
    assert g["segment_id"].tolist() == list(range(1, len(g) + 1))
    s = json.loads(summary.read_text())
    assert s["crowns"] == len(g) and s["treetops"] == len(g) + sum(s["dropped"].values())
    assert "too_large" in s["drop_rule"] and s["params"]["window"] == "r(h) = 0.2 + 0.03 h m"
    assert files_in(tmp_path) == ["coarse.gpkg", "summary.json"]


def test_file_equals_in_memory_and_block_streaming(chm_path: Path, tmp_path: Path) -> None:
    ref, _ = segment_chm(chm_path)
    s = segment_chm_file(str(chm_path), str(tmp_path / "a.gpkg"), block=128, overlap=48)
    got = gpd.read_file(tmp_path / "a.gpkg")
    assert s["blocks"] == 16 and s["crowns"] == len(ref) == len(got)
    for col in COLUMNS:
        np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy())
    assert got.geometry.geom_equals_exact(ref.geometry, tolerance=1e-6).all()


def test_cli_options_reach_the_library(chm_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "fixed.gpkg"
    argv = ["segment-chm", "--chm", str(chm_path), "--out", str(out), "--min-distance", "3"]
    argv += [
        "--smooth",
        "0.5",
        "--min-height",
        "5",
        "--min-prominence",
        "0",
        "--block",
        "200",
        "--overlap",
        "64",
    ]
    assert main(argv) == 0
    g = gpd.read_file(out)
    params = ChmParams(min_height=5.0, smooth=0.5, min_distance=3.0, min_prominence=0.0)
    ref, s = segment_chm(chm_path, params=params)
    assert s["params"]["window"] == "fixed radius 3 px" and len(g) == len(ref)
    assert (g["top_height_m"] >= 5.0).all()


def test_ground_only_chm_gives_an_empty_layer(tmp_path: Path) -> None:
    chm = write_chm(tmp_path / "flat.tif", np.full((100, 120), 0.05))
    s = segment_chm_file(str(chm), str(tmp_path / "out.gpkg"))
    assert s["crowns"] == 0 and s["valid_pixels"] == 12000
    assert len(gpd.read_file(tmp_path / "out.gpkg")) == 0


def bad_cases(tmp: Path, good: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (extra CLI arguments, a fragment of the expected message)."""
    ok = np.full((80, 80), 10.0)
    reflectances = np.random.default_rng(0).integers(300, 9000, (80, 80))  # a uint16 spectral band
    nodata = write_chm(tmp / "nodata.tif", np.full((80, 80), -9999.0))
    return {
        "missing": (["--chm", str(tmp / "nope.tif")], "not found"),
        "folder": (["--chm", str(tmp)], "folder"),
        "corrupt": (["--chm", str(write_random_bytes(tmp / "junk.tif"))], "not a readable raster"),
        "truncated": (["--chm", str(truncate_copy(good, tmp / "cut.tif", 0.3))], "raster"),
        "no_crs": (["--chm", str(write_chm(tmp / "nocrs.tif", ok, crs=None))], "no CRS"),
        "geographic": (
            ["--chm", str(write_chm(tmp / "geo.tif", ok, crs="EPSG:4326", res=1e-5))],
            "projected",
        ),
        "all_nodata": (["--chm", str(nodata)], "no valid pixels"),
        "negative_height": (["--chm", str(good), "--min-height", "-2"], "--min-height"),
        "absurd_height": (["--chm", str(good), "--min-height", "1000"], "--min-height"),
        "negative_smooth": (["--chm", str(good), "--smooth", "-1"], "--smooth"),
        "zero_distance": (["--chm", str(good), "--min-distance", "0"], "--min-distance"),
        "absurd_window": (["--chm", str(good), "--window-from-height", "50,3"], "--window-from-height"),
        "negative_window": (["--chm", str(good), "--window-from-height=-1,0.1"], "--window-from-height"),
        "window_syntax": (["--chm", str(good), "--window-from-height", "1"], "A,B"),
        "both_windows": (
            ["--chm", str(good), "--min-distance", "3", "--window-from-height", "0.2,0.03"],
            "not allowed",
        ),
        "tiny_overlap": (["--chm", str(good), "--block", "128", "--overlap", "8"], "--overlap"),
        "tiny_block": (["--chm", str(good), "--block", "16"], "--block"),
        "negative_prominence": (["--chm", str(good), "--min-prominence", "-1"], "--min-prominence"),
        "all_zeros": (
            ["--chm", str(write_chm(tmp / "zeros.tif", np.zeros((80, 80))))],
            "no height above 0 m",
        ),
        "three_bands": (["--chm", str(write_bands(tmp / "rgb.tif", ok, 3))], "has 3 bands"),
        "reflectances": (
            ["--chm", str(write_chm(tmp / "refl.tif", reflectances, dtype="uint16", nodata=0))],
            "not a CHM in metres",
        ),
        "centimetres": (["--chm", str(write_chm(tmp / "cm.tif", ok * 100))], "above 150 m"),
    }


def write_bands(path: Path, data: np.ndarray, count: int) -> Path:
    """A multi-band raster (an orthophoto, not a CHM)."""
    write_chm(path, data, count=count)
    with rasterio.open(path, "r+") as dst:
        for b in range(1, count + 1):
            dst.write(data.astype(np.float32), b)
    return path


CASES = [
    "missing", "folder", "corrupt", "truncated", "no_crs", "geographic", "all_nodata", "negative_height",
    "absurd_height", "negative_smooth", "zero_distance", "absurd_window", "negative_window", "window_syntax",
    "both_windows", "tiny_overlap", "tiny_block", "negative_prominence", "all_zeros", "three_bands",
    "reflectances", "centimetres",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_no_output(
    case: str, chm_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = Path(shutil.copy(chm_path, inputs / "chm.tif"))
    args, fragment = bad_cases(inputs, good)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    old = out_dir / "coarse.gpkg"
    old.write_bytes(b"an older output")  # must survive a failed run untouched
    try:
        rc = main(["segment-chm", "--out", str(old), *args])
    except SystemExit as exc:  # argparse's own errors (syntax, exclusive options)
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("crownsam: error: ") and fragment in err[0], err
    assert files_in(out_dir) == ["coarse.gpkg"] and old.read_bytes() == b"an older output"


def test_library_rejects_both_windows(chm_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not both"):
        segment_chm_file(
            str(chm_path), str(tmp_path / "x.gpkg"), min_distance=3, window_from_height=(0.2, 0.03)
        )
    assert files_in(tmp_path) == []


def test_gs_paths(chm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.gcs_emulator import gcs_emulator
    from google.cloud import storage as gcs

    from crownsam.common import storage

    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path / "cache"))
    with gcs_emulator():
        gcs.Client.create_anonymous_client().create_bucket("flights")
        storage.upload(chm_path, "gs://flights/f1/chm.tif")
        s = segment_chm_file("gs://flights/f1/chm.tif", "gs://flights/f1/coarse.gpkg")
        local = storage.fetch("gs://flights/f1/coarse.gpkg")
        assert len(gpd.read_file(local)) == s["crowns"] > 0
