"""Pure chip planning for the COCO export: the chip grid, the test-area exclusion, spatial validation
blocks with a gap, and the test-area chips. No I/O.

Pixel offsets are ``(row_off, col_off)`` of a chip's top-left pixel; every chip is ``size x size`` pixels
and lies wholly inside the raster (edge chips are shifted inward, never padded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio import Affine

from crownsam.tiling.grid import window_offsets


@dataclass(frozen=True)
class Chip:
    """One chip: its pixel offsets, its place in the chip grid (``-1`` for test chips) and its image id."""

    row_off: int
    col_off: int
    grid_row: int
    grid_col: int
    image_id: int

    @property
    def name(self) -> str:
        """File stem, e.g. ``r00000_c01536``."""
        return f"r{self.row_off:05d}_c{self.col_off:05d}"


def chip_stride(size: int, overlap: float) -> int:
    """Stride between neighbouring chips: ``max(1, round(size * (1 - overlap)))`` pixels."""
    return max(1, round(size * (1.0 - overlap)))


def axis_offsets(length: int, size: int, stride: int) -> list[int]:
    """Chip starts along one axis of ``length`` pixels (``length >= size``).

    ``o_k = k * stride`` while ``o_k + size <= length``; if that misses the end, one more chip at
    ``length - size`` (aligned to the raster edge, so no chip needs padding).
    """
    if length < size:
        raise ValueError(f"axis of {length} px is shorter than one chip of {size} px")
    return window_offsets(length, size, stride)


def grid_chips(height: int, width: int, size: int, stride: int) -> list[Chip]:
    """All chips of the raster grid in row-major order; image id ``= grid_row * n_cols + grid_col + 1``."""
    rows, cols = axis_offsets(height, size, stride), axis_offsets(width, size, stride)
    return [Chip(r, c, i, j, i * len(cols) + j + 1) for i, r in enumerate(rows) for j, c in enumerate(cols)]


def chip_transform(transform: Affine, chip: Chip) -> Affine:
    """The chip's affine: the raster's transform moved to the chip's top-left pixel."""
    return transform @ Affine.translation(chip.col_off, chip.row_off)


def footprint(transform: Affine, row_off: int, col_off: int, size: int) -> shapely.Polygon:
    """The chip's outline in map coordinates (its four pixel-edge corners; exact for rotated rasters)."""
    corners = [(0, 0), (size, 0), (size, size), (0, size)]
    return shapely.Polygon([transform @ (col_off + c, row_off + r) for c, r in corners])


def footprints(transform: Affine, chips: Sequence[Chip], size: int) -> np.ndarray:
    """Array of chip outlines (shapely polygons), one per chip."""
    return np.array([footprint(transform, ch.row_off, ch.col_off, size) for ch in chips], dtype=object)


def touching(chips_fp: np.ndarray, zone: shapely.Geometry | None) -> np.ndarray:
    """Boolean mask: chips whose outline intersects (or only touches) ``zone``; all False without one."""
    if zone is None or zone.is_empty:
        return np.zeros(len(chips_fp), dtype=bool)
    return shapely.intersects(chips_fp, zone)


def assign_val_blocks(
    chips: Sequence[Chip], fraction: float, block: int, seed: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pick validation chips as whole spatial blocks; return (val mask, chosen block keys).

    A chip belongs to block ``(grid_row // block, grid_col // block)``. Blocks are visited in the order
    of ``numpy.random.default_rng(seed).permutation`` over the sorted block keys; with target
    ``T = fraction * len(chips)`` and ``v`` chips chosen so far, a block of ``n`` chips is taken when
    ``v + n / 2 < T`` (it brings ``v`` closer to ``T``), and the walk stops once ``v >= T``. If
    ``fraction > 0`` and no block qualified, the smallest block (first in the visiting order) is taken,
    so validation is never empty.
    """
    val = np.zeros(len(chips), dtype=bool)
    if fraction <= 0 or not chips:
        return val, []
    keys = np.array([(ch.grid_row // block, ch.grid_col // block) for ch in chips], dtype=np.int64)
    uniq, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    order = np.random.default_rng(seed).permutation(len(uniq))
    target = fraction * len(chips)
    chosen: list[int] = []
    v = 0
    for k in order:
        if v >= target:
            break
        if v + counts[k] / 2 < target:
            chosen.append(int(k))
            v += int(counts[k])
    if not chosen:
        chosen = [int(min(order, key=lambda k: counts[k]))]
    for k in chosen:
        val |= inverse == k
    return val, [(int(uniq[k][0]), int(uniq[k][1])) for k in chosen]


def overlapping(a: Sequence[Chip], b: Sequence[Chip], size: int) -> np.ndarray:
    """For each chip of ``a``: does it share a pixel with any chip of ``b``?

    Two ``size``-px chips share pixels iff ``|row_a - row_b| < size`` and ``|col_a - col_b| < size``.
    """
    if not a or not b:
        return np.zeros(len(a), dtype=bool)
    ra = np.array([[c.row_off, c.col_off] for c in a], dtype=np.int64)
    rb = np.array([[c.row_off, c.col_off] for c in b], dtype=np.int64)
    out = np.zeros(len(a), dtype=bool)
    for start in range(0, len(ra), 1024):  # bounded memory for large grids
        d = np.abs(ra[start : start + 1024, None, :] - rb[None, :, :])
        out[start : start + 1024] = ((d[..., 0] < size) & (d[..., 1] < size)).any(axis=1)
    return out


def pixel_bounds(transform: Affine, geom: shapely.Geometry, height: int, width: int) -> tuple[int, ...]:
    """Integer pixel box ``(r0, c0, r1, c1)`` covering ``geom`` (outward-rounded), clipped to the raster."""
    inv = ~transform
    xmin, ymin, xmax, ymax = geom.bounds
    pts = [inv @ (x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
    cols, rows = [p[0] for p in pts], [p[1] for p in pts]
    r0 = min(max(math.floor(min(rows)), 0), height)
    r1 = min(max(math.ceil(max(rows)), 0), height)
    c0 = min(max(math.floor(min(cols)), 0), width)
    c1 = min(max(math.ceil(max(cols)), 0), width)
    return r0, c0, r1, c1


def span_offsets(lo: int, hi: int, size: int, stride: int, length: int) -> list[int]:
    """Chip starts covering pixels ``[lo, hi)`` of an axis of ``length`` px (``size <= length``).

    A span of at most ``size`` px gets one chip centred on it, ``clamp(lo - (size - (hi - lo)) // 2,
    0, length - size)``; a longer span gets ``lo + axis_offsets(hi - lo, size, stride)``.
    """
    n = hi - lo
    if n <= size:
        return [min(max(lo - (size - n) // 2, 0), length - size)]
    return [lo + o for o in axis_offsets(n, size, stride)]


def holdout_chips(
    transform: Affine,
    region: shapely.Geometry,
    height: int,
    width: int,
    size: int,
    stride: int,
    first_id: int,
) -> list[Chip]:
    """Chips tiled over the bounding box of the test ``region`` (row-major; ids from ``first_id``);
    chips that do not reach into ``region`` itself are left out."""
    r0, c0, r1, c1 = pixel_bounds(transform, region, height, width)
    if r1 <= r0 or c1 <= c0:
        return []
    rows = span_offsets(r0, r1, size, stride, height)
    cols = span_offsets(c0, c1, size, stride, width)
    out: list[Chip] = []
    for r in rows:
        for c in cols:
            fp = footprint(transform, r, c, size)
            if shapely.intersection(fp, region).area > 0:
                out.append(Chip(r, c, -1, -1, first_id + len(out)))
    return out
