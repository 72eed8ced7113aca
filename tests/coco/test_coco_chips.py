"""Pure chip planning and annotation helpers: grid, validation blocks, gap, test-area chips, sliver rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_util
from rasterio import Affine

from crownsam.coco.annotations import SliverRule, annotate, rasterize_local
from crownsam.coco.chips import (
    Chip,
    assign_val_blocks,
    axis_offsets,
    chip_stride,
    footprint,
    grid_chips,
    holdout_chips,
    overlapping,
    span_offsets,
)
from crownsam.common.vector import polygonal

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")
T = Affine(0.025, 0.0, 385000.0, 0.0, -0.025, 6672000.0)


def px_box(c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
    """Map polygon of pixel columns c0..c1, rows r0..r1 under ``T``."""
    return shapely.box(*(T @ (c0, r1)), *(T @ (c1, r0)))


@given(length=st.integers(16, 5000), size=st.integers(16, 1024), overlap=st.floats(0, 0.9))
def test_axis_offsets_cover_the_axis_with_full_chips(length, size, overlap):
    if size > length:
        with pytest.raises(ValueError):
            axis_offsets(length, size, chip_stride(size, overlap))
        return
    stride = chip_stride(size, overlap)
    offs = axis_offsets(length, size, stride)
    assert offs[0] == 0 and offs[-1] == length - size  # aligned to both edges, all chips full-size
    assert all(0 < b - a <= stride for a, b in itertools.pairwise(offs))


def test_grid_ids_are_row_major_and_names_carry_offsets():
    chips = grid_chips(1000, 1300, 512, 384)
    assert [(c.row_off, c.col_off) for c in chips[:4]] == [(0, 0), (0, 384), (0, 768), (0, 788)]
    assert [c.image_id for c in chips] == list(range(1, len(chips) + 1))
    assert chips[5].name == "r00384_c00384"


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(1, 12),
    n_cols=st.integers(1, 12),
    fraction=st.floats(0.01, 0.9),
    block=st.integers(1, 5),
    seed=st.integers(0, 3),
)
def test_val_blocks_are_whole_blocks_near_the_target(n_rows, n_cols, fraction, block, seed):
    chips = [Chip(i * 10, j * 10, i, j, i * n_cols + j + 1) for i in range(n_rows) for j in range(n_cols)]
    val, blocks = assign_val_blocks(chips, fraction, block, seed)
    again, _ = assign_val_blocks(chips, fraction, block, seed)
    assert np.array_equal(val, again)  # seeded
    keys = [(c.grid_row // block, c.grid_col // block) for c in chips]
    assert val.any() and {k for k, v in zip(keys, val, strict=True) if v} == set(blocks)
    for k, v in zip(keys, val, strict=True):
        assert v == (k in set(blocks))  # a block is val as a whole or not at all
    # every block but the last one taken was taken while below the target
    if len(blocks) > 1:
        assert val.sum() - block * block < fraction * len(chips) + 1e-9


def test_val_fraction_zero_means_no_val():
    chips = grid_chips(2048, 2048, 512, 384)
    val, blocks = assign_val_blocks(chips, 0.0, 4, 0)
    assert not val.any() and blocks == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=6), st.data())
def test_overlapping_matches_shared_pixels(a_offs, data):
    size = 16
    b_offs = data.draw(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=6))
    a = [Chip(r, c, 0, 0, 0) for r, c in a_offs]
    b = [Chip(r, c, 0, 0, 0) for r, c in b_offs]

    def pixels(ch):
        return {(ch.row_off + i, ch.col_off + j) for i in range(size) for j in range(size)}

    want = [any(pixels(x) & pixels(y) for y in b) for x in a]
    assert overlapping(a, b, size).tolist() == want


@given(lo=st.integers(0, 3000), n=st.integers(1, 3000), size=st.integers(16, 700))
def test_span_offsets_cover_the_span_inside_the_raster(lo, n, size):
    length = max(lo + n, size) + 7
    offs = span_offsets(lo, lo + n, size, chip_stride(size, 0.25), length)
    assert all(0 <= o <= length - size for o in offs)
    covered = np.zeros(length, bool)
    for o in offs:
        covered[o : o + size] = True
    assert covered[lo : lo + n].all()


def test_holdout_chips_cover_the_region_and_skip_empty_corners():
    # an L-shaped region: the chip over the missing corner of its bbox is left out
    region = shapely.union_all([px_box(100, 100, 900, 300), px_box(100, 100, 300, 900)])
    chips = holdout_chips(T, region, 2000, 2000, 256, 192, first_id=50)
    cover = shapely.union_all([footprint(T, c.row_off, c.col_off, 256) for c in chips])
    assert cover.contains(region)
    assert all(footprint(T, c.row_off, c.col_off, 256).intersection(region).area > 0 for c in chips)
    assert [c.image_id for c in chips] == list(range(50, 50 + len(chips)))
    # a region smaller than a chip gets one chip centred on it, moved inside the raster at the edge
    (one,) = holdout_chips(T, px_box(1900, 10, 1950, 60), 2000, 2000, 256, 192, first_id=1)
    assert (one.row_off, one.col_off) == (0, 2000 - 256)


def test_rasterize_local_equals_a_full_rasterization():
    import rasterio.features

    g = shapely.Point(*(T @ (40.3, 70.9))).buffer(0.6)  # circle of 24 px radius, partly off the chip
    t = T @ Affine.translation(20, 60)
    full = rasterio.features.rasterize([(g, 1)], out_shape=(64, 64), transform=t).astype(bool)
    assert np.array_equal(rasterize_local(g, t, 64, 64), full) and full.any()


def test_sliver_rule_and_rle_consistency():
    rule = SliverRule(0.2, 64)
    crown = px_box(0, 0, 100, 20)  # 2000 px
    chip = px_box(50, -50, 200, 200)  # cuts off the left half
    body, reason = annotate(crown, chip, T, 300, 300, rule)
    assert reason == "kept" and body["area"] == 50 * 20 and body["bbox"] == [50.0, 0.0, 50.0, 20.0]
    rle = {**body["segmentation"], "counts": body["segmentation"]["counts"].encode()}
    m = mask_util.decode(rle)
    assert m.shape == (300, 300) and m[0:20, 50:100].all() and m.sum() == 1000
    assert annotate(crown, px_box(85, -50, 200, 200), T, 300, 300, rule) == (None, "sliver")  # 15 % left
    assert annotate(px_box(5, 5, 12, 12), chip.union(px_box(0, 0, 50, 50)), T, 300, 300, rule) == (
        None,
        "tiny",
    )  # 49 px, uncut
    assert annotate(crown, px_box(500, 500, 600, 600), T, 300, 300, rule) == (None, "outside")
    # a crown touching the chip along an edge only contributes no line pixels
    touching = shapely.union_all([px_box(0, 0, 40, 40), px_box(40, 0, 41, 80)])
    assert polygonal(shapely.intersection(touching, px_box(0, 0, 40, 100))).geom_type == "Polygon"


def test_holes_survive_in_rle_masks():
    ring = px_box(0, 0, 60, 60).difference(px_box(20, 20, 40, 40))
    body, _ = annotate(ring, px_box(0, 0, 100, 100), T, 100, 100, SliverRule())
    m = mask_util.decode({**body["segmentation"], "counts": body["segmentation"]["counts"].encode()})
    assert body["area"] == 3600 - 400 and not m[25:35, 25:35].any()
