"""The bad-input matrix for ``crownsam tile`` and ``crownsam pseudolabel``.

Every bad input must give exactly one stderr line ``crownsam: error: <file>: <problem>``, exit code 2,
no traceback, and no output: nothing new in the output folder (no temporary files either), and an older
output left byte-identical. Input problems must be found before SAM2 is loaded. A segments CRS other than
the raster's is not an error (reprojected, one warning line), nor are some segments outside the raster
(skipped, counted in the summary), nor bad geometries with ``--fix-geometries``.

Most cases call ``crownsam.cli.main`` in-process (fast); a few run the real ``crownsam`` executable.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio

from crownsam import cli
from crownsam.pseudolabel import sam2_model
from crownsam.tiling.plan import plan_from_files

try:
    from .helpers import (
        bowtie,
        files_in,
        pixel_box,
        truncate_copy,
        two_part,
        write_random_bytes,
        write_raster,
        write_segments,
    )
except ImportError:  # tests/ collected without __init__.py files (rootdir-relative imports)
    from helpers import (
        bowtie,
        files_in,
        pixel_box,
        truncate_copy,
        two_part,
        write_random_bytes,
        write_raster,
        write_segments,
    )

CROWNSAM = Path(sys.executable).with_name("crownsam")
OLD_BYTES = b"an older output that a failed run must leave alone\n"
# Three crowns well inside the default 600 x 500 px raster (pixel boxes), and two far outside it.
INSIDE = [(100, 100, 160, 160), (300, 200, 380, 260), (450, 350, 520, 420)]
OUTSIDE = [(10_000, 10_000, 10_060, 10_060), (-500, -500, -400, -400)]


@dataclass
class Inputs:
    """One invocation's inputs: files, extra arguments, the output name and the name the error must show."""

    ortho: Path
    segments: Path
    named: str = ""  # the file or URI the error line must name
    extra: list[str] = field(default_factory=list)
    out_name: str | None = None  # default: labels.gpkg (pseudolabel) or plan.json (tile)


def good_raster(d: Path) -> Path:
    return write_raster(d / "ortho.tif")


def good_segments(d: Path, name: str = "segments.gpkg") -> Path:
    return write_segments(d / name, [pixel_box(*b) for b in INSIDE])


def closed_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- cases
# Each builder writes its inputs into a folder and returns them; the string is the expected problem.


def missing_raster(d: Path) -> Inputs:
    return Inputs(d / "no-such-ortho.tif", good_segments(d), named=str(d / "no-such-ortho.tif"))


def random_bytes_raster(d: Path) -> Inputs:
    ortho = write_random_bytes(d / "random.tif")
    return Inputs(ortho, good_segments(d), named=str(ortho))


def truncated_raster(d: Path) -> Inputs:
    ortho = truncate_copy(good_raster(d), d / "truncated.tif", 0.5)
    return Inputs(ortho, good_segments(d), named=str(ortho))


def two_band_raster(d: Path) -> Inputs:
    ortho = write_raster(d / "two-bands.tif", bands=2)
    return Inputs(ortho, good_segments(d), named=str(ortho))


def raster_without_crs(d: Path) -> Inputs:
    ortho = write_raster(d / "no-crs.tif", crs=None)
    return Inputs(ortho, good_segments(d), named=str(ortho))


def band_out_of_range(d: Path) -> Inputs:
    ortho = good_raster(d)
    return Inputs(ortho, good_segments(d), named=str(ortho), extra=["--rgb-bands", "3,2,9"])


def missing_segments(d: Path) -> Inputs:
    return Inputs(good_raster(d), d / "no-such.gpkg", named=str(d / "no-such.gpkg"))


def segments_without_crs(d: Path) -> Inputs:
    seg = write_segments(d / "no-crs.gpkg", [pixel_box(*b) for b in INSIDE], crs=None)
    return Inputs(good_raster(d), seg, named=str(seg))


def empty_segments(d: Path) -> Inputs:
    seg = write_segments(d / "empty.gpkg", [])
    return Inputs(good_raster(d), seg, named=str(seg))


def with_ids(d: Path, name: str, ids: list[object]) -> Inputs:
    """Good segments whose ``segment_id`` column holds ``ids`` (as a GIS tool might write them)."""
    seg = good_segments(d, name)
    gdf = gpd.read_file(seg)
    gdf["segment_id"] = ids
    gdf.to_file(seg, layer="segments", driver="GPKG")
    return Inputs(good_raster(d), seg, named=str(seg))


