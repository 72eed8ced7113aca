"""Coarse crown segments with the errors that CHM-derived segments have, vectorised on the 0.2 m CHM grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio import features
from shapely import affinity
from shapely.geometry import Point, Polygon, box, shape

from crownsam.common.vector import largest_polygon
from crownsam.synthetic.grid import CHM_GSD, Grid, centres
from crownsam.synthetic.layout import Layout

ERRORS = ("none", "dilated", "eroded", "offset", "merged", "split", "false")
MISSING_RATE, SPLIT_RATE, MERGE_PAIR_RATE = 0.05, 0.05, 0.04  # 4 % of trees start a pair: ~8 % merged
SIMPLE_ERRORS, SIMPLE_P = ("none", "dilated", "eroded", "offset"), (0.4, 0.2, 0.2, 0.2)
MIN_SEGMENT_CELLS = 6


@dataclass(frozen=True)
class Segment:
    """A coarse segment before rasterisation; ``rank`` orders drawing (higher overwrites lower)."""

    geometry: shapely.Geometry
    error: str
    sources: tuple[int, ...]
    rank: float


def _count(rate: float, n: int) -> int:
    """``round(rate * n)``, at least 1 once there are 20 trees (so small test scenes show every error)."""
    return max(1, round(rate * n)) if n >= 20 else round(rate * n)


def _halves(poly: Polygon, angle: float) -> list[Polygon]:
    """Cut ``poly`` in two along a line through its centroid at ``angle`` (radians)."""
    c = poly.centroid
    big = 2.0 * max(poly.bounds[2] - poly.bounds[0], poly.bounds[3] - poly.bounds[1]) + 1.0
    half = affinity.rotate(box(0.0, -big, big, big), angle, origin=(0.0, 0.0), use_radians=True)
    half = affinity.translate(half, c.x, c.y)
    return [
        g for g in (largest_polygon(poly.intersection(half)), largest_polygon(poly.difference(half))) if g
    ]


def plan_segments(
    rng: np.random.Generator, truth: Sequence[Polygon], heights: Sequence[float], ids: Sequence[int]
) -> list[Segment]:
    """Decide each true crown's fate: missing, split in two, merged with a touching neighbour, or
    kept with one of none/dilated/eroded (buffer 0.2-0.6 m)/offset (0.1-0.5 m)."""
    n = len(truth)
    order = [int(i) for i in rng.permutation(n)]
    n_missing, n_split = _count(MISSING_RATE, n), _count(SPLIT_RATE, n)
    split = set(order[n_missing : n_missing + n_split])
    rest = order[n_missing + n_split :]
    free = set(rest)
    index = shapely.STRtree(list(truth))
    pairs: list[tuple[int, int]] = []
    for i in rest:
        if len(pairs) >= _count(MERGE_PAIR_RATE, n):
            break
        if i not in free:
            continue
        near = sorted(
            int(j) for j in index.query(truth[i], predicate="dwithin", distance=0.05) if int(j) in free
        )
        near = [j for j in near if j != i]
        if near:
            j = near[int(rng.integers(len(near)))]
            pairs.append((i, j))
            free -= {i, j}

    segments: list[Segment] = []
    for i in sorted(split):
        for half in _halves(truth[i], rng.uniform(0, np.pi)):
            segments.append(Segment(half, "split", (ids[i],), heights[i]))
    for i, j in pairs:
        merged = shapely.union_all([truth[i], truth[j]]).buffer(0.3).buffer(-0.3)
        segments.append(
            Segment(merged, "merged", tuple(sorted((ids[i], ids[j]))), max(heights[i], heights[j]))
        )
    for i in rest:
        if i not in free:
            continue
        error = SIMPLE_ERRORS[rng.choice(len(SIMPLE_ERRORS), p=SIMPLE_P)]
        geom = truth[i]
        if error in ("dilated", "eroded"):
            d = rng.uniform(0.2, 0.6)
            geom = geom.buffer(d if error == "dilated" else -d)
        elif error == "offset":
            d, a = rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
            geom = affinity.translate(geom, d * np.cos(a), d * np.sin(a))
        segments.append(Segment(geom, error, (ids[i],), heights[i]))
    return segments


def false_segments(
    rng: np.random.Generator, grid: Grid, layout: Layout, ground: np.ndarray, n_trees: int
) -> list[Segment]:
    """False positives: part of each roof, and small shrub-like blobs on open ground cells of ``ground``."""
    out = []
    for roof in layout.roofs:
        part = largest_polygon(roof.polygon.buffer(-0.3))
        if part:
            halves = _halves(part, roof.angle + np.pi / 2)
            out.append(Segment(halves[int(rng.integers(len(halves)))], "false", (), -1.0))
    rr, cc = np.nonzero(ground)
    n = max(1, round(0.01 * n_trees))
    if rr.size:
        xs = centres(grid.x0, CHM_GSD, 0, grid.chm_size)
        ys = centres(grid.y0, CHM_GSD, 0, grid.chm_size, sign=-1.0)
        for k in rng.choice(rr.size, size=min(n, rr.size), replace=False):
            r = rng.uniform(0.5, 1.0)
            blob = affinity.scale(
                Point(xs[cc[k]], ys[rr[k]]).buffer(r, quad_segs=8), rng.uniform(0.7, 1.3), 1.0
            )
            out.append(Segment(blob, "false", (), -1.0))
    return out


def vectorise(grid: Grid, segments: Sequence[Segment], valid: np.ndarray) -> list[dict]:
    """Burn segments on the CHM grid (higher rank on top), keep each one's largest 4-connected piece.

    The result is blocky (0.2 m steps) and non-overlapping, like a segmentation of a CHM. Segments with
    fewer than ``MIN_SEGMENT_CELLS`` cells vanish (they become missing trees).
    """
    n = grid.chm_size
    order = sorted(range(len(segments)), key=lambda i: (segments[i].rank, i))
    shapes = [(segments[i].geometry, i + 1) for i in order if not segments[i].geometry.is_empty]
    label = features.rasterize(shapes, out_shape=(n, n), transform=grid.chm_transform, dtype="int32")
    label[~valid] = 0
    best: dict[int, Polygon] = {}
    for geom, value in features.shapes(label, mask=label > 0, connectivity=4, transform=grid.chm_transform):
        poly = shape(geom)
        v = int(value)
        if v not in best or poly.area > best[v].area:
            best[v] = poly
    rows = []
    for v, poly in best.items():
        if poly.area < MIN_SEGMENT_CELLS * CHM_GSD**2 - 1e-9:
            continue
        seg = segments[v - 1]
        rows.append({"sources": seg.sources, "error": seg.error, "geometry": poly, "draw": v})
    rows.sort(key=lambda r: (r["error"] == "false", r["sources"], r["draw"]))
    return [
        {
            "segment_id": k,
            "source_tree_ids": ",".join(str(s) for s in r["sources"]),
            "error": r["error"],
            "geometry": r["geometry"],
        }
        for k, r in enumerate(rows, start=1)
    ]
