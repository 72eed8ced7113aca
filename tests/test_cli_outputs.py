"""Bad output paths and bad shard lists, on every command that writes: one stderr line
``crownsam: error: <path>: <problem>`` naming the path and the option, exit code 2, no traceback, found
before any work (SAM2 never loaded), and nothing written (the file in the way is left byte-identical, no
temporary file beside it).

Commands that need a trained Mask R-CNN (train, predict, evaluate-model) have the same cases in
``tests/training/test_cli.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import files_in, pixel_box, write_raster, write_segments

from crownsam import cli
from crownsam.pseudolabel import sam2_model

CapFd = pytest.CaptureFixture[str]
IN_THE_WAY = b"a file where the output's folder should be\n"


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if SAM2 would be built: output paths must be checked before the model is loaded."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("SAM2 was loaded before the output path was checked")

    monkeypatch.setattr(sam2_model, "build_sam2_model", refuse)


def inputs(d: Path) -> None:
    """Good inputs in ``d``: a 6-band raster, a CHM, segments/labels, manual crowns, masks, a test area."""
    write_raster(d / "ortho.tif")
    write_raster(d / "chm.tif", bands=1, dtype="float32")
    boxes = [pixel_box(100, 100, 160, 160), pixel_box(300, 200, 380, 260)]
    write_segments(d / "segments.gpkg", boxes)
    write_segments(d / "manual.gpkg", boxes, ids=())
    write_segments(d / "masks.gpkg", [pixel_box(420, 300, 480, 360)], ids=())
    write_segments(d / "area.gpkg", [pixel_box(50, 50, 450, 400)], ids=())


SAM2 = ["--untrained", "--device", "cpu", "--no-progress"]
# (command line with {d} = inputs folder and {out} = the output path, what the output must be)
FILE_OUTPUTS: dict[str, list[str]] = {
    "tile": ["tile", "--ortho", "{d}/ortho.tif", "--segments", "{d}/segments.gpkg", "--out", "{out}"],
    "segment-chm": ["segment-chm", "--chm", "{d}/chm.tif", "--out", "{out}"],
    "pseudolabel": [
        "pseudolabel", "--ortho", "{d}/ortho.tif", "--segments", "{d}/segments.gpkg", "--out", "{out}", *SAM2,
    ],
    "merge-labels": ["merge-labels", "--inputs", "{d}/segments.gpkg", "--out", "{out}"],
    "segment-everything": ["segment-everything", "--ortho", "{d}/ortho.tif", "--out", "{out}", *SAM2],
    "merge-everything": ["merge-everything", "--inputs", "{d}", "--out", "{out}"],
    "add-missed": [
        "add-missed", "--labels", "{d}/segments.gpkg", "--masks", "{d}/masks.gpkg",
        "--ortho", "{d}/ortho.tif", "--out", "{out}", "--red-band", "3", "--nir-band", "4",
    ],
}  # fmt: skip
FOLDER_OUTPUTS: dict[str, list[str]] = {
    "demo-data": ["demo-data", "--size", "256", "{out}"],
    "evaluate": [
        "evaluate", "--manual", "{d}/manual.gpkg", "--labels", "a={d}/segments.gpkg", "--out", "{out}",
    ],
    "export-coco": [
        "export-coco", "--ortho", "{d}/ortho.tif", "--labels", "{d}/segments.gpkg", "--out", "{out}",
        "--chip", "128",
    ],
    "compare": ["compare", "--labels-eval", "{d}", "--model", "a={d}", "--out", "{out}"],
}  # fmt: skip


def run_failing(argv: list[str], capfd: pytest.CaptureFixture[str]) -> str:
    """Run the CLI in-process, expect exit 2 and one stderr line; return that line."""
    rc = cli.main(argv)
    out, err = capfd.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("crownsam: error: ")
    return lines[0]


def fill(template: list[str], d: Path, out: Path) -> list[str]:
    return [a.format(d=d, out=out) for a in template]


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("command", sorted(FILE_OUTPUTS))
def test_output_file_below_a_file(command: str, tmp_path: Path, capfd: CapFd) -> None:
    d = tmp_path / "in"
    d.mkdir()
    inputs(d)
    blocker = tmp_path / "work" / "results"
    blocker.parent.mkdir()
    blocker.write_bytes(IN_THE_WAY)
    out = blocker / ("plan.json" if command == "tile" else "out.gpkg")
    line = run_failing(fill(FILE_OUTPUTS[command], d, out), capfd)
    assert f"{out}: lies under the file {blocker}; --out needs a path in a folder" in line, line
    assert blocker.read_bytes() == IN_THE_WAY
    assert files_in(blocker.parent) == ["results"]


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize("command", ["tile", "segment-chm", "pseudolabel", "add-missed"])
def test_output_file_that_is_a_folder(
    command: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "in"
    d.mkdir()
    inputs(d)
    out = tmp_path / "work" / ("plan.json" if command == "tile" else "out.gpkg")
    out.mkdir(parents=True)
    line = run_failing(fill(FILE_OUTPUTS[command], d, out), capfd)
    assert f"{out}: is a folder; --out needs a file name" in line, line
    assert files_in(out) == [] and files_in(out.parent) == [out.name]


@pytest.mark.parametrize("command", sorted(FOLDER_OUTPUTS))
def test_output_folder_that_is_a_file(
    command: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "in"
    d.mkdir()
    inputs(d)
    out = tmp_path / "work" / "results"
    out.parent.mkdir()
    out.write_bytes(IN_THE_WAY)
    line = run_failing(fill(FOLDER_OUTPUTS[command], d, out), capfd)
    option = "OUT_DIR" if command == "demo-data" else "--out"
    assert f"{out}: is a file; {option} needs a folder" in line, line
    assert out.read_bytes() == IN_THE_WAY
    assert files_in(out.parent) == ["results"]
    below = out / "deeper"
    line = run_failing(fill(FOLDER_OUTPUTS[command], d, below), capfd)
    assert f"{below}: lies under the file {out}; {option} needs a folder" in line, line
    assert files_in(out.parent) == ["results"]


def test_merge_labels_names_the_missing_shard(tmp_path: Path, capfd: CapFd) -> None:
    d = tmp_path / "in"
    d.mkdir()
    inputs(d)
    out = tmp_path / "out" / "labels.gpkg"
    missing = d / "shard-1.gpkg"
    line = run_failing(["merge-labels", "--inputs", str(missing), "--out", str(out)], capfd)
    assert f"{missing}: shard output not found" in line, line
    # a GeoPackage that is not a shard output: no summary beside it
    seg = d / "segments.gpkg"
    line = run_failing(["merge-labels", "--inputs", str(seg), "--out", str(out)], capfd)
    assert f"{seg}: has no summary beside it ({d / 'segments.summary.json'})" in line, line
    assert not out.parent.exists()


def test_add_missed_refuses_text_label_ids(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Labels whose segment_id is text: new labels could not be numbered after them."""
    import geopandas as gpd

    d = tmp_path / "in"
    d.mkdir()
    inputs(d)
    labels = d / "segments.gpkg"
    gdf = gpd.read_file(labels)
    gdf["segment_id"] = ["a", "b"]
    gdf.to_file(labels, layer="segments", driver="GPKG")
    out = tmp_path / "out" / "completed.gpkg"
    argv = fill(FILE_OUTPUTS["add-missed"], d, out)
    line = run_failing(argv, capfd)
    assert f"{labels}: column segment_id must hold integers; found 'a' (not a number)" in line, line
    assert not out.parent.exists()
