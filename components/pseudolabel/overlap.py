"""Overlap figures of a label set (light: numpy and shapely only; the evaluation report uses them too).

* Polygons: a pair of labels overlaps when their intersection has an area above ``min_area`` (default
  1e-6 square units, 1 mm² in metres: labels that share an edge meet in slivers of ~1e-10 from
  floating-point rounding, which are not overlap); the overlap area is the sum of the pairwise
  intersection areas (a spot covered by three labels counts three times, once per pair).
* Masks (window crops): a pair overlaps when they share at least one pixel; the area is the sum of the
  pairwise shared pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

MIN_AREA = 1e-6


def polygon_overlaps(
    geoms: Sequence[shapely.Geometry] | np.ndarray, min_area: float = MIN_AREA
) -> tuple[list[tuple[int, int]], float]:
    """Overlapping pairs ``(i, j)``, ``i < j``, and their total intersection area (rule above)."""
    arr = np.asarray(list(geoms), dtype=object)
    if len(arr) < 2:
        return [], 0.0
    ok = ~(shapely.is_missing(arr) | shapely.is_empty(arr))
    arr = np.where(ok, arr, shapely.Polygon())
    left, right = shapely.STRtree(arr).query(arr, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if not left.size:
        return [], 0.0
    areas = shapely.area(shapely.intersection(arr[left], arr[right]))
    sel = areas > min_area
    pairs = [(int(a), int(b)) for a, b in zip(left[sel], right[sel], strict=True)]
    return pairs, float(areas[sel].sum())


def overlap_figures(
    geoms: Sequence[shapely.Geometry] | np.ndarray, min_area: float = MIN_AREA
) -> dict[str, float]:
    """``{"pairs": n, "area": total}`` (area in the geometries' units; rule above)."""
    pairs, area = polygon_overlaps(geoms, min_area)
    return {"pairs": len(pairs), "area": area}


def mask_overlaps(
    masks: Sequence[np.ndarray], regions: Sequence[tuple[int, int, int, int]] | np.ndarray
) -> tuple[list[tuple[int, int]], int]:
    """Pairs ``(i, j)``, ``i < j``, of boolean masks (crops of window ``regions`` ``(r0, c0, r1, c1)``)
    that share at least one pixel, and the total number of shared pixels."""
    reg = np.asarray(regions, dtype=np.int64).reshape(-1, 4)
    n = len(masks)
    pairs: list[tuple[int, int]] = []
    total = 0
    if n < 2:
        return pairs, total
    r0, c0, r1, c1 = reg.T
    for i in range(n - 1):
        j = np.arange(i + 1, n)
        hit = (np.maximum(r0[i], r0[j]) < np.minimum(r1[i], r1[j])) & (
            np.maximum(c0[i], c0[j]) < np.minimum(c1[i], c1[j])
        )
        for k in j[hit]:
            y0, y1 = max(r0[i], r0[k]), min(r1[i], r1[k])
            x0, x1 = max(c0[i], c0[k]), min(c1[i], c1[k])
            a = masks[i][y0 - r0[i] : y1 - r0[i], x0 - c0[i] : x1 - c0[i]]
            b = masks[k][y0 - r0[k] : y1 - r0[k], x0 - c0[k] : x1 - c0[k]]
            shared = int(np.count_nonzero(a & b))
            if shared:
                pairs.append((i, int(k)))
                total += shared
    return pairs, total
