"""Tiled inference: windows, merging across windows, georeferenced polygons.

Geometry is checked with a known-answer model: it returns each bright connected blob of the window it is
given (the synthetic crowns are bright on dark ground), so a crown cut by a window edge comes back cut,
exactly as a perfect Mask R-CNN would return it. Cut pieces get a *higher* score than whole crowns, so
the merge must prefer the uncut copy for the right reason, not by score.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import torch
from scipy import ndimage

from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.training.predict import (
    Instance,
    Win,
    axis_offsets,
    instances_from_output,
    merge_instances,
    plan_windows,
    predict_ortho,
)

try:
    from .synth import CRS, TRANSFORM, Ellipse, make_export, write_ortho
except ImportError:
    from synth import CRS, TRANSFORM, Ellipse, make_export, write_ortho


class BlobModel(torch.nn.Module):
    """Known answer: one instance per 4-connected blob of mean band value > 0.5 (score 0.9 when the blob
    touches the window border, 0.6 otherwise)."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outs = []
        for im in images:
            gray = im.mean(0).numpy()
            labels, n = ndimage.label(ndimage.binary_opening(gray > 0.5, iterations=1))
            masks, scores, boxes = [], [], []
            for k in range(1, n + 1):
                m = labels == k
                if m.sum() < 30:
                    continue
                rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
                border = (
                    rows[0] == 0 or cols[0] == 0 or rows[-1] == m.shape[0] - 1 or cols[-1] == m.shape[1] - 1
                )
                masks.append(m)
                scores.append(0.9 if border else 0.6)
                boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
            h, w = gray.shape
            outs.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.ones(len(masks), dtype=torch.int64),
                    "scores": torch.tensor(scores, dtype=torch.float32),
                    "masks": torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
                    if masks
                    else torch.zeros((0, 1, h, w)),
                }
            )
        return outs


def stretch_of(path, bands=(1, 2, 3)):
    from crownsam.common.raster import compute_stretch

    return compute_stretch(path, bands)


def iou(a, b):
    return a.intersection(b).area / a.union(b).area


def test_axis_offsets_cover_and_align_to_the_edge():
    assert axis_offsets(0, 300, 128, 96) == [0, 96, 172]
    assert axis_offsets(0, 100, 128, 96) == [0]
    assert axis_offsets(50, 300, 128, 64) == [50, 114, 172]
    wins = plan_windows(300, 400, 128, 0.25)
    assert {w.row for w in wins} == {0, 96, 172} and all(w.height == w.width == 128 for w in wins)
    first = next(w for w in wins if w.row == 0 and w.col == 0)
    assert first.inner == (False, True, False, True)


def test_every_crown_comes_out_once_across_overlapping_windows(tmp_path):
    s = make_export(tmp_path, grid=(2, 3))
    with rasterio.open(s.ortho) as src:
        height, width = src.height, src.width
    gdf, summary = predict_ortho(
        BlobModel(), s.ortho, (1, 2, 3), stretch_of(s.ortho), window=100, overlap=0.3
    )
    assert (
        summary["windows"] == len(plan_windows(height, width, 100, 0.3)) == 24
        and summary["duplicates_dropped"] > 0
    )
    assert gdf.crs.to_epsg() == 3067 and "score" in gdf and gdf["segment_id"].is_unique
    truth = [e.polygon() for e in s.crowns]
    # crowns that the window grid cuts: some window edge crosses them
    wins = plan_windows(height, width, 100, 0.3)
    edges = {w.col for w in wins} | {w.col + w.width for w in wins}
    cut = [e for e in s.crowns if any(e.cx - e.a < x < e.cx + e.a for x in edges if 0 < x < width)]
    assert len(cut) >= 5
    assert len(gdf) == len(truth)
    for t in truth:
        best = max(iou(t, g) for g in gdf.geometry)
        assert best > 0.85
    # every prediction is the whole crown, never a cut piece
    assert not gdf["cut_by_window"].any()


def test_a_crown_wider_than_the_overlap_is_stitched(tmp_path):
    path = tmp_path / "big.tif"
    crowns = [Ellipse(cx=150, cy=60, a=70, b=40), Ellipse(cx=40, cy=200, a=15, b=15)]
    write_ortho(path, 256, 300, 3, crowns, seed=1)
    gdf, summary = predict_ortho(BlobModel(), path, (1, 2, 3), stretch_of(path), window=128, overlap=0.25)
    assert summary["stitched_from"] >= 2
    assert len(gdf) == 2
    big = crowns[0].polygon()
    assert max(iou(big, g) for g in gdf.geometry) > 0.9
    assert gdf.loc[gdf.geometry.area.idxmax(), "stitched_from"] >= 2


