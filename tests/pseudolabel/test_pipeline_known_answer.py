"""Geometry end to end on the synthetic scene with a known-answer predictor.

The predictor returns the true crown mask for each box, so every pixel of disagreement between the
pseudolabels and ``truth.gpkg`` comes from our tiling, box, window-read or georeferencing code. Besides
the mean Jaccard, the check measures the mean centroid displacement: a one-pixel (or half-pixel) offset
anywhere in the chain shows up there even for large crowns, and a test below proves the check catches it.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from crownsam import cli
from crownsam.common.errors import InputError
from crownsam.common.raster import apply_stretch
from crownsam.pseudolabel.api import PseudolabelRequest, run_pseudolabel
from crownsam.pseudolabel.merge import merge_shards
from crownsam.pseudolabel.predictor import KnownAnswerPredictor
from crownsam.synthetic import generate_scene
from crownsam.tiling.plan import plan_from_files

GSD = 0.025


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("scene"), size=1536, seed=3)


@pytest.fixture(scope="module")
def truth(scene) -> gpd.GeoDataFrame:
    return gpd.read_file(scene.truth)


def oracle(scene, truth) -> KnownAnswerPredictor:
    with rasterio.open(scene.ortho) as src:
        return KnownAnswerPredictor(truth, src.transform)


@pytest.fixture(scope="module")
def labelled(scene, truth, tmp_path_factory) -> tuple[gpd.GeoDataFrame, dict]:
    out = tmp_path_factory.mktemp("out") / "pseudo.gpkg"
    req = PseudolabelRequest(ortho=str(scene.ortho), segments=str(scene.coarse), out=str(out), progress=False)
    summary = run_pseudolabel(req, predictor=oracle(scene, truth))
    return gpd.read_file(out), summary


ONE_CROWN = ("none", "dilated", "eroded", "offset")  # coarse errors whose box still names one crown


def one_crown_ids(coarse: gpd.GeoDataFrame) -> set[int]:
    """Segments whose box prompts exactly one crown (not merged, split, or false segments)."""
    return set(coarse.loc[coarse["error"].isin(ONE_CROWN), "segment_id"].astype(int))


def match_errors(labels: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, ids: set[int]) -> dict[str, float]:
    """For labels of segments ``ids``: the truth crown of highest IoU; mean IoU and the median centroid
    displacement in pixels (robust to the odd wrong crown, exact for a systematic offset)."""
    tree = shapely.STRtree(truth.geometry.values)
    ious, dx, dy = [], [], []
    for sid, g in zip(labels["segment_id"], labels.geometry, strict=True):
        if int(sid) not in ids:
            continue
        t = truth.geometry.values[tree.query(g)]
        iou = (
            shapely.area(shapely.intersection(t, g)) / shapely.area(shapely.union(t, g)) if len(t) else [0.0]
        )
        ious.append(float(np.max(iou)))
        if len(t):
            best = t[int(np.argmax(iou))]
            dx.append((g.centroid.x - best.centroid.x) / GSD)
            dy.append((g.centroid.y - best.centroid.y) / GSD)
    return {
        "n": len(ious),
        "jaccard": float(np.mean(ious)),
        "bias_x_px": float(np.median(dx)),
        "bias_y_px": float(np.median(dy)),
    }


def assert_reproduces_truth(labels: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, ids: set[int]) -> dict:
    e = match_errors(labels, truth, ids)
    assert e["n"] >= 0.8 * len(ids), e
    assert e["jaccard"] >= 0.95, e
    assert abs(e["bias_x_px"]) < 0.25 and abs(e["bias_y_px"]) < 0.25, e
    return e


def test_known_answer_reproduces_truth_and_beats_coarse(labelled, truth, scene) -> None:
    labels, summary = labelled
    coarse = gpd.read_file(scene.coarse)
    ids = one_crown_ids(coarse)
    e = assert_reproduces_truth(labels, truth, ids)
    coarse = match_errors(coarse, truth, ids)
    assert coarse["jaccard"] < e["jaccard"] - 0.1, (coarse, e)
    assert labels.crs.to_epsg() == 3067
    assert summary["segments_labeled"] == len(labels) > 0
    assert summary["windows_processed"] == summary["windows_planned"] == 4
    assert summary["segments_prompted"] + summary["segments_skipped"] >= summary["segments_total"]


@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (0, -1), (0.5, 0.5)])
def test_the_check_catches_a_pixel_offset(labelled, truth, scene, dx, dy) -> None:
    """The same pseudolabels shifted by one (or half a) pixel must fail the reproduction check."""
    labels, _ = labelled
    shifted = labels.set_geometry(labels.geometry.translate(dx * GSD, dy * GSD))
    with pytest.raises(AssertionError):
        assert_reproduces_truth(shifted, truth, one_crown_ids(gpd.read_file(scene.coarse)))


def test_shards_merged_equal_one_run(scene, truth, labelled, tmp_path) -> None:
    plan, _, _ = plan_from_files(str(scene.ortho), str(scene.coarse))
    plan.save(tmp_path / "plan.json")
    outs = []
    for i in range(3):
        out = tmp_path / f"shard{i}.gpkg"
        req = PseudolabelRequest(
            ortho=str(scene.ortho),
            segments=str(scene.coarse),
            out=str(out),
            plan=str(tmp_path / "plan.json"),
            shard=(i, 3),
            progress=False,
        )
        run_pseudolabel(req, predictor=oracle(scene, truth))
        outs.append(str(out))
    assert cli.main(["merge-labels", "--inputs", *outs, "--out", str(tmp_path / "merged.gpkg")]) == 0
    merged = gpd.read_file(tmp_path / "merged.gpkg")
    whole, whole_summary = labelled
    assert merged.segment_id.tolist() == whole.segment_id.tolist()
    assert all(a.equals(b) for a, b in zip(merged.geometry, whole.geometry, strict=True))
    s = json.loads((tmp_path / "merged.summary.json").read_text())
    for k in ("windows_processed", "segments_prompted", "segments_labeled", "segments_skipped"):
        assert s[k] == whole_summary[k], k
    assert s["skipped_by_reason"] == whole_summary["skipped_by_reason"]

    # a missing or duplicated shard is refused, and nothing is written
    for bad in ([outs[0], outs[2]], [outs[0], outs[1], outs[1]]):
        target = tmp_path / "bad.gpkg"
        with pytest.raises(InputError, match="shards of 3"):
            merge_shards(bad, str(target))
        assert not target.exists()


class Recorder(KnownAnswerPredictor):
    """Keeps every window image it is given."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.images: dict[tuple[int, int], np.ndarray] = {}

    def set_image(self, image, window) -> None:
        self.images[(window.row_off, window.col_off)] = image.copy()
        super().set_image(image, window)


