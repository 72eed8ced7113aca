"""``crownsam export-coco`` on small rasters: a good run, and the bad-input matrix.

Every bad input gives one stderr line ``crownsam: error: <file>: <problem>``, exit code 2, no traceback,
and no output: the output folder is not created (nor anything beside it), and an older export is left
byte-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from helpers import bowtie, files_in, pixel_box, write_raster, write_segments
from pycocotools.coco import COCO

from crownsam import cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

# 1024 x 768 px raster, 256-px chips without overlap (4 x 3 chips).
# Crowns as pixel boxes (col0, row0, col1, row1).
CROWNS = [(20, 20, 80, 80), (300, 200, 380, 260), (450, 350, 520, 420), (100, 380, 170, 450)]
TEST_AREA = (420, 20, 520, 120)
MANUAL = [(430, 30, 470, 70), (470, 60, 510, 110)]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    ortho = write_raster(d / "ortho.tif", width=1024, height=768, nodata=0)
    labels = write_segments(d / "labels.gpkg", [pixel_box(*b) for b in CROWNS])
    area = write_segments(d / "area.gpkg", [pixel_box(*TEST_AREA)], ids=())
    manual = d / "manual.gpkg"
    gpd.GeoDataFrame({"tree_id": [7, 8]}, geometry=[pixel_box(*b) for b in MANUAL], crs="EPSG:3067").to_file(
        manual
    )
    return {"ortho": ortho, "labels": labels, "holdout": area, "manual": manual, "dir": d}


def base(inputs, out: Path, **over) -> list:
    args = {"ortho": inputs["ortho"], "labels": inputs["labels"], "out": out, "chip": 256, "buffer": 0.5}
    args.update(val_block=1, overlap=0.0)
    args.update(over)
    argv: list = ["export-coco"]
    for k, v in args.items():
        if v is not None:
            argv += [f"--{k.replace('_', '-')}", v]
    return argv


def test_good_run_repairs_reprojects_and_reports(inputs, tmp_path, capsys, caplog):
    # labels in another CRS, with one invalid (bow-tie) polygon: repaired and reprojected, both stated
    geoms = [pixel_box(*b) for b in CROWNS] + [bowtie(200, 100)]
    in_3857 = gpd.GeoSeries(geoms, crs="EPSG:3067").to_crs(3857)
    labels = write_segments(tmp_path / "lab.gpkg", list(in_3857.values), crs="EPSG:3857")
    out = tmp_path / "coco"
    argv = base(inputs, out, labels=labels, holdout=inputs["holdout"], manual=inputs["manual"])
    code, stdout, err = run([*argv, "--val-fraction", "0.3"], capsys)
    assert code == 0, err
    assert len(stdout.strip().splitlines()) == 1 and "train" in stdout
    s = json.loads((out / "export.json").read_text())
    assert s["labels"]["reprojected_from"] == "EPSG:3857" and s["labels"]["repaired_invalid"] == 1
    assert "reprojected" in caplog.text
    test = COCO(str(out / "test.json"))
    assert {a["source_id"] for a in test.dataset["annotations"]} == {7, 8}
    assert s["test_area"]["ground_truth"] == "manual"
    for split in ("train", "val"):
        assert (out / f"{split}.json").is_file()
    assert files_in(tmp_path) == ["coco", "in", "lab.gpkg"]


def test_without_manual_the_test_set_uses_labels_in_the_area(inputs, tmp_path, capsys):
    labels = write_segments(tmp_path / "lab.gpkg", [pixel_box(*b) for b in CROWNS + MANUAL])
    out = tmp_path / "coco"
    code, _, err = run(base(inputs, out, labels=labels, holdout=inputs["holdout"]), capsys)
    assert code == 0, err
    s = json.loads((out / "export.json").read_text())
    assert s["test_area"]["ground_truth"] == "labels" and "no manual" in s["rules"]["test"]
    assert {a["source_id"] for a in COCO(str(out / "test.json")).dataset["annotations"]} == {5, 6}


def classed_labels(d: Path, classes, name: str = "classed.gpkg", **extra) -> Path:
    path = d / name
    gpd.GeoDataFrame(
        {"segment_id": range(1, len(CROWNS) + 1), "pseudo_class": classes, **extra},
        geometry=[pixel_box(*b) for b in CROWNS],
        crs="EPSG:3067",
    ).to_file(path)
    return path


def test_class_column_gives_one_category_per_class(inputs, tmp_path, capsys):
    """Classes 0..2 -> categories class_0..class_2 (ids 1..3) on every train/val crown; the crown without a
    class (-1) is left out; manual crowns without the column keep one category, tree."""
    labels = classed_labels(tmp_path, [2, 0, -1, 1])
    out = tmp_path / "coco"
    argv = base(inputs, out, labels=labels, holdout=inputs["holdout"], manual=inputs["manual"])
    code, _, err = run([*argv, "--class-column", "pseudo_class", "--val-fraction", "0.3"], capsys)
    assert code == 0, err
    s = json.loads((out / "export.json").read_text())
    assert [c["name"] for c in s["categories"]] == ["class_0", "class_1", "class_2"]
    assert s["labels"]["dropped_unclassed"] == 1 and "class_<c>" in s["rules"]["categories"]
    seen = {}
    for split in ("train", "val"):
        d = json.loads((out / f"{split}.json").read_text())
        assert [c["id"] for c in d["categories"]] == [1, 2, 3]
        seen |= {a["source_id"]: a["category_id"] for a in d["annotations"]}
    assert len(seen) >= 2 and seen.items() <= {1: 3, 2: 1, 4: 2}.items()  # crown 3 (class -1) in none
    test = json.loads((out / "test.json").read_text())
    assert test["categories"] == [{"id": 1, "name": "tree", "supercategory": "tree"}]
    assert {a["category_id"] for a in test["annotations"]} == {1}


def test_without_class_column_the_export_has_one_category(inputs, tmp_path, capsys):
    labels = classed_labels(tmp_path, [2, 0, -1, 1])
    out = tmp_path / "coco"
    code, _, err = run(base(inputs, out, labels=labels), capsys)
    assert code == 0, err
    d = json.loads((out / "train.json").read_text())
    assert d["categories"] == [{"id": 1, "name": "tree", "supercategory": "tree"}]
    assert {a["category_id"] for a in d["annotations"]} == {1} and len(d["annotations"]) >= 3


def empty_labels(inputs, d):
    return {"labels": write_segments(d / "empty.gpkg", [])}, "empty.gpkg", "empty (no features)"


def labels_outside(inputs, d):
    far = [pixel_box(c + 10_000, r + 10_000, c1 + 10_000, r1 + 10_000) for c, r, c1, r1 in CROWNS]
    return {"labels": write_segments(d / "far.gpkg", far)}, "far.gpkg", "lie outside the raster"


def chip_larger_than_raster(inputs, d):
    return {"chip": 1000}, "ortho.tif", "smaller than one 1000-px chip"


def bands_out_of_range(inputs, d):
    return {"bands": "3,2,7"}, "ortho.tif", "band 7 out of range"


def lines_not_polygons(inputs, d):
    lines = d / "lines.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.LineString([(385001, 6671999), (385002, 6671998)])], crs=3067).to_file(
        lines
    )
    return {"labels": lines}, "lines.gpkg", "must be polygons"


def missing_ortho(inputs, d):
    return {"ortho": d / "nope.tif"}, "nope.tif", "raster not found"


def manual_without_holdout(inputs, d):
    return {"manual": inputs["manual"]}, "manual.gpkg", "give the test area too"


def holdout_outside(inputs, d):
    far = write_segments(d / "far_area.gpkg", [pixel_box(9000, 9000, 9100, 9100)], ids=())
    return {"holdout": far}, "far_area.gpkg", "lies outside the raster"


def holdout_covers_everything(inputs, d):
    return (
        {"holdout": inputs["holdout"], "manual": inputs["manual"], "buffer": 100},
        "area.gpkg",
        "no training chips left",
    )


def labels_only_in_test_area(inputs, d):
    lab = write_segments(d / "inside.gpkg", [pixel_box(*b) for b in MANUAL])
    return {"labels": lab, "holdout": inputs["holdout"]}, "inside.gpkg", "no label reaches a training chip"


def val_blocks_take_everything(inputs, d):
    return {"val_block": 4, "val_fraction": 0.5}, "ortho.tif", "leave no training chip"


def bad_overlap(inputs, d):
    return {"overlap": 1.0}, "overlap", "overlap must be in [0, 1)"


def class_column_missing(inputs, d):
    return {"class_column": "pseudo_class"}, "labels.gpkg", "no column 'pseudo_class' (--class-column)"


def class_column_not_integer(inputs, d):
    lab = classed_labels(d, [0, 1.5, 1, 0], name="half.gpkg")
    return {"labels": lab, "class_column": "pseudo_class"}, "half.gpkg", "must hold integer classes"


def class_column_text(inputs, d):
    lab = classed_labels(d, ["a", "b", "a", "b"], name="text.gpkg")
    return {"labels": lab, "class_column": "pseudo_class"}, "text.gpkg", "must hold integer classes"


def no_crown_with_a_class(inputs, d):
    lab = classed_labels(d, [-1, -1, -1, -1], name="none.gpkg")
    return {"labels": lab, "class_column": "pseudo_class"}, "none.gpkg", "no crown has a class"


CASES = [
    class_column_missing,
    class_column_not_integer,
    class_column_text,
    no_crown_with_a_class,
    empty_labels,
    labels_outside,
    chip_larger_than_raster,
    bands_out_of_range,
    lines_not_polygons,
    missing_ortho,
    manual_without_holdout,
    holdout_outside,
    holdout_covers_everything,
    labels_only_in_test_area,
    val_blocks_take_everything,
    bad_overlap,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, inputs, tmp_path, capsys):
    over, named, problem = case(inputs, inputs["dir"])
    root = tmp_path / "outputs"
    root.mkdir()
    code, out, err = run(base(inputs, root / "coco", **over), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crownsam: error: "), err
    assert named in lines[0] and problem in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert files_in(root) == []


def test_failed_export_leaves_an_older_export_untouched(inputs, tmp_path, capsys):
    out = tmp_path / "coco"
    assert run(base(inputs, out), capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run(base(inputs, out, bands="1,9"), capsys)
    assert code == 2 and "band 9" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert files_in(tmp_path) == ["coco", "in"]


def test_refuses_to_replace_a_folder_that_is_not_an_export(inputs, tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    code, _, err = run(base(inputs, out), capsys)
    assert code == 2 and "not replacing it" in err
    assert files_in(out) == ["thesis.tex"]


def test_nodata_only_chips_are_skipped_and_nodata_pixels_are_zero(inputs, tmp_path, capsys):
    import numpy as np
    import rasterio
    from PIL import Image

    with rasterio.open(inputs["ortho"], "r+") as dst:
        data = dst.read()
        data[:, 512:768, 768:1024] = 0  # the bottom-right chip: nodata only
        data[:, 0:10, 0:256] = 0  # a nodata strip inside the top-left chip
        dst.write(data)
    out = tmp_path / "coco"
    code, _, err = run(base(inputs, out, val_fraction=0), capsys)
    assert code == 0, err
    s = json.loads((out / "export.json").read_text())
    assert s["splits"]["train"]["skipped_nodata"] == 1 and s["splits"]["train"]["chips"] == 11
    assert not (out / "images/train/r00512_c00768.png").exists()
    chip = np.asarray(Image.open(out / "images/train/r00000_c00000.png"))
    assert not chip[:10].any() and chip[10:].any()


def test_all_crowns_dropped_as_tiny_is_an_error_after_writing_and_leaves_nothing(inputs, tmp_path, capsys):
    tiny = write_segments(tmp_path / "tiny.gpkg", [pixel_box(c, r, c + 5, r + 5) for c, r, *_ in CROWNS])
    root = tmp_path / "outputs"
    root.mkdir()
    code, _, err = run(base(inputs, root / "coco", labels=tiny), capsys)
    assert code == 2 and "no training annotation survived" in err and "tiny.gpkg" in err
    assert files_in(root) == []