def test_area_limits_windows_and_keeps_crowns_with_centroid_inside(tmp_path):
    s = make_export(tmp_path, grid=(2, 3))
    area = gpd.read_file(s.area).geometry.iloc[0]
    gdf, summary = predict_ortho(
        BlobModel(), s.ortho, (1, 2, 3), stretch_of(s.ortho), area=area, window=128, overlap=0.25
    )
    # the 128-px-high area grown by 32 px: rows 96 and 128, columns 0, 96, 192, 256
    assert summary["windows"] == 8
    inside = [e.polygon() for e in s.crowns if area.covers(e.polygon().centroid)]
    assert len(gdf) == len(inside)
    assert shapely.covers(area, gdf.geometry.centroid.values).all()


def _inst(r, c, mask, score, win=(0, 0), rect=(0, 0, 100, 100), cut=False):
    return Instance(r, c, np.asarray(mask, bool), score, win, rect, cut)


def test_merge_rules_iou_containment_and_neighbours():
    sq = np.ones((20, 20), bool)
    # IoU 0.67: one kept, the higher score
    a, b = _inst(0, 0, sq, 0.7), _inst(0, 5, sq, 0.8, win=(0, 50), rect=(0, 50, 100, 150))
    kept, counts = merge_instances([a, b])
    assert kept == [b] and counts["duplicates_dropped"] == 1
    # small one 100 % inside a big one (IoU 0.25): containment rule, the higher score wins
    big, small = _inst(0, 0, np.ones((40, 40)), 0.6), _inst(10, 10, sq, 0.9, win=(0, 50))
    assert merge_instances([big, small])[0] == [small]
    # neighbours touching with a few shared pixels: both kept
    n1, n2 = _inst(0, 0, sq, 0.9), _inst(0, 18, sq, 0.8, win=(0, 50))
    assert len(merge_instances([n1, n2])[0]) == 2
    # an uncut copy beats a higher-score cut copy
    whole, piece = _inst(0, 0, sq, 0.5), _inst(0, 0, np.ones((20, 12)), 0.99, cut=True, win=(0, 50))
    assert merge_instances([piece, whole])[0] == [whole]


def test_instances_from_output_flags_inner_edges_and_drops_low_scores():
    m = torch.zeros((2, 1, 64, 64))
    m[0, 0, 10:20, 50:64] = 1  # touches the right edge
    m[1, 0, 30:40, 30:40] = 1
    out = {"scores": torch.tensor([0.9, 0.3]), "masks": m}
    win = Win(100, 200, 64, 64, (False, False, False, True))
    inst = instances_from_output(out, win, 0.5)
    assert len(inst) == 1 and inst[0].cut and (inst[0].row, inst[0].col) == (110, 250)
    win_edge = Win(100, 200, 64, 64, (False, False, False, False))  # right side is the raster edge
    assert not instances_from_output(out, win_edge, 0.5)[0].cut


def test_polygons_are_georeferenced(tmp_path):
    path = tmp_path / "one.tif"
    e = Ellipse(cx=70, cy=50, a=20, b=12)
    write_ortho(path, 128, 160, 3, [e], seed=2)
    gdf, _ = predict_ortho(BlobModel(), path, (1, 2, 3), stretch_of(path), window=128, overlap=0.25)
    assert len(gdf) == 1 and gdf.crs.to_string() == CRS
    assert iou(gdf.geometry.iloc[0], e.polygon(TRANSFORM)) > 0.9
    assert gdf["area"].iloc[0] == pytest.approx(gdf.geometry.iloc[0].area)


# ------------------------------------------------------------------------ the window loop (--workers)


