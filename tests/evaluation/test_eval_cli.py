"""``crownsam evaluate`` on small files: outputs, messages, and the bad-input matrix.

Bad input gives one stderr line ``crownsam: error: <file>: <problem>``, exit code 2, and no output (an
older output set is left byte-identical). Problems that are not errors (labels in another CRS, invalid
geometries, crowns without any overlap, an empty label file) give warning lines and a full output set.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from helpers import CRS, bowtie, files_in, pixel_box, write_random_bytes, write_raster, write_segments
from PIL import Image

from crownsam import cli
from crownsam.evaluation.api import OUTPUT_FILES, PER_TREE_COLUMNS
from crownsam.evaluation.report import NO_ORTHO_BG, read_ortho_window

# Crowns and labels as pixel boxes of a 600 x 500 px raster written by helpers.write_raster.
CROWNS = [(60, 60, 140, 140), (200, 60, 300, 160), (380, 80, 460, 160), (100, 260, 200, 360)]
GOOD = [(62, 60, 142, 140), (204, 60, 304, 160), (380, 84, 460, 164), (100, 262, 200, 362)]
POOR = [(100, 60, 180, 140), (240, 90, 340, 190), (410, 80, 490, 160), (150, 260, 250, 360)]
AREA = [(20, 20, 520, 420)]


def boxes(pixels) -> list:
    return [pixel_box(*b) for b in pixels]


def write_manual(path: Path, geoms, crs: str = CRS) -> Path:
    gdf = gpd.GeoDataFrame({"tree_id": np.arange(101, 101 + len(geoms))}, geometry=list(geoms), crs=CRS)
    gdf.to_crs(crs).to_file(path, layer="manual")
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "in"
    d.mkdir()
    return {
        "manual": write_manual(d / "manual.gpkg", boxes(CROWNS)),
        "coarse": write_segments(d / "coarse.gpkg", boxes(POOR)),
        "pseudo": write_segments(d / "pseudo.gpkg", boxes(GOOD)),
        "area": write_segments(d / "area.gpkg", boxes(AREA), ids=()),
        "ortho": write_raster(d / "ortho.tif"),
    }


def run(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(["evaluate", *map(str, args)])
    except SystemExit as exc:  # usage errors exit from argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def base_args(inputs, out: Path, *extra) -> list:
    return [
        "--manual",
        inputs["manual"],
        "--labels",
        f"coarse={inputs['coarse']}",
        "--labels",
        f"pseudo={inputs['pseudo']}",
        "--area",
        inputs["area"],
        "--out",
        out,
        "--n-boot",
        "200",
        *extra,
    ]


def strict_json(path: Path) -> dict:
    def no_nan(c: str):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def img_sources(html: str) -> list[bytes]:
    import base64
    import re

    return [base64.b64decode(m) for m in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html)]


def bg_fraction(png: bytes, rgb_hex: str) -> float:
    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    target = np.array([int(rgb_hex[i : i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(im - target).sum(axis=2) <= 6).mean())


def test_evaluate_writes_the_output_set(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(
        base_args(inputs, out, "--ortho", inputs["ortho"], "--banner", "UNTRAINED"), capsys
    )
    assert code == 0, err
    assert files_in(out) == sorted(OUTPUT_FILES.values())  # and no temporary files
    assert "evaluated 4 manual crowns" in stdout and "pseudo-coarse +" in stdout
    assert len(stdout.strip().splitlines()) == 2
    per_tree = pd.read_csv(out / "per_tree.csv")
    assert tuple(per_tree.columns) == PER_TREE_COLUMNS and len(per_tree) == 8
    assert per_tree["tree_id"].tolist() == [101, 102, 103, 104] * 2
    m = strict_json(out / "metrics.json")
    assert m["n_trees"] == 4
    assert m["jaccard_mean/pseudo"] > 0.9 > 0.6 > m["jaccard_mean/coarse"]
    assert m["paired_diff_mean/pseudo-coarse"] == pytest.approx(
        m["jaccard_mean/pseudo"] - m["jaccard_mean/coarse"]
    )
    html = (out / "report.html").read_text()
    assert "UNTRAINED" in html and 'class="banner"' in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    pngs = img_sources(html)
    assert len(pngs) == 4 and all(p.startswith(b"\x89PNG") and len(p) > 1000 for p in pngs)
    # The maps (last two images) show the orthophoto, not the plain background.
    assert all(bg_fraction(p, NO_ORTHO_BG) < 0.01 for p in pngs[-2:])


def test_without_ortho_the_maps_are_outlines_only(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = run(base_args(inputs, out), capsys)
    assert code == 0, err
    pngs = img_sources((out / "report.html").read_text())
    assert all(bg_fraction(p, NO_ORTHO_BG) > 0.3 for p in pngs[-2:])


def test_ortho_window_is_read_stretched_and_decimated(inputs) -> None:
    x0, y0, _, _ = pixel_box(100, 300, 100, 300).bounds  # the map point at pixel (100, 300)
    x1, _, _, y1 = pixel_box(400, 100, 400, 100).bounds  # pixel (400, 100)
    rgb, extent, crs = read_ortho_window(
        str(inputs["ortho"]), (x0 + 0.01, y0 + 0.01, x1 - 0.01, y1 - 0.01), (3, 2, 1)
    )
    assert rgb.shape == (200, 300, 3) and rgb.dtype == np.uint8
    assert extent == pytest.approx((x0, x1, y0, y1))  # whole pixels covering the bounds
    assert rgb.min() == 0 and rgb.max() == 255 and crs.to_epsg(min_confidence=70) == 3067
    small, _, _ = read_ortho_window(str(inputs["ortho"]), (x0, y0, x1, y1), (3, 2, 1), max_px=60)
    assert small.shape == (40, 60, 3)
    outside = read_ortho_window(str(inputs["ortho"]), (0, 0, 10, 10), (3, 2, 1))
    assert isinstance(outside, str) and "does not cover" in outside


def test_problems_that_are_not_errors(inputs, tmp_path, capsys) -> None:
    d = inputs["manual"].parent
    manual = write_manual(d / "m2.gpkg", [*boxes(CROWNS), pixel_box(560, 440, 590, 470)], crs="EPSG:4326")
    invalid = write_segments(d / "invalid.gpkg", [*boxes(GOOD), bowtie(300, 300)])
    empty = write_segments(d / "empty.gpkg", [])
    out = tmp_path / "out"
    args = ["--manual", manual, "--labels", f"pseudo={invalid}", "--labels", f"none={empty}", "--out", out]
    code, _, err = run(args, capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert all(line.startswith("crownsam: WARNING: ") for line in lines)
    assert any("geographic CRS EPSG:4326" in line for line in lines)
    assert any("invalid.gpkg (pseudo): 1 invalid geometries repaired" in line for line in lines)
    assert any("empty.gpkg (none): no features" in line for line in lines)
    assert any("1 of 5 manual crowns overlap no label" in line for line in lines)
    m = strict_json(out / "metrics.json")
    assert m["n_trees"] == 5 and m["jaccard_mean/none"] == 0 and m["precision/none"] is None
    assert m["paired_diff_mean/none-pseudo"] < 0


def test_labels_in_another_crs_are_reprojected(inputs, tmp_path, capsys) -> None:
    d = inputs["manual"].parent
    gpd.read_file(inputs["pseudo"]).to_crs("EPSG:4326").to_file(d / "pseudo4326.gpkg")
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert (
        run(["--manual", inputs["manual"], "--labels", f"p={inputs['pseudo']}", "--out", out_a], capsys)[0]
        == 0
    )
    code, _, err = run(
        ["--manual", inputs["manual"], "--labels", f"p={d / 'pseudo4326.gpkg'}", "--out", out_b], capsys
    )
    assert code == 0 and "reprojected from EPSG:4326 to EPSG:3067" in err
    a, b = pd.read_csv(out_a / "per_tree.csv"), pd.read_csv(out_b / "per_tree.csv")
    np.testing.assert_allclose(a["jaccard"], b["jaccard"], atol=1e-6)


OLD = b"an older output that a failed run must leave alone\n"


def bad_cases(inputs: dict[str, Path], tmp: Path) -> dict[str, tuple[list, str]]:
    d = inputs["manual"].parent
    far_area = write_segments(d / "far.gpkg", [pixel_box(5000, 5000, 5100, 5100)], ids=())
    two_band = write_raster(d / "two.tif", bands=2)
    junk = write_random_bytes(d / "junk.gpkg")
    empty_manual = write_segments(d / "empty_manual.gpkg", [])
    no_crs = write_segments(d / "nocrs.gpkg", boxes(GOOD), crs=None)
    m, c = inputs["manual"], f"coarse={inputs['coarse']}"
    return {
        "missing manual": (
            ["--manual", d / "nope.gpkg", "--labels", c],
            "nope.gpkg: manual crowns file not found",
        ),
        "empty manual": (
            ["--manual", empty_manual, "--labels", c],
            "empty_manual.gpkg: manual crowns file is empty",
        ),
        "junk labels": (["--manual", m, "--labels", f"x={junk}"], "junk.gpkg: not a readable vector file"),
        "missing labels": (
            ["--manual", m, "--labels", f"x={d / 'no.gpkg'}"],
            "no.gpkg: labels (x) file not found",
        ),
        "labels without CRS": (
            ["--manual", m, "--labels", f"x={no_crs}"],
            "nocrs.gpkg: labels (x) have no CRS",
        ),
        "area without crowns": (
            ["--manual", m, "--labels", c, "--area", far_area],
            "far.gpkg: contains none of the 4 manual crowns",
        ),
        "two-band ortho": (["--manual", m, "--labels", c, "--ortho", two_band], "two.tif: has 2 band(s)"),
        "missing ortho": (
            ["--manual", m, "--labels", c, "--ortho", d / "no.tif"],
            "no.tif: raster not found",
        ),
        "duplicate name": (
            ["--manual", m, "--labels", c, "--labels", c],
            "label set name 'coarse' given twice",
        ),
        "bad name": (["--manual", m, "--labels", f"a/b={inputs['coarse']}"], "label set name 'a/b'"),
        "no equals sign": (["--manual", m, "--labels", str(inputs["coarse"])], "must look like NAME=PATH"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing manual",
        "empty manual",
        "junk labels",
        "missing labels",
        "labels without CRS",
        "area without crowns",
        "two-band ortho",
        "missing ortho",
        "duplicate name",
        "bad name",
        "no equals sign",
    ],
)
def test_bad_input_one_line_exit_2_no_output(inputs, tmp_path, capsys, case) -> None:
    args, expected = bad_cases(inputs, tmp_path)[case]
    out = tmp_path / "out"
    out.mkdir()
    for name in OUTPUT_FILES.values():
        (out / name).write_bytes(OLD)
    code, stdout, err = run([*args, "--out", out], capsys)
    assert code == 2
    assert stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crownsam: error: "), err
    assert expected in lines[0]
    assert files_in(out) == sorted(OUTPUT_FILES.values())
    assert all((out / name).read_bytes() == OLD for name in OUTPUT_FILES.values())


def test_out_is_a_file(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "file"
    out.write_bytes(OLD)
    code, _, err = run(
        ["--manual", inputs["manual"], "--labels", f"c={inputs['coarse']}", "--out", out], capsys
    )
    assert code == 2 and f"{out}: is a file; --out needs a folder" in err and out.read_bytes() == OLD


def test_metrics_are_finite_or_null(inputs, tmp_path, capsys) -> None:
    """A single tree: SD is undefined (null in JSON, not NaN)."""
    d = inputs["manual"].parent
    one = write_manual(d / "one.gpkg", boxes(CROWNS[:1]))
    out = tmp_path / "out"
    assert run(["--manual", one, "--labels", f"c={inputs['pseudo']}", "--out", out], capsys)[0] == 0
    m = strict_json(out / "metrics.json")
    assert m["jaccard_std/c"] is None
    assert all(v is None or math.isfinite(v) for v in m.values())