def text_ids(d: Path) -> Inputs:
    return with_ids(d, "text-ids.gpkg", ["a", "b", "c"])


def fractional_ids(d: Path) -> Inputs:
    return with_ids(d, "fraction-ids.gpkg", [1.0, 2.5, 3.0])


def duplicate_ids(d: Path) -> Inputs:
    return with_ids(d, "duplicate-ids.gpkg", [1, 2, 2])


def invalid_geometry(d: Path) -> Inputs:
    seg = write_segments(d / "bowtie.gpkg", [pixel_box(*INSIDE[0]), bowtie(300, 200)])
    return Inputs(good_raster(d), seg, named=str(seg))


def multipart_geometry(d: Path) -> Inputs:
    # GPKG stores this mixed layer as all-MultiPolygon: only the real two-part one may be counted.
    seg = write_segments(d / "multi.gpkg", [pixel_box(*INSIDE[0]), two_part(300, 200)])
    return Inputs(good_raster(d), seg, named=str(seg))


def all_outside(d: Path) -> Inputs:
    seg = write_segments(d / "outside.gpkg", [pixel_box(*b) for b in OUTSIDE])
    return Inputs(good_raster(d), seg, named=str(seg))


def missing_checkpoint(d: Path) -> Inputs:
    ckpt = d / "no-such-sam2.pt"
    return Inputs(good_raster(d), good_segments(d), named=str(ckpt), extra=["--checkpoint", str(ckpt)])


def unreachable_checkpoint(d: Path) -> Inputs:
    url = f"http://127.0.0.1:{closed_port()}/x.pt"
    extra = ["--checkpoint", url, "--cache-dir", str(d / "cache")]
    return Inputs(good_raster(d), good_segments(d), named=url, extra=extra)


def not_a_checkpoint(d: Path) -> Inputs:
    ckpt = write_random_bytes(d / "random.pt")
    return Inputs(good_raster(d), good_segments(d), named=str(ckpt), extra=["--checkpoint", str(ckpt)])


def plan_for_other_segments(d: Path) -> Inputs:
    ortho, other = good_raster(d), good_segments(d, "other.gpkg")
    plan_path = d / "plan.json"
    plan_from_files(str(ortho), str(other))[0].save(plan_path)
    seg = write_segments(d / "segments.gpkg", [pixel_box(*b) for b in INSIDE[:2]])
    return Inputs(ortho, seg, named=str(plan_path), extra=["--plan", str(plan_path)])


def output_not_gpkg(d: Path) -> Inputs:
    return Inputs(good_raster(d), good_segments(d), named="labels.shp", out_name="labels.shp")


def ndvi_band_out_of_range(d: Path) -> Inputs:
    ortho = good_raster(d)
    extra = ["--min-ndvi", "0.3", "--red-band", "3", "--nir-band", "9"]
    return Inputs(ortho, good_segments(d), named=str(ortho), extra=extra)


def raster_without_nir(d: Path) -> Inputs:
    """Bands described blue, green, red: no NIR band for --min-ndvi."""
    ortho = write_raster(d / "rgb.tif", bands=3)
    with rasterio.open(ortho, "r+") as dst:
        for i, name in enumerate(("blue", "green", "red"), start=1):
            dst.set_band_description(i, name)
    return Inputs(ortho, good_segments(d), named=str(ortho), extra=["--min-ndvi", "0.3"])


def treetops_outside_segment(d: Path) -> Inputs:
    seg = good_segments(d, "treetops.gpkg")
    gdf = gpd.read_file(seg)
    gdf["treetop_x"] = gdf.geometry.centroid.x
    gdf["treetop_y"] = gdf.geometry.centroid.y
    gdf.loc[1, "treetop_x"] += 50.0  # 50 m east of its 2 m segment
    gdf.to_file(seg, layer="segments", driver="GPKG")
    return Inputs(good_raster(d), seg, named=str(seg), extra=["--prompt", "point"])


def bad_option(*extra: str) -> Callable[[Path], Inputs]:
    """A valid run with one bad option value: the error names the (first) option."""

    def build(d: Path) -> Inputs:
        return Inputs(good_raster(d), good_segments(d), named=extra[0], extra=list(extra))

    build.__name__ = "bad" + "_".join(e.lstrip("-").replace("-", "_") for e in extra[::2])
    return build


