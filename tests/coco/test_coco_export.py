"""COCO export on the synthetic scene: round trip through pycocotools, holdout geometry, spatial
validation blocks, chip pixels, multi-band TIFF chips, determinism and atomic replacement.

The masks are checked against an independent rasterisation (shapely point-in-polygon at pixel centres
placed with each image's own ``crownsam.transform``), so any offset in chips, transforms or masks fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import tifffile
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from rasterio import Affine
from rasterio.windows import Window

from crownsam.coco.export import export_coco
from crownsam.common.raster import apply_stretch
from crownsam.synthetic import generate_scene

CHIP = 512
BUFFER = 1.0  # small so that a 2048-px scene keeps train chips around the test area
SPLITS = ("train", "val", "test")
# pycocotools 2.0 decodes through numpy's deprecated __array__ path; not ours to fix
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning:rasterio.*"),  # rasterio own
]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("scene"), size=2048, seed=0, n_manual=10)


def export(scene, out: Path, **kw) -> dict:
    args = {"holdout": scene.test_area, "manual": scene.manual, "chip": CHIP, "buffer_m": BUFFER}
    args.update(val_block=2, **kw)
    return export_coco(scene.ortho, scene.coarse, out, **args)


@pytest.fixture(scope="module")
def exported(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "coco"
    return out, export(scene, out)


@pytest.fixture(scope="module")
def cocos(exported) -> dict[str, COCO]:
    out, _ = exported
    return {s: COCO(str(out / f"{s}.json")) for s in SPLITS}


def chip_outline(img: dict) -> shapely.Polygon:
    t = Affine(*img["crownsam"]["transform"])
    w, h = img["width"], img["height"]
    return shapely.Polygon([t @ c for c in ((0, 0), (w, 0), (w, h), (0, h))])


def centre_mask(geom: shapely.Geometry, t: Affine, shape: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """Pixels whose centre lies in ``geom``, computed only over the geometry's pixel bbox.

    Returns (mask of the bbox, (r0, r1, c0, c1)); independent of rasterio's rasteriser."""
    inv = ~t
    xs, ys = zip(*[inv @ (x, y) for x in geom.bounds[::2] for y in geom.bounds[1::2]], strict=True)
    c0, c1 = max(int(np.floor(min(xs))) - 1, 0), min(int(np.ceil(max(xs))) + 1, shape[1])
    r0, r1 = max(int(np.floor(min(ys))) - 1, 0), min(int(np.ceil(max(ys))) + 1, shape[0])
    cols, rows = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    x = t.a * cols + t.b * rows + t.c
    y = t.d * cols + t.e * rows + t.f
    return shapely.contains_xy(geom, x, y), (r0, r1, c0, c1)


def holdout_region(scene) -> shapely.Geometry:
    area = shapely.union_all(gpd.read_file(scene.test_area).geometry.values)
    manual = gpd.read_file(scene.manual)
    crowns = [g for g in manual.geometry.values if g.intersection(area).area > 0]
    return shapely.union_all([area, *crowns]).intersection(area.buffer(BUFFER))


def sources(scene, split: str) -> dict[int, shapely.Geometry]:
    if split == "test":
        m = gpd.read_file(scene.manual)
        return dict(zip(m["tree_id"].astype(int), m.geometry.values, strict=True))
    c = gpd.read_file(scene.coarse)
    return dict(zip(c["segment_id"].astype(int), c.geometry.values, strict=True))


