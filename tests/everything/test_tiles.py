"""The tile grid: own regions partition the raster, read windows hold their padding, strips are shared."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from crownsam.everything.tiles import owned_spans, shared_strip, tile_grid
from crownsam.tiling.grid import owner, window_offsets


@pytest.mark.parametrize(
    ("width", "height", "tile", "padding"),
    [(1536, 1536, 512, 64), (1300, 700, 512, 100), (200, 3000, 1024, 128), (1024, 1024, 1024, 0)],
)
def test_own_regions_partition_the_raster_and_reads_hold_them(
    width: int, height: int, tile: int, padding: int
) -> None:
    grid = tile_grid(width, height, tile, padding)
    count = np.zeros((height, width), dtype=np.int32)
    for t in grid.tiles:
        r0, c0, r1, c1 = t.own
        count[r0:r1, c0:c1] += 1
        # own inside the tile itself, the tile inside its read window, the read window inside the raster
        assert t.read[0] <= t.core[0] <= r0 < r1 <= t.core[2] <= t.read[2]
        assert t.read[1] <= t.core[1] <= c0 < c1 <= t.core[3] <= t.read[3]
        assert t.read[0] == max(0, t.core[0] - padding) and t.read[2] == min(height, t.core[2] + padding)
        assert t.read[1] == max(0, t.core[1] - padding) and t.read[3] == min(width, t.core[3] + padding)
        assert t.core[2] - t.core[0] == min(tile, height)
    assert (count == 1).all()
    assert grid.rows * grid.cols == len(grid.tiles)


def test_owned_spans_follow_the_tiling_ownership_rule() -> None:
    """A pixel belongs to the tile that owns its centre (``tiling.grid.owner``), edge-aligned tiles too."""
    for length, size in [(1300, 512), (1536, 512), (700, 256), (100, 512)]:
        offsets = window_offsets(length, size, size)
        spans = owned_spans(offsets, length, size)
        want = owner(np.arange(length) + 0.5, offsets, length, size)
        got = np.concatenate([np.full(hi - lo, k) for k, (lo, hi) in enumerate(spans)])
        assert (got == want).all()


def test_edge_aligned_last_tile_splits_the_overlap_midway() -> None:
    grid = tile_grid(1300, 512, 512, 64)
    cols = [t for t in grid.tiles if t.row == 0]
    assert [t.core[1] for t in cols] == [0, 512, 788]
    # tiles 1 and 2 overlap on 788..1024: the seam is midway between their centres (768 and 1044)
    assert cols[1].own[3] == cols[2].own[1] == 906


def test_shared_strips_are_symmetric_and_straddle_the_seam() -> None:
    grid = tile_grid(1536, 1536, 512, 64)
    for a, b in itertools.permutations(grid.tiles, 2):
        s = shared_strip(a, b)
        adjacent = max(abs(a.row - b.row), abs(a.col - b.col)) == 1
        assert (s is not None) == adjacent
        assert s == shared_strip(b, a)
    a, b = grid.at(0, 0), grid.at(0, 1)
    assert shared_strip(a, b) == (0, 448, 576, 576)  # columns 448..576: 64 px each side of the seam at 512
    assert len(grid.neighbours(grid.at(1, 1))) == 8 and len(grid.neighbours(a)) == 3
