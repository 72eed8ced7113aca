"""Bad input for ``crownsam refine``: one stderr line ``crownsam: error: ...``, exit code 2, no traceback,
no output (nothing new in the output folder, an older output byte-identical), SAM2 never loaded before the
inputs are checked. And the inputs that are not errors: predictions in another CRS (reprojected, one
warning line), empty predictions (an empty output, one warning line)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from helpers import CRS, bowtie, files_in, pixel_box, write_raster, write_segments

from crownsam import cli
from crownsam.pseudolabel import sam2_model

OLD_BYTES = b"an older output that a failed run must leave alone\n"
BOXES = [(100, 100, 160, 160), (300, 200, 380, 260), (450, 350, 520, 420)]


@dataclass
class Case:
    """One bad invocation: its arguments (``{d}`` = the input folder), what the error line must contain, the
    file it must name ("" when it names an option), the output name, and extra inputs to write."""

    argv: list[str]
    problem: str
    named: str = ""
    out_name: str = "refined.gpkg"
    build: Callable[[Path], None] = lambda d: None


def inputs(d: Path) -> None:
    """A good raster (6 bands, EPSG:3067, 600 x 500), predictions (three boxes) and SAM objects."""
    write_raster(d / "ortho.tif")
    write_segments(d / "pred.gpkg", [pixel_box(*b) for b in BOXES])
    write_segments(d / "masks.gpkg", [pixel_box(c0 - 5, r0 - 5, c1 + 5, r1 + 5) for c0, r0, c1, r1 in BOXES])


def ref(*extra: str, pred: str = "{d}/pred.gpkg", ortho: str = "{d}/ortho.tif", method: str = "sessrs"):
    """refine with SAM objects from a file (no SAM2) unless the case says otherwise."""
    masks = ["--masks", "{d}/masks.gpkg"] if method == "sessrs" and "--untrained" not in extra else []
    return ["refine", "--ortho", ortho, "--predictions", pred, "--method", method, *masks, *extra]


def write_points(d: Path) -> None:
    gpd.GeoDataFrame(geometry=[shapely.Point(385_002, 6_671_998)], crs=CRS).to_file(d / "points.gpkg")


def write_no_crs(d: Path) -> None:
    write_segments(d / "nocrs.gpkg", [pixel_box(*BOXES[0])], crs=None)


def write_duplicate_ids(d: Path) -> None:
    gdf = gpd.read_file(d / "pred.gpkg").assign(crown_id=[1, 1, 2])
    gdf.to_file(d / "dup.gpkg")


def write_bowtie(d: Path) -> None:
    write_segments(d / "bowtie.gpkg", [bowtie(200, 200)])


CASES: dict[str, Case] = {
    "missing-raster": Case(ref(ortho="{d}/nope.tif"), "raster not found", "{d}/nope.tif"),
    "missing-predictions": Case(ref(pred="{d}/nope.gpkg"), "predictions file not found", "{d}/nope.gpkg"),
    "predictions-no-crs": Case(
        ref(pred="{d}/nocrs.gpkg"), "predictions have no CRS", "{d}/nocrs.gpkg", build=write_no_crs
    ),
    "predictions-points": Case(
        ref(pred="{d}/points.gpkg"), "predictions must be polygons", "{d}/points.gpkg", build=write_points
    ),
    "duplicate-crown-ids": Case(
        ref(pred="{d}/dup.gpkg"), "crown_id values must be unique", "{d}/dup.gpkg", build=write_duplicate_ids
    ),
    "invalid-geometry": Case(
        ref(pred="{d}/bowtie.gpkg"), "pass --fix-geometries", "{d}/bowtie.gpkg", build=write_bowtie
    ),
    "t1-above-1": Case(ref("--t1", "1.5"), "--t1 must be in [0, 1], got 1.5"),
    "t2-below-0": Case(ref("--t2", "-0.1"), "--t2 must be in [0, 1], got -0.1"),
    "workers-negative": Case(
        ref("--workers", "-1", "--untrained", method="box"), "--workers must be at least 0, got -1"
    ),
    "t1-grid-outside": Case(
        ref("--tune", "--tune-truth", "{d}/pred.gpkg", "--t1-grid", "0.5,1.2"),
        "--t1-grid values must be in [0, 1]",
    ),
    "tune-without-truth": Case(ref("--tune"), "--tune needs validation crowns"),
    "tune-box": Case(ref("--tune", "--untrained", method="box"), "--tune chooses t1 and t2 of sessrs"),
    "truth-without-tune": Case(ref("--tune-truth", "{d}/pred.gpkg"), "are for --tune"),
    "tune-truth-missing": Case(ref("--tune", "--tune-truth", "{d}/nope.gpkg"), "not found", "{d}/nope.gpkg"),
    "masks-for-box": Case(
        [
            "refine",
            "--ortho",
            "{d}/ortho.tif",
            "--predictions",
            "{d}/pred.gpkg",
            "--method",
            "box",
            "--masks",
            "{d}/masks.gpkg",
            "--untrained",
        ],
        "--masks holds SAM objects for --method sessrs",
    ),
    "masks-missing": Case(
        [
            "refine",
            "--ortho",
            "{d}/ortho.tif",
            "--predictions",
            "{d}/pred.gpkg",
            "--method",
            "sessrs",
            "--masks",
            "{d}/nope.gpkg",
        ],
        "not found",
        "{d}/nope.gpkg",
    ),
    "box-no-checkpoint": Case(ref(method="box"), "no SAM2 checkpoint"),
    "fallback-ratio": Case(
        ref("--untrained", "--fallback-min-area-ratio", "2", "--fallback-max-area-ratio", "1", method="box"),
        "must be below --fallback-max-area-ratio",
    ),
    "band-range": Case(ref("--untrained", "--rgb-bands", "3,2,9", method="box"), "band 9 out of range"),
    "not-gpkg": Case(ref(), "output must be a GeoPackage", "refined.shp", out_name="refined.shp"),
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
    name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, no_model
) -> None:
    case = CASES[name]
    d = tmp_path / "in"
    d.mkdir()
    inputs(d)
    case.build(d)
    folder = tmp_path / "out"
    target = folder / case.out_name
    argv = [a.replace("{d}", str(d)) for a in case.argv] + ["--out", str(target), "--no-progress"]
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
    ("extra", "message"),
    [
        (["--t1", "high"], "argument --t1: invalid"),
        (["--method", "erode"], "argument --method: invalid choice"),
        (["--t2-grid", "0.5,x"], "must be comma-separated numbers"),
    ],
)
def test_bad_option_values_one_line_exit_2(
    extra: list[str], message: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], no_model
) -> None:
    argv = ["refine", "--ortho", "o.tif", "--predictions", "p.gpkg", "--out", str(tmp_path / "r.gpkg")]
    argv += ["--method", "sessrs", *extra] if "--method" not in extra else extra
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    _, err = capfd.readouterr()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r.gpkg").exists()


def run_ok(argv: list[str], capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run, expect exit 0, return the warning lines."""
    caplog.clear()
    assert cli.main(argv) == 0
    capfd.readouterr()
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_predictions_in_another_crs_are_reprojected_with_one_note(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, no_model
) -> None:
    inputs(tmp_path)
    gpd.read_file(tmp_path / "pred.gpkg").to_crs("EPSG:4326").to_file(tmp_path / "wgs84.gpkg")
    out = tmp_path / "refined.gpkg"
    argv = ref(pred=str(tmp_path / "wgs84.gpkg"), method="sessrs")
    argv = [a.replace("{d}", str(tmp_path)) for a in argv] + ["--out", str(out), "--no-progress"]
    notes = run_ok(argv, capfd, caplog)
    assert len(notes) == 1 and "reprojected from EPSG:4326" in notes[0], notes
    got = gpd.read_file(out)
    assert got.crs.to_epsg() == 3067 and len(got) == 3
    summary = json.loads((tmp_path / "refined.summary.json").read_text())
    assert summary["reprojected_from"] == "EPSG:4326"
    # the SAM objects (5 px larger all round) replaced every crown: the output is in the raster's CRS
    want = [pixel_box(c0 - 5, r0 - 5, c1 + 5, r1 + 5) for c0, r0, c1, r1 in BOXES]
    assert all(g.symmetric_difference(w).area < 1e-6 for g, w in zip(got.geometry, want, strict=True))