def _with_nodata_corner(path) -> None:
    """Zero a corner of every band and declare 0 nodata, so that masks are cut to valid pixels."""
    with rasterio.open(path, "r+") as dst:
        data = dst.read()
        data[:, : data.shape[1] // 3, : data.shape[2] // 4] = 0
        dst.write(data)
        dst.nodata = 0


def assert_same_crowns(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    """Row for row: the same attributes and exactly the same geometries, in the same order."""
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0.0).all()


def predict_with(workers: int, *args, **kwargs) -> tuple[gpd.GeoDataFrame, dict]:
    gdf, summary = predict_ortho(*args, **kwargs, loop=WindowLoopParams(workers=workers))
    assert summary["window_loop"]["workers"] == workers
    return gdf, summary


COUNTS = ("windows", "instances", "stitched_from", "duplicates_dropped", "kept", "crowns")


@pytest.mark.parametrize("batch_size", [1, 3])
def test_crowns_do_not_depend_on_workers(tmp_path, batch_size):
    """Known-answer model, 24 overlapping windows with cut, stitched and duplicate crowns and nodata."""
    s = make_export(tmp_path, grid=(2, 3))
    _with_nodata_corner(s.ortho)
    args = (BlobModel(), s.ortho, (1, 2, 3), stretch_of(s.ortho))
    kw = {"window": 100, "overlap": 0.3, "batch_size": batch_size}
    seq, s0 = predict_with(0, *args, **kw)
    par, s2 = predict_with(2, *args, **kw)
    assert s0["windows"] == 24 and s0["duplicates_dropped"] > 0 and len(seq) > 10
    assert {k: s0[k] for k in COUNTS} == {k: s2[k] for k in COUNTS}
    assert_same_crowns(seq, par)


class SeesTheBlockCache(BlobModel):
    """:class:`BlobModel`, recording GDAL's block cache size (bytes) at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: set[int] = set()

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        from rasterio._env import get_gdal_config

        self.cache.add(int(get_gdal_config("GDAL_CACHEMAX")))
        return super().forward(images)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_block_cache_holds_a_row_of_windows_during_the_loop(tmp_path, workers):
    """While the windows are read, GDAL's block cache is what one row of windows needs, not GDAL's
    default; the size before comes back after."""
    from rasterio._env import get_gdal_config

    from crownsam.common.raster import window_rows_cache_mib

    before = int(get_gdal_config("GDAL_CACHEMAX"))
    s = make_export(tmp_path, grid=(2, 3))
    model = SeesTheBlockCache()
    predict_with(workers, model, s.ortho, (1, 2, 3), stretch_of(s.ortho), window=100, overlap=0.3)
    with rasterio.open(s.ortho) as src:
        want = int(window_rows_cache_mib(src, 100) * 2**20)
    assert model.cache == {want} and 0 < want < before
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before


@pytest.mark.parametrize("workers", [0, 2])
def test_a_raster_too_wide_for_the_cache_is_read_in_strips(tmp_path, workers, monkeypatch):
    """With a cache budget below one row of windows across the raster, windows are read in strips, with
    the strips' cache; the crowns are those of row-major order, row for row."""
    from rasterio.shutil import copy

    from crownsam.common import raster
    from crownsam.common.raster import window_rows_cache_mib, window_strips

    s = make_export(tmp_path, grid=(2, 3))
    _with_nodata_corner(s.ortho)
    ortho = tmp_path / "tiled.tif"  # blocks of 32 px: strips narrower than the raster need fewer
    copy(s.ortho, ortho, tiled=True, blockxsize=32, blockysize=32)
    args = (BlobModel(), ortho, (1, 2, 3), stretch_of(ortho))
    kw = {"window": 100, "overlap": 0.3}
    rows, s0 = predict_with(workers, *args, **kw)
    with rasterio.open(ortho) as src:
        monkeypatch.setattr(raster, "WINDOW_CACHE_MIB", window_rows_cache_mib(src, 100) * 0.6)
        strip, mib = window_strips(src, 100, 70)
        assert strip < src.width
    model = SeesTheBlockCache()
    strips, s1 = predict_with(workers, model, *args[1:], **kw)
    assert model.cache == {int(mib * 2**20)}
    assert s0["windows"] == 24 and len(rows) > 10
    assert {k: s0[k] for k in COUNTS} == {k: s1[k] for k in COUNTS}
    assert_same_crowns(rows, strips)


def test_untrained_mask_rcnn_crowns_do_not_depend_on_workers(tmp_path):
    """A tiny untrained torchvision Mask R-CNN (its outlines mean nothing): the same crowns either way."""
    from crownsam.training.model import build_model

    torch.manual_seed(0)
    model = build_model("v1", 3, chip=128, rpn_post_nms_top_n_test=50, box_detections_per_img=8)
    path = tmp_path / "o.tif"
    write_ortho(
        path, 200, 220, 3, [Ellipse(cx=60, cy=60, a=25, b=18), Ellipse(cx=150, cy=130, a=30, b=22)], 5
    )
    args = (model, path, (1, 2, 3), stretch_of(path))
    kw = {"window": 128, "overlap": 0.25, "score_threshold": 0.0}
    seq, s0 = predict_with(0, *args, **kw)
    par, s2 = predict_with(2, *args, **kw)
    assert s0["windows"] == 4 and s0["instances"] > 0
    assert {k: s0[k] for k in COUNTS} == {k: s2[k] for k in COUNTS}
    assert_same_crowns(seq, par)


def test_the_crown_comparison_sees_a_one_pixel_shift(tmp_path):
    """The comparison above is not vacuous: one crown moved by a pixel fails it."""
    path = tmp_path / "one.tif"
    write_ortho(path, 128, 160, 3, [Ellipse(cx=70, cy=50, a=20, b=12)], seed=2)
    gdf, _ = predict_ortho(BlobModel(), path, (1, 2, 3), stretch_of(path), window=128, overlap=0.25)
    moved = gdf.copy()
    moved["geometry"] = shapely.affinity.translate(gdf.geometry.iloc[0], xoff=TRANSFORM.a)
    with pytest.raises(AssertionError):
        assert_same_crowns(gdf, moved)