BuildCase = Callable[[Path], Inputs]
SHARED: list[tuple[BuildCase, str]] = [
    (missing_raster, "raster not found"),
    (random_bytes_raster, "not a readable raster"),
    (truncated_raster, "truncated or corrupt raster"),
    (two_band_raster, "has 2 band(s)"),
    (raster_without_crs, "raster has no CRS"),
    (band_out_of_range, "band 9 out of range"),
    (missing_segments, "segments file not found"),
    (segments_without_crs, "segments have no CRS"),
    (empty_segments, "empty (no features)"),
    (text_ids, "column segment_id must hold integers; found 'a' (not a number)"),
    (fractional_ids, "column segment_id must hold whole numbers; found 2.5"),
    (duplicate_ids, "segment_id values must be unique; 2 appears more than once"),
    (invalid_geometry, "1 invalid geometries"),
    (multipart_geometry, "1 multi-part geometries"),
    (all_outside, "no segment can be prompted"),
]
PSEUDOLABEL_ONLY: list[tuple[BuildCase, str]] = [
    (missing_checkpoint, "SAM2 checkpoint not found"),
    (unreachable_checkpoint, "connection refused"),
    (not_a_checkpoint, "not a readable PyTorch checkpoint"),
    (plan_for_other_segments, "plan was made for another segments file"),
    (output_not_gpkg, "output must be a GeoPackage"),
    (ndvi_band_out_of_range, "--nir-band 9 out of range: the raster has bands 1..6"),
    (raster_without_nir, "no band is described as NIR"),
    (treetops_outside_segment, "1 treetop(s) lie outside their segment (segment_id 2)"),
    (bad_option("--min-ndvi", "1.5"), "--min-ndvi must be in [-1, 1], got 1.5"),
    (bad_option("--red-band", "0"), "--red-band must be a positive integer, got 0"),
    (bad_option("--nir-band", "-2"), "--nir-band must be a positive integer, got -2"),
    (bad_option("--red-band", "3", "--nir-band", "3"), "--red-band and --nir-band are both 3"),
    (bad_option("--fallback-min-area-ratio", "0"), "--fallback-min-area-ratio must be a positive number"),
    (bad_option("--fallback-max-area-ratio", "-1"), "--fallback-max-area-ratio must be a positive number"),
    (
        bad_option("--fallback-min-area-ratio", "3", "--fallback-max-area-ratio", "2"),
        "--fallback-min-area-ratio 3 must be below --fallback-max-area-ratio 2",
    ),
    (bad_option("--fallback-min-iou", "1.5"), "--fallback-min-iou must be in [0, 1], got 1.5"),
    (bad_option("--fallback-min-score", "-0.1"), "--fallback-min-score must be in [0, 1], got -0.1"),
    (bad_option("--fallback-min-score", "nan"), "--fallback-min-score must be a number, got nan"),
    (bad_option("--workers", "-1"), "--workers must be at least 0, got -1"),
    (bad_option("--window-batch", "0"), "--window-batch must be a positive integer, got 0"),
]
NEEDS_MODEL = {missing_checkpoint, unreachable_checkpoint, not_a_checkpoint}
MATRIX = [("tile", b, p) for b, p in SHARED] + [("pseudolabel", b, p) for b, p in SHARED + PSEUDOLABEL_ONLY]


# ---------------------------------------------------------------------------------------------- running


def argv(command: str, inputs: Inputs, out: Path) -> list[str]:
    """The command line for ``command`` on ``inputs`` writing ``out``."""
    args = [command, "--ortho", str(inputs.ortho), "--segments", str(inputs.segments), "--out", str(out)]
    if command == "pseudolabel":
        args += ["--device", "cpu", "--no-progress"]
        if "--checkpoint" not in inputs.extra:
            args.append("--untrained")
    return args + inputs.extra


def out_path(command: str, inputs: Inputs, folder: Path) -> Path:
    default = "labels.gpkg" if command == "pseudolabel" else "plan.json"
    return folder / (inputs.out_name or default)


def loud_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records the real CLI would print on stderr (WARNING and above)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if SAM2 would be built: input errors must come before the model is loaded."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("SAM2 was loaded before the inputs were validated")

    monkeypatch.setattr(sam2_model, "build_sam2_model", refuse)