@pytest.mark.parametrize("method", ["box", "sessrs"])
def test_empty_predictions_give_an_empty_output_and_a_note(
    method: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, no_model
) -> None:
    inputs(tmp_path)
    write_segments(tmp_path / "empty.gpkg", [])
    out = tmp_path / "refined.gpkg"
    argv = ["refine", "--ortho", str(tmp_path / "ortho.tif"), "--predictions", str(tmp_path / "empty.gpkg")]
    argv += ["--method", method, "--untrained", "--out", str(out), "--no-progress"]
    notes = run_ok(argv, capfd, caplog)
    assert any("no predicted crowns; wrote an empty output" in n for n in notes), notes
    got = gpd.read_file(out, layer="refined")
    assert len(got) == 0 and got.crs.to_epsg() == 3067
    assert json.loads((tmp_path / "refined.summary.json").read_text())["crowns_out"] == 0


def test_method_none_copies_the_predictions(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, no_model
) -> None:
    inputs(tmp_path)
    out = tmp_path / "refined.gpkg"
    argv = ["refine", "--ortho", str(tmp_path / "ortho.tif"), "--predictions", str(tmp_path / "pred.gpkg")]
    assert run_ok([*argv, "--method", "none", "--out", str(out)], capfd, caplog) == []
    got, pred = gpd.read_file(out), gpd.read_file(tmp_path / "pred.gpkg")
    assert list(got["refined_by"]) == ["prediction"] * 3 and list(got["crown_id"]) == [1, 2, 3]
    assert all(a.equals(b) for a, b in zip(got.geometry, pred.geometry, strict=True))