def test_window_images_are_the_stretched_raster_and_seamless(scene, truth, tmp_path) -> None:
    """Each window image equals the whole stretched raster sliced at the window offsets, padded to 1024,
    so overlapping windows agree pixel for pixel (one scene-wide stretch, no per-window seams)."""
    with rasterio.open(scene.ortho) as src:
        rec = Recorder(truth, src.transform)
        req = PseudolabelRequest(
            ortho=str(scene.ortho), segments=str(scene.coarse), out=str(tmp_path / "p.gpkg"), progress=False
        )
        run_pseudolabel(req, predictor=rec)
        stretch = plan_from_files(str(scene.ortho), str(scene.coarse))[0].stretch
        full = src.read([3, 2, 1], window=Window(0, 0, src.width, src.height))
        valid = src.read_masks(3) > 0
    expected = apply_stretch(full, stretch, valid)
    assert len(rec.images) == 4  # 1536 px: windows at 0 and 512 on each axis
    for (r, c), img in rec.images.items():
        assert img.shape == (1024, 1024, 3)
        h, w = min(1024, expected.shape[0] - r), min(1024, expected.shape[1] - c)
        np.testing.assert_array_equal(img[:h, :w], expected[r : r + h, c : c + w])
        assert not img[h:, :].any() and not img[:, w:].any()