def test_every_split_loads_and_masks_round_trip(scene, exported, cocos):
    out, summary = exported
    region = holdout_region(scene)
    js = []
    for split, coco in cocos.items():
        src = sources(scene, split)
        assert coco.getCatIds() == [1] and coco.loadCats(1)[0]["name"] == "tree"
        assert len(coco.getImgIds()) == summary["splits"][split]["chips"] > 0
        assert len(coco.getAnnIds()) == summary["splits"][split]["annotations"] > 0
        for img in coco.loadImgs(coco.getImgIds()):
            assert img["crownsam"]["split"] == split and img["crownsam"]["crs"] == "EPSG:3067"
            assert (img["width"], img["height"]) == (CHIP, CHIP)
            assert img["file_name"].startswith(f"images/{split}/") and img["file_name"].endswith(".png")
            with Image.open(out / img["file_name"]) as im:
                assert im.size == (CHIP, CHIP) and im.mode == "RGB"
            t = Affine(*img["crownsam"]["transform"])
            clip = chip_outline(img) if split != "test" else chip_outline(img).intersection(region)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                assert ann["iscrowd"] == 0 and ann["category_id"] == 1
                m = coco.annToMask(ann).astype(bool)
                assert ann["area"] == float(m.sum())
                rows, cols = np.nonzero(m)
                x0, y0 = cols.min(), rows.min()
                assert ann["bbox"] == [x0, y0, cols.max() - x0 + 1, rows.max() - y0 + 1]
                want, (r0, r1, c0, c1) = centre_mask(src[ann["source_id"]].intersection(clip), t, m.shape)
                inter = np.count_nonzero(m[r0:r1, c0:c1] & want)
                js.append(inter / (m.sum() + want.sum() - inter))
    j = np.array(js)
    # pixel-centre rule both ways: identical up to centres exactly on an edge (line pieces would show)
    assert j.mean() >= 0.98 and j.min() >= 0.97 and np.mean(j == 1.0) >= 0.9, (j.mean(), j.min())


