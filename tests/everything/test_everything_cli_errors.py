"""Bad input for ``segment-everything``, ``merge-everything`` and ``add-missed``: one stderr line
``crownsam: error: ...``, exit code 2, no traceback, no output (nothing new in the output folder, an
older output byte-identical), and SAM2 never loaded before the inputs are checked."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import files_in, pixel_box, truncate_copy, write_random_bytes, write_raster, write_segments

from crownsam import cli
from crownsam.pseudolabel import sam2_model

OLD_BYTES = b"an older output that a failed run must leave alone\n"


@dataclass
class Case:
    """One bad invocation: its arguments (``{d}`` = the case's input folder), the output name, and what the
    error line must contain."""

    argv: list[str]
    problem: str
    named: str = ""  # the file the error names ("" when it names an option)
    out_name: str = "masks.gpkg"
    build: Callable[[Path], None] = lambda d: None
    extra: list[str] = field(default_factory=list)


def inputs(d: Path) -> None:
    """A good raster (6 bands, EPSG:3067, 600 x 500), labels and masks (a few boxes), in ``d``."""
    write_raster(d / "ortho.tif")
    write_raster(d / "chm.tif", bands=1, dtype="float32")
    write_segments(d / "labels.gpkg", [pixel_box(100, 100, 160, 160), pixel_box(300, 200, 380, 260)])
    write_segments(d / "masks.gpkg", [pixel_box(420, 300, 480, 360)], ids=())


def seg(*extra: str, ortho: str = "{d}/ortho.tif") -> list[str]:
    return ["segment-everything", "--ortho", ortho, "--untrained", "--device", "cpu", "--no-progress", *extra]


def add(*extra: str, labels: str = "{d}/labels.gpkg", masks: str = "{d}/masks.gpkg", ortho="{d}/ortho.tif"):
    """add-missed on the test rasters (no band descriptions: the NDVI bands are given, later ones win)."""
    bands = ["--red-band", "3", "--nir-band", "4"]
    return ["add-missed", "--labels", labels, "--masks", masks, "--ortho", ortho, *bands, *extra]


def two_band(d: Path) -> None:
    write_raster(d / "two.tif", bands=2)


def no_crs(d: Path) -> None:
    write_raster(d / "nocrs.tif", crs=None)
    write_segments(d / "nocrs.gpkg", [pixel_box(0, 0, 50, 50)], crs=None)


def corrupt(d: Path) -> None:
    write_random_bytes(d / "random.tif")
    truncate_copy(d / "ortho.tif", d / "truncated.tif", 0.5)


def geographic(d: Path) -> None:
    write_raster(d / "wgs84.tif", crs="EPSG:4326", gsd=1e-6, origin=(24.0, 60.0))


def empty_labels(d: Path) -> None:
    write_segments(d / "empty.gpkg", [])


def unfinished_shard(d: Path) -> None:
    (d / "shard0" / "tiles").mkdir(parents=True)


CASES: dict[str, Case] = {
    # segment-everything
    "seg-missing-raster": Case(seg(ortho="{d}/nope.tif"), "raster not found", "{d}/nope.tif"),
    "seg-random-bytes": Case(
        seg(ortho="{d}/random.tif"), "not a readable raster", "{d}/random.tif", build=corrupt
    ),
    "seg-truncated": Case(
        seg(ortho="{d}/truncated.tif"), "truncated or corrupt", "{d}/truncated.tif", build=corrupt
    ),
    "seg-no-crs": Case(seg(ortho="{d}/nocrs.tif"), "raster has no CRS", "{d}/nocrs.tif", build=no_crs),
    "seg-two-bands": Case(seg(ortho="{d}/two.tif"), "has 2 band(s)", "{d}/two.tif", build=two_band),
    "seg-band-range": Case(seg("--rgb-bands", "3,2,9"), "band 9 out of range", "{d}/ortho.tif"),
    "seg-not-gpkg": Case(seg(), "output must be a GeoPackage", "masks.shp", out_name="masks.shp"),
    "seg-shard-gpkg": Case(seg("--shard", "0/2"), "with --shard the output is a folder", "masks.gpkg"),
    "seg-padding": Case(seg("--tile", "256", "--padding", "300"), "--padding: must be at most --tile (256)"),
    "seg-tile": Case(seg("--tile", "10"), "--tile must be in [64, 8192], got 10"),
    "seg-passes": Case(seg("--passes", "0"), "--passes must be in [1, 100], got 0"),
    "seg-floor": Case(seg("--pred-iou-floor", "0.95"), "--pred-iou-floor: must be at most the start value"),
    "seg-target": Case(seg("--target-coverage", "0"), "--target-coverage must be in (0, 1]"),
    "seg-checkpoint": Case(
        ["segment-everything", "--ortho", "{d}/ortho.tif", "--checkpoint", "{d}/nope.pt", "--device", "cpu"],
        "SAM2 checkpoint not found",
        "{d}/nope.pt",
    ),
    # merge-everything
    "merge-unfinished": Case(
        ["merge-everything", "--inputs", "{d}/shard0"],
        "not a finished segment-everything shard",
        "{d}/shard0",
        build=unfinished_shard,
    ),
    "merge-not-gpkg": Case(
        ["merge-everything", "--inputs", "{d}"], "output must be a GeoPackage", out_name="m.tif"
    ),
    # add-missed
    "add-missing-labels": Case(add(labels="{d}/nope.gpkg"), "labels file not found", "{d}/nope.gpkg"),
    "add-missing-masks": Case(add(masks="{d}/nope.gpkg"), "masks file not found", "{d}/nope.gpkg"),
    "add-masks-no-crs": Case(
        add(masks="{d}/nocrs.gpkg"), "masks have no CRS", "{d}/nocrs.gpkg", build=no_crs
    ),
    "add-empty-labels": Case(
        add(labels="{d}/empty.gpkg"), "empty (no features)", "{d}/empty.gpkg", build=empty_labels
    ),
    "add-missing-ortho": Case(add(ortho="{d}/nope.tif"), "raster not found", "{d}/nope.tif"),
    "add-geographic": Case(
        add(ortho="{d}/wgs84.tif"), "CRS is geographic", "{d}/wgs84.tif", build=geographic
    ),
    "add-nir-range": Case(add("--nir-band", "9"), "band 9 out of range", "{d}/ortho.tif"),
    "add-same-bands": Case(add("--nir-band", "3"), "--red-band and --nir-band are both 3"),
    "add-no-band-names": Case(
        [
            "add-missed",
            "--labels",
            "{d}/labels.gpkg",
            "--masks",
            "{d}/masks.gpkg",
            "--ortho",
            "{d}/ortho.tif",
        ],
        "no band is described as red",
        "{d}/ortho.tif",
    ),
    "add-area": Case(add("--max-area", "0.5"), "--max-area: must exceed --min-area"),
    "add-missing-chm": Case(add("--chm", "{d}/nope.tif"), "CHM not found", "{d}/nope.tif"),
    "add-chm-no-crs": Case(add("--chm", "{d}/nocrs.tif"), "raster has no CRS", "{d}/nocrs.tif", build=no_crs),
    "add-not-gpkg": Case(add(), "output must be a GeoPackage", "out.shp", out_name="out.shp"),
}


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("SAM2 was loaded before the inputs were validated")

    monkeypatch.setattr(sam2_model, "build_sam2_model", refuse)


def run_failing(argv: list[str], capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    caplog.clear()
    rc = cli.main(argv)
    out, err = capfd.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2_no_output(
    name: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    case = CASES[name]
    if name != "seg-checkpoint":
        request.getfixturevalue("no_model")
    d = tmp_path / "in"
    d.mkdir()
    inputs(d)
    case.build(d)
    folder = tmp_path / "out"
    target = folder / case.out_name
    argv = [a.replace("{d}", str(d)) for a in case.argv] + ["--out", str(target)]
    line = run_failing(argv, capfd, caplog)
    assert line.startswith("crownsam: error: "), line
    assert case.problem in line, line
    assert case.named.replace("{d}", str(d)) in line, line
    assert not folder.exists() or files_in(folder) == []

    folder.mkdir(exist_ok=True)
    target.write_bytes(OLD_BYTES)
    assert run_failing(argv, capfd, caplog) == line
    assert files_in(folder) == [target.name] and target.read_bytes() == OLD_BYTES


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (seg("--shard", "5/2"), "argument --shard: shard '5/2': need 0 <= I < N"),
        (seg("--model", "sam3"), "argument --model: invalid choice"),
        (seg("--tile", "big"), "argument --tile: invalid int value"),
        (add("--min-ndvi", "x"), "argument --min-ndvi: invalid float value"),
    ],
)
def test_bad_argument_syntax_is_one_argparse_line(
    argv: list[str], message: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], no_model: None
) -> None:
    argv = [a.replace("{d}", str(tmp_path)) for a in argv] + ["--out", str(tmp_path / "out" / "masks.gpkg")]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"crownsam: error: {argv[0]}: ") and message in err, err
    assert not (tmp_path / "out").exists()