def run_failing(
    argv_: list[str], capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> tuple[str, str]:
    """Run the CLI in-process, expect exit 2, and return (stdout, the single stderr line)."""
    caplog.clear()
    rc = cli.main(argv_)
    out, err = capfd.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert not loud_records(caplog), loud_records(caplog)
    return out, lines[0]


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("command", "build", "problem"),
    MATRIX,
    ids=[f"{c}-{b.__name__}" for c, b, _ in MATRIX],
)
def test_bad_input_one_line_exit_2_no_output(
    command: str,
    build: BuildCase,
    problem: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    if build not in NEEDS_MODEL:
        request.getfixturevalue("no_model")
    (tmp_path / "in").mkdir()
    inputs = build(tmp_path / "in")
    folder = tmp_path / "out"
    target = out_path(command, inputs, folder)

    # a fresh output folder: nothing may appear in it
    _, line = run_failing(argv(command, inputs, target), capfd, caplog)
    assert line.startswith("crownsam: error: "), line
    assert inputs.named in line, line
    assert problem in line, line
    assert not folder.exists() or files_in(folder) == []

    # an older output stays byte-identical, and nothing else appears beside it
    folder.mkdir(exist_ok=True)
    target.write_bytes(OLD_BYTES)
    _, again = run_failing(argv(command, inputs, target), capfd, caplog)
    assert again == line
    assert files_in(folder) == [target.name]
    assert target.read_bytes() == OLD_BYTES


@pytest.mark.parametrize(
    ("command", "bad"),
    [
        ("tile", ["--rgb-bands", "a,b"]),
        ("pseudolabel", ["--rgb-bands", "a,b"]),
        ("pseudolabel", ["--shard", "5/2"]),
        ("pseudolabel", ["--prompt", "star"]),
        ("pseudolabel", ["--min-ndvi", "abc"]),
        ("pseudolabel", ["--red-band", "x"]),
        ("pseudolabel", ["--fallback-min-iou", "high"]),
        ("pseudolabel", ["--workers", "two"]),
    ],
)
def test_bad_argument_syntax_is_an_argparse_error(
    command: str, bad: list[str], tmp_path: Path, capfd: pytest.CaptureFixture[str], no_model: None
) -> None:
    inputs = Inputs(good_raster(tmp_path), good_segments(tmp_path), extra=bad)
    target = out_path(command, inputs, tmp_path / "out")
    with pytest.raises(SystemExit) as exc:
        cli.main(argv(command, inputs, target))
    assert exc.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err  # one line, no usage dump
    assert err.startswith(f"crownsam: error: {command}: argument {bad[0]}: ") and bad[1] in err, err
    assert not target.parent.exists()


def test_tile_some_outside_and_reprojected_segments_succeed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ortho = good_raster(tmp_path)
    boxes = gpd.GeoSeries([pixel_box(*b) for b in INSIDE[:2] + OUTSIDE[:1]], crs="EPSG:3067")
    seg = write_segments(tmp_path / "wgs84.gpkg", list(boxes.to_crs("EPSG:4326")), crs="EPSG:4326")
    plan = tmp_path / "out" / "plan.json"
    assert cli.main(["tile", "--ortho", str(ortho), "--segments", str(seg), "--out", str(plan)]) == 0
    assert "Traceback" not in capfd.readouterr().err
    assert loud_records(caplog) == [
        f"{seg}: reprojected from EPSG:4326 to the raster's CRS EPSG:3067",
    ]
    d = json.loads(plan.read_text())
    assert d["skipped"] == [{"segment_id": 3, "reason": "outside_raster"}]
    assert sorted(i for w in d["windows"] for i in w["segment_ids"]) == [1, 2]
    assert files_in(plan.parent) == ["plan.json"]


@pytest.mark.parametrize("build", [invalid_geometry, multipart_geometry])
def test_tile_fix_geometries_repairs_and_succeeds(
    build: BuildCase, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    inputs = build(tmp_path)
    plan = tmp_path / "out" / "plan.json"
    assert cli.main([*argv("tile", inputs, plan), "--fix-geometries"]) == 0
    assert "Traceback" not in capfd.readouterr().err
    (note,) = loud_records(caplog)
    kind = "1 invalid and reduced 0" if build is invalid_geometry else "0 invalid and reduced 1"
    assert note == f"{inputs.segments}: repaired {kind} multi-part geometries to their largest polygon"
    d = json.loads(plan.read_text())
    assert d["skipped"] == []
    assert sorted(i for w in d["windows"] for i in w["segment_ids"]) == [1, 2]


class NeverCalledPredictor:
    """Stands in for SAM2 where a run must fail before any window reaches the model."""

    name, untrained, forward_seconds = "never-called", True, 0.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def set_image(self, *args: object) -> None:
        raise AssertionError("a window reached the model")

    predict_boxes = set_image


@pytest.mark.parametrize("workers", ["0", "2"])
def test_raster_cut_after_planning_fails_cleanly_while_reading_windows(
    workers: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``--plan`` no stretch is computed up front: the damage shows only when a window is read,
    after the model is built, and must still be one line with no output: in the sequential loop
    (``--workers 0``) and from the window pipeline's reader thread (``--workers 2``) alike."""
    monkeypatch.setattr(sam2_model, "build_sam2_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(sam2_model, "Sam2BoxPredictor", NeverCalledPredictor)
    ortho, seg = good_raster(tmp_path), good_segments(tmp_path)
    plan = tmp_path / "plan.json"
    plan_from_files(str(ortho), str(seg))[0].save(plan)
    truncate_copy(ortho, ortho, 0.5)
    target = tmp_path / "out" / "labels.gpkg"
    target.parent.mkdir()
    target.write_bytes(OLD_BYTES)
    inputs = Inputs(ortho, seg, extra=["--plan", str(plan), "--workers", workers])
    _, line = run_failing(argv("pseudolabel", inputs, target), capfd, caplog)
    assert line.startswith(f"crownsam: error: {ortho}: ") and "truncated or corrupt raster" in line, line
    assert files_in(target.parent) == ["labels.gpkg"]
    assert target.read_bytes() == OLD_BYTES


# ---------------------------------------------------------------------------------------------- executable


def run_crownsam(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``crownsam`` executable (its own process: real exit code and stderr)."""
    env = {**os.environ, "CROWNSAM_CACHE": str(cache)}
    return subprocess.run([str(CROWNSAM), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    ("build", "problem"),
    [(truncated_raster, "truncated or corrupt raster"), (unreachable_checkpoint, "connection refused")],
    ids=["truncated_raster", "unreachable_checkpoint"],
)
def test_real_executable_bad_input(build: BuildCase, problem: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    inputs = build(tmp_path / "in")
    target = tmp_path / "out" / "labels.gpkg"
    target.parent.mkdir()
    target.write_bytes(OLD_BYTES)
    proc = run_crownsam(argv("pseudolabel", inputs, target), tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"crownsam: error: {inputs.named}: ") and problem in line, line
    assert files_in(target.parent) == ["labels.gpkg"]
    assert target.read_bytes() == OLD_BYTES


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """One real (untrained SAM2, CPU) pseudolabel run whose segments are in EPSG:4326, include one
    bow-tie and one two-part polygon (``--fix-geometries``) and one segment outside the raster.
    Returns (process, segments path, output GPKG)."""
    d = tmp_path_factory.mktemp("good_run")
    ortho = good_raster(d)
    geoms = [pixel_box(*INSIDE[0]), bowtie(300, 200, 50), two_part(420, 350, 25), pixel_box(*OUTSIDE[0])]
    wgs84 = list(gpd.GeoSeries(geoms, crs="EPSG:3067").to_crs("EPSG:4326"))
    seg = write_segments(d / "wgs84.gpkg", wgs84, crs="EPSG:4326", ids=[11, 12, 13, 14])
    out = d / "out" / "labels.gpkg"
    inputs = Inputs(ortho, seg, extra=["--fix-geometries", "--cache-dir", str(d / "cache")])
    return run_crownsam(argv("pseudolabel", inputs, out), d / "cache"), seg, out


def test_reprojected_segments_succeed_with_one_warning_line(
    good_run: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    proc, seg, out = good_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "reprojected" in ln]
    assert line.startswith("crownsam: WARNING: "), line
    assert line.endswith(f": {seg}: reprojected from EPSG:4326 to the raster's CRS EPSG:3067"), line
    labels = gpd.read_file(out)
    assert labels.crs.to_epsg() == 3067
    assert set(labels["segment_id"]) <= {11, 12, 13}


def test_partly_outside_segments_are_reported_in_summary(
    good_run: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    proc, _, out = good_run
    assert proc.returncode == 0, proc.stderr
    assert files_in(out.parent) == ["labels.gpkg", "labels.summary.json"]
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["skipped_by_reason"]["outside_raster"] == 1
    assert {"segment_id": 14, "reason": "outside_raster"} in summary["skipped_segments"]
    assert summary["segments_total"] == 4
    assert summary["segments_prompted"] == 3


def test_fix_geometries_repairs_bad_geometries_in_pseudolabel(
    good_run: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    proc, seg, _ = good_run
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "repaired" in ln]
    assert line.startswith("crownsam: WARNING: "), line
    assert line.endswith(
        f": {seg}: repaired 1 invalid and reduced 1 multi-part geometries to their largest polygon"
    )