def test_annotations_are_complete_under_the_sliver_rule(scene, cocos):
    """Every crown reaching a train chip with a clear margin over the sliver rule is annotated; clear
    slivers are not."""
    src = sources(scene, "train")
    coco = cocos["train"]
    for img in coco.loadImgs(coco.getImgIds()):
        fp = chip_outline(img)
        got = {a["source_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))}
        for sid, g in src.items():
            part = g.intersection(fp)
            frac = part.area / g.area
            px = part.area / 0.025**2
            if frac >= 0.25 and px >= 80:
                assert sid in got, (img["file_name"], sid, frac, px)
            elif frac < 0.15 or px < 50:
                assert sid not in got, (img["file_name"], sid, frac, px)


def test_no_train_or_val_chip_touches_the_test_area_plus_buffer(scene, exported, cocos):
    _, summary = exported
    area = shapely.union_all(gpd.read_file(scene.test_area).geometry.values)
    zone = area.buffer(BUFFER)
    for split in ("train", "val"):
        for img in cocos[split].dataset["images"]:
            assert not chip_outline(img).intersects(zone), img["file_name"]
    assert summary["grid"]["excluded_near_test_area"] > 0
    # the test split does cover the test area
    test_cover = shapely.union_all([chip_outline(i) for i in cocos["test"].dataset["images"]])
    assert test_cover.contains(area)


def test_val_is_spatial_blocks_without_shared_pixels(exported, cocos):
    _, summary = exported
    train = [chip_outline(i) for i in cocos["train"].dataset["images"]]
    val = [chip_outline(i) for i in cocos["val"].dataset["images"]]
    assert train and val
    for v in val:
        for t in train:
            assert v.intersection(t).area == 0
    blocks = {tuple(b) for b in summary["grid"]["val_blocks"]}
    stride = summary["stride"]
    for img in cocos["val"].dataset["images"]:
        c = img["crownsam"]
        assert (c["row_off"] // stride // 2, c["col_off"] // stride // 2) in blocks
    assert summary["grid"]["excluded_val_gap"] > 0


def test_chip_pixels_are_the_stretched_raster_window(scene, exported, cocos):
    out, summary = exported
    stretch = [(b["low"], b["high"]) for b in summary["stretch"]["per_band"]]
    region = holdout_region(scene)
    with rasterio.open(scene.ortho) as src:
        for split in SPLITS:
            img = cocos[split].dataset["images"][-1]
            c = img["crownsam"]
            win = Window(c["col_off"], c["row_off"], CHIP, CHIP)
            assert tuple(src.window_transform(win))[:6] == tuple(c["transform"])
            data = src.read(c["bands"], window=win)
            valid = src.read_masks(c["bands"][0], window=win) > 0
            want = apply_stretch(data, stretch, valid)
            got = np.asarray(Image.open(out / img["file_name"]))
            if split == "test":
                inside, (r0, r1, c0, c1) = centre_mask(region, Affine(*c["transform"]), (CHIP, CHIP))
                keep = np.zeros((CHIP, CHIP), bool)
                keep[r0:r1, c0:c1] = inside
                assert not got[~keep].any(), "test pixels outside the test region must be 0"
                near_edge = keep ^ np.pad(keep, 1)[1:-1, 2:]  # ignore pixels on the region's boundary
                assert np.array_equal(got[keep & ~near_edge], want[keep & ~near_edge])
            else:
                assert np.array_equal(got, want)


def test_test_split_holds_the_manual_crowns(scene, exported, cocos):
    _, summary = exported
    manual = gpd.read_file(scene.manual)
    got = {a["source_id"] for a in cocos["test"].dataset["annotations"]}
    assert got == set(manual["tree_id"].astype(int))
    assert summary["test_area"]["ground_truth"] == "manual"
    assert summary["test_area"]["ground_truth_crowns"] == len(manual)


def test_summary_states_rules_and_inputs(exported):
    out, summary = exported
    assert json.loads((out / "export.json").read_text()) == summary
    for key in ("chips", "sliver", "buffer", "validation", "val_gap", "test", "segmentation", "image"):
        assert summary["rules"][key]
    assert set(summary["inputs"]) == {"ortho", "labels", "holdout", "manual"}
    assert all(len(v["sha256"]) == 64 for v in summary["inputs"].values())
    assert summary["crs"] == "EPSG:3067" and summary["bands"] == [3, 2, 1] and summary["chip"] == CHIP
    assert summary["splits"]["train"]["dropped_slivers"] > 0
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_same_inputs_give_identical_output_and_replace_the_old_folder(scene, exported, tmp_path):
    out, _ = exported
    again = tmp_path / "coco"
    (again).mkdir()
    (again / "export.json").write_text("{}")  # an older export: replaced as a whole
    (again / "stale.txt").write_text("old")
    export(scene, again)
    for name in ("train.json", "val.json", "test.json", "export.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert not (again / "stale.txt").exists()
    pngs = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert pngs == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((out / p).read_bytes() == (again / p).read_bytes() for p in pngs)


def test_six_band_export_writes_tiff_chips(scene, tmp_path):
    out = tmp_path / "six"
    s = export_coco(scene.ortho, scene.truth, out, bands=(1, 2, 3, 4, 5, 6), chip=CHIP, val_fraction=0.0)
    assert s["image_format"] == "tif" and "test" not in s["splits"] and not (out / "test.json").exists()
    coco = COCO(str(out / "train.json"))
    assert len(coco.getImgIds()) == s["splits"]["train"]["chips"] == 25
    assert json.loads((out / "val.json").read_text())["images"] == []
    img = coco.loadImgs(coco.getImgIds())[7]
    arr = tifffile.imread(out / img["file_name"])
    assert arr.shape == (CHIP, CHIP, 6) and arr.dtype == np.uint8
    c = img["crownsam"]
    with rasterio.open(scene.ortho) as src:
        win = Window(c["col_off"], c["row_off"], CHIP, CHIP)
        want = apply_stretch(
            src.read(c["bands"], window=win),
            [(b["low"], b["high"]) for b in s["stretch"]["per_band"]],
            src.read_masks(1, window=win) > 0,
        )
    assert np.array_equal(arr, want)
    # truth crowns are tree_id-keyed: source ids come from tree_id
    ids = set(gpd.read_file(scene.truth)["tree_id"].astype(int))
    assert {a["source_id"] for a in coco.dataset["annotations"]} <= ids
    rle = coco.dataset["annotations"][0]["segmentation"]
    assert isinstance(rle["counts"], str) and mask_util.area({**rle, "counts": rle["counts"].encode()}) > 0
