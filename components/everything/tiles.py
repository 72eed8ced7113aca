"""The tile grid of segment-everything: tiles, the pixels each one owns, its padded read window, and the
strips it shares with its neighbours. Pure arithmetic on integer pixel spans (no I/O).

Pixel spans are half-open ``[lo, hi)`` in raster pixels; a rectangle is ``(r0, c0, r1, c1)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from rasterio.windows import Window

from crownsam.tiling.grid import ownership_bounds, window_offsets
from crownsam.tiling.plan import WindowTask

Rect = tuple[int, int, int, int]  # (r0, c0, r1, c1), half-open

# Neighbours that come later in row-major order: right, down-left, down, down-right.
FORWARD = ((0, 1), (1, -1), (1, 0), (1, 1))
ALL_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def tile_key(row: int, col: int) -> str:
    """``r003c012``: the same key as a pseudolabel window at that grid position."""
    return f"r{row:03d}c{col:03d}"


def owned_spans(offsets: list[int], length: int, size: int) -> list[tuple[int, int]]:
    """Pixels owned by each tile along one axis: pixel ``i`` (centre ``i + 0.5``) belongs to the tile
    whose ownership range ``[b_{k-1}, b_k)`` (``tiling.grid.ownership_bounds``) holds its centre, so
    ``lo_k = ceil(b_{k-1} - 0.5)``. With stride = tile size the seams are the tile edges; an edge-aligned
    last tile splits its overlap with the previous one midway. The spans partition ``[0, length)``."""
    bounds = ownership_bounds(offsets, length, size)
    cuts = [0, *(math.ceil(b - 0.5) for b in bounds), length]
    return list(itertools.pairwise(cuts))


def intersect(a: Rect, b: Rect) -> Rect | None:
    """Intersection of two rectangles, or None when they share no pixel."""
    r0, c0, r1, c1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (r0, c0, r1, c1) if r0 < r1 and c0 < c1 else None


@dataclass(frozen=True)
class Tile:
    """One tile: grid position, the tile itself (``tile`` square, last row/column aligned to the raster
    edge), the pixels it owns, and its read window (the tile plus ``padding`` on every side, clipped)."""

    row: int
    col: int
    core: Rect
    own: Rect
    read: Rect

    @property
    def key(self) -> str:
        return tile_key(self.row, self.col)

    @property
    def window(self) -> Window:
        """The read window as a rasterio Window."""
        r0, c0, r1, c1 = self.read
        return Window(c0, r0, c1 - c0, r1 - r0)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the read window."""
        return self.read[2] - self.read[0], self.read[3] - self.read[1]

    def local(self, rect: Rect) -> tuple[slice, slice]:
        """Array slices of a raster rectangle inside this tile's read window."""
        r0, c0 = self.read[0], self.read[1]
        return slice(rect[0] - r0, rect[2] - r0), slice(rect[1] - c0, rect[3] - c0)

    def task(self) -> WindowTask:
        """The tile as a tiling WindowTask (cost 1), so ``tiling.plan.split_windows`` can shard tiles."""
        r0, c0, r1, c1 = self.core
        return WindowTask(self.row, self.col, r0, c0, r1 - r0, c1 - c0, [])


@dataclass(frozen=True)
class TileGrid:
    """All tiles of a raster, addressable by (row, col)."""

    width: int
    height: int
    tile: int
    padding: int
    rows: int
    cols: int
    tiles: tuple[Tile, ...]

    def at(self, row: int, col: int) -> Tile | None:
        if 0 <= row < self.rows and 0 <= col < self.cols:
            return self.tiles[row * self.cols + col]
        return None

    def by_key(self) -> dict[str, Tile]:
        return {t.key: t for t in self.tiles}

    def neighbours(self, t: Tile, steps: tuple[tuple[int, int], ...] = ALL_NEIGHBOURS) -> list[Tile]:
        """The 8-neighbourhood (or the given steps) of a tile, inside the grid."""
        return [n for dr, dc in steps if (n := self.at(t.row + dr, t.col + dc)) is not None]


def tile_grid(width: int, height: int, tile: int, padding: int) -> TileGrid:
    """Tiles at offsets ``k * tile`` per axis, the last one aligned to the raster edge (``tiling.grid
    .window_offsets`` with stride = tile); a raster smaller than a tile is one tile of its own size."""
    if width <= 0 or height <= 0:
        raise ValueError(f"raster size must be positive, got {width} x {height}")
    rows_off, cols_off = window_offsets(height, tile, tile), window_offsets(width, tile, tile)
    own_r, own_c = owned_spans(rows_off, height, tile), owned_spans(cols_off, width, tile)
    th, tw = min(tile, height), min(tile, width)
    tiles = []
    for i, r in enumerate(rows_off):
        for j, c in enumerate(cols_off):
            read = (
                max(0, r - padding),
                max(0, c - padding),
                min(height, r + th + padding),
                min(width, c + tw + padding),
            )
            own = (own_r[i][0], own_c[j][0], own_r[i][1], own_c[j][1])
            tiles.append(Tile(i, j, (r, c, r + th, c + tw), own, read))
    return TileGrid(width, height, tile, padding, len(rows_off), len(cols_off), tuple(tiles))


def shared_strip(a: Tile, b: Tile) -> Rect | None:
    """The pixels both tiles read: where a seam object is seen by both and its two masks are compared."""
    return intersect(a.read, b.read)
