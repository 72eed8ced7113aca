"""Crowns of one in-memory CHM array: treetops, marker-controlled watershed, per-crown figures, drop rule.

The block driver (:mod:`crownsam.chm.blocks`) calls :func:`segment_array` on each block; a small CHM is one
block. Everything here works in the array's pixel coordinates; georeferencing happens in the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio import features
from rasterio.transform import Affine
from scipy import ndimage
from skimage.segmentation import watershed

from crownsam.chm.treetops import H_CAP, Window, find_treetops, reach_px, smooth_chm
from crownsam.common.errors import InputError
from crownsam.common.params import Params, param

# Drop rule (README "Drop rule"): expected crown radius for a tree of top height h, in metres.
EXPECTED_RADIUS_A = 0.5
EXPECTED_RADIUS_B = 0.1
MIN_AREA_M2 = 1.0
MAX_AREA_FACTOR = 4.0

DEFAULT_MIN_HEIGHT = 2.0
DEFAULT_SMOOTH = 1.0
DEFAULT_MIN_PROMINENCE = 0.1
DEFAULT_WINDOW = (0.2, 0.03)  # r(h) = 0.2 + 0.03 h metres when neither window option is given
DEFAULT_BLOCK = 2048


def expected_area_m2(height: np.ndarray | float) -> np.ndarray:
    """Expected crown area ``pi * (0.5 + 0.1 h)^2`` m² for top height ``h`` m (h capped at 60 m)."""
    h = np.clip(np.asarray(height, dtype=np.float64), 0.0, H_CAP)
    return math.pi * (EXPECTED_RADIUS_A + EXPECTED_RADIUS_B * h) ** 2


def window_arg(text: str) -> tuple[float, float]:
    """``a,b`` -> (a, b): the search radius ``a + b * h`` metres."""
    import argparse

    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} must look like A,B (metres), e.g. 0.2,0.03") from exc
    return a, b


@dataclass(frozen=True)
class ChmParams(Params):
    """Segmentation parameters (validated by :meth:`check` when built).

    ``min_distance``: fixed search radius in pixels; ``window_from_height = (a, b)``: radius ``a + b h``
    metres. Neither: ``DEFAULT_WINDOW``. Both: an error.
    """

    min_height: float = param(
        DEFAULT_MIN_HEIGHT, "treetops and crown pixels at least this high, m", metavar="M", pipeline=None
    )
    smooth: float = param(
        DEFAULT_SMOOTH, "Gaussian sigma in pixels before finding treetops, 0 = none", metavar="SIGMA",
        pipeline=None,
    )  # fmt: skip
    min_distance: float | None = param(
        None, "fixed treetop search radius in pixels", metavar="PX", pipeline=None
    )
    window_from_height: tuple[float, float] | None = param(
        None,
        "treetop search radius A + B*h metres for height h (default "
        f"{DEFAULT_WINDOW[0]:g},{DEFAULT_WINDOW[1]:g})",
        parse=window_arg, metavar="A,B", pipeline=None,
    )  # fmt: skip
    min_prominence: float = param(
        DEFAULT_MIN_PROMINENCE,
        "merge treetops that rise less than this above the pass to a higher one, m (0 = off)",
        metavar="M", pipeline=None,
    )  # fmt: skip
    min_area_m2: float = param(MIN_AREA_M2, "drop crowns smaller than this, m²", flag="", pipeline=None)
    max_area_factor: float = param(
        MAX_AREA_FACTOR, "drop crowns larger than this times the expected area", flag="", pipeline=None
    )
    block: int = param(DEFAULT_BLOCK, "block size in pixels", metavar="PX", pipeline=None)
    overlap: int | None = param(
        None, "block overlap in pixels (default: from the parameters)", metavar="PX", pipeline=None
    )

    def check(self) -> None:
        """Raise InputError for a negative, absurd or contradictory parameter."""

        def finite(v: object) -> bool:
            return isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(v)

        if not finite(self.min_height) or not 0.0 <= self.min_height <= 100.0:
            raise InputError("--min-height", f"must be between 0 and 100 m, got {self.min_height!r}")
        if not finite(self.smooth) or not 0.0 <= self.smooth <= 10.0:
            raise InputError("--smooth", f"Gaussian sigma must be 0..10 pixels, got {self.smooth!r}")
        if self.min_distance is not None and self.window_from_height is not None:
            raise InputError("--min-distance", "give either --min-distance or --window-from-height, not both")
        if self.min_distance is not None and (
            not finite(self.min_distance) or not 1.0 <= self.min_distance <= 200.0
        ):
            raise InputError("--min-distance", f"must be 1..200 pixels, got {self.min_distance!r}")
        if self.window_from_height is not None:
            wfh = tuple(self.window_from_height)
            if len(wfh) != 2 or not all(finite(v) for v in wfh):
                raise InputError("--window-from-height", f"needs two numbers a,b, got {wfh!r}")
            a, b = wfh
            if a < 0 or b < 0 or a + b * max(self.min_height, 1.0) <= 0:
                raise InputError(
                    "--window-from-height", f"a and b must be >= 0 with a positive radius, got {a},{b}"
                )
            if a > 20.0 or b > 1.0:
                raise InputError(
                    "--window-from-height", f"r(h) = {a} + {b} h m is absurd for trees (need a <= 20, b <= 1)"
                )
        if not finite(self.min_prominence) or not 0.0 <= self.min_prominence <= 10.0:
            raise InputError("--min-prominence", f"must be between 0 and 10 m, got {self.min_prominence!r}")
        if not finite(self.min_area_m2) or self.min_area_m2 < 0:
            raise InputError("min_area_m2", f"must be >= 0, got {self.min_area_m2!r}")
        if not finite(self.max_area_factor) or self.max_area_factor <= 0:
            raise InputError("max_area_factor", f"must be > 0, got {self.max_area_factor!r}")

    def window(self, res: float) -> Window:
        """The search window for a CHM with ``res`` metre pixels."""
        if self.min_distance is not None:
            return Window(fixed_px=float(self.min_distance), res=res)
        a, b = self.window_from_height if self.window_from_height is not None else DEFAULT_WINDOW
        return Window(a=float(a), b=float(b), res=res)

    def reach_px(self, res: float) -> int:
        """Pixels a treetop decision depends on around it (search radius + smoothing kernel + 1)."""
        return reach_px(self.window(res), self.smooth)

    def describe(self) -> dict:
        """The parameters as plain values (for summaries)."""
        out: dict = {"min_height_m": self.min_height, "smooth_sigma_px": self.smooth}
        if self.min_distance is not None:
            out["window"] = f"fixed radius {self.min_distance:g} px"
        else:
            a, b = self.window_from_height if self.window_from_height is not None else DEFAULT_WINDOW
            out["window"] = f"r(h) = {a:g} + {b:g} h m"
        out["min_prominence_m"] = self.min_prominence
        out["min_area_m2"] = self.min_area_m2
        out["max_area_factor"] = self.max_area_factor
        return out


DROP_REASONS = ("too_low", "too_small", "too_large")


def drop_rule_text(params: ChmParams) -> str:
    """The drop rule in words (README and run summary)."""
    return (
        f"a crown is dropped when its top height is below {params.min_height:g} m ('too_low'), its area is "
        f"below {params.min_area_m2:g} m2 ('too_small') or its area is above {params.max_area_factor:g} x "
        f"the expected crown area pi*({EXPECTED_RADIUS_A:g} + {EXPECTED_RADIUS_B:g} h)^2 m2 for its top "
        "height h ('too_large')"
    )


def drop_reasons(top_height: np.ndarray, area_m2: np.ndarray, params: ChmParams) -> np.ndarray:
    """Per crown: '' (kept) or the first reason of :data:`DROP_REASONS` that applies
    (see :func:`drop_rule_text`)."""
    out = np.full(np.shape(area_m2), "", dtype=object)
    out[area_m2 > params.max_area_factor * expected_area_m2(top_height)] = "too_large"
    out[area_m2 < params.min_area_m2] = "too_small"
    out[np.asarray(top_height) < params.min_height] = "too_low"
    return out


@dataclass
class ArrayCrowns:
    """Crowns of one array: label image (crown k has label k + 1) and per-crown figures, k in raster order
    of the treetops."""

    labels: np.ndarray  # int32, 0 = no crown
    rows: np.ndarray  # treetop row
    cols: np.ndarray  # treetop col
    n_px: np.ndarray  # crown pixels
    bbox: list[tuple[slice, slice]]  # rows, cols of each crown's bounding box
    chm: np.ndarray  # the unsmoothed CHM, -inf at nodata

    def top_height(self, which: np.ndarray) -> np.ndarray:
        """Highest unsmoothed CHM value inside each crown ``which`` (0-based), metres."""
        out = np.empty(len(which))
        for i, k in enumerate(which):
            rs, cs = self.bbox[k]
            out[i] = self.chm[rs, cs][self.labels[rs, cs] == k + 1].max()
        return out


def pass_heights(labels: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adjacent crown pairs ``a < b`` and their pass height: the highest ``min(s_p, s_q)`` over 4-neighbour
    pixels ``p`` in ``a`` and ``q`` in ``b`` (the lowest point on the best path between the two crowns)."""
    parts = []
    for la, lb, va, vb in (
        (labels[:, :-1], labels[:, 1:], s[:, :-1], s[:, 1:]),
        (labels[:-1], labels[1:], s[:-1], s[1:]),
    ):
        m = (la != lb) & (la > 0) & (lb > 0)
        x, y = la[m].astype(np.int64), lb[m].astype(np.int64)
        parts.append((np.minimum(x, y), np.maximum(x, y), np.minimum(va[m], vb[m])))
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    v = np.concatenate([p[2] for p in parts])
    if a.size == 0:
        return a, b, v
    order = np.lexsort((v, b, a))
    a, b, v = a[order], b[order], v[order]
    last = np.flatnonzero(np.r_[(a[1:] != a[:-1]) | (b[1:] != b[:-1]), True])  # max v is last per pair
    return a[last], b[last], v[last]


def merge_low_tops(peak: np.ndarray, a: np.ndarray, b: np.ndarray, v: np.ndarray, h: float) -> np.ndarray:
    """Which crown each crown ends up in when treetops with a dynamic below ``h`` metres are merged.

    ``peak[k]`` is the smoothed height of treetop ``k`` (index 0 unused); ``(a, b, v)`` are adjacent crowns
    and their pass heights. Passes are visited from the highest down (Kruskal order, ties by crown index);
    when two groups of crowns meet at pass height ``v``, the group with the lower top (ties: the later
    treetop in raster order) has dynamic ``top - v``; below ``h`` its treetop is dropped and its crown joins
    the crown across that pass. Returns ``final[k]``, the kept crown that crown ``k`` belongs to.
    """
    n = peak.size - 1
    parent = np.arange(n + 1)
    ptr = np.arange(n + 1)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for k in np.lexsort((b, a, -v)):
        i, j, pv = int(a[k]), int(b[k]), float(v[k])
        ri, rj = find(i), find(j)
        if ri == rj:
            continue
        # the higher group wins; equal tops: the earlier treetop (smaller index) wins
        if (peak[ri], -ri) > (peak[rj], -rj):
            hi, lo, across = ri, rj, i
        else:
            hi, lo, across = rj, ri, j
        if peak[lo] - pv < h:
            ptr[lo] = across
        parent[lo] = hi
    final = np.arange(n + 1)
    for k in range(1, n + 1):
        x = k
        while ptr[x] != x:
            x = ptr[x]
        final[k] = x
    return final


def segment_array(chm: np.ndarray, valid: np.ndarray, res: float, params: ChmParams) -> ArrayCrowns:
    """Treetops and crowns of one CHM array with ``res`` metre pixels.

    1. ``s`` = Gaussian-smoothed CHM (nodata ignored, :func:`smooth_chm`).
    2. Treetops = pixels with ``s >= min_height`` that are the highest of ``s`` in their search window.
    3. Marker-controlled watershed on ``-s`` from the treetops (4-connected), limited to valid pixels with
       ``chm >= min_height``.
    4. Treetops whose dynamic (top minus the highest pass towards a higher treetop) is below
       ``min_prominence`` are dropped and their crowns merged across that pass (:func:`merge_low_tops`):
       one crown per flat roof or flat-topped crown instead of one per noise bump.
    Top heights (the highest unsmoothed CHM value inside a crown) come from
    :meth:`ArrayCrowns.top_height`, for the crowns the caller keeps.
    """
    s = smooth_chm(chm, valid, params.smooth)
    rows, cols = find_treetops(s, params.min_height, params.window(res))
    markers = np.zeros(chm.shape, dtype=np.int32)
    markers[rows, cols] = np.arange(1, rows.size + 1, dtype=np.int32)
    mask = valid & (chm >= params.min_height)
    mask[rows, cols] = True  # a treetop is always its own crown's first pixel
    labels = markers
    if rows.size:
        labels = watershed(np.where(valid, -s, 0.0), markers, connectivity=1, mask=mask).astype(np.int32)
    if rows.size > 1 and params.min_prominence > 0:
        peak = np.r_[np.inf, s[rows, cols]]
        final = merge_low_tops(peak, *pass_heights(labels, s), params.min_prominence)
        kept = np.flatnonzero(final[1:] == np.arange(1, rows.size + 1))  # still in raster order
        renum = np.zeros(rows.size + 1, dtype=np.int32)
        renum[kept + 1] = np.arange(1, kept.size + 1, dtype=np.int32)
        labels = renum[final][labels]
        rows, cols = rows[kept], cols[kept]
    n_px = np.bincount(labels.ravel(), minlength=rows.size + 1)[1:].astype(np.int64)
    bbox = list(ndimage.find_objects(labels, max_label=rows.size)) if rows.size else []
    raw = np.where(valid, chm, -np.inf)
    return ArrayCrowns(labels, rows.astype(np.int64), cols.astype(np.int64), n_px, bbox, raw)


def crown_polygons(labels: np.ndarray, wanted: np.ndarray) -> dict[int, shapely.Polygon]:
    """One polygon per wanted label, in pixel coordinates (x = col, y = row of the array's corner grid).

    ``rasterio.features.shapes`` (4-connected) with an identity transform; a label in several parts keeps
    its largest part. Rings are turned into polygons in one vectorised call.
    """
    if wanted.size == 0:
        return {}
    sel = np.isin(labels, wanted)
    values, shells, holes = [], [], []
    for geom, value in features.shapes(labels, mask=sel, connectivity=4, transform=Affine.identity()):
        rings = geom["coordinates"]
        values.append(int(value))
        shells.append(np.asarray(rings[0], dtype=np.float64))
        holes.append([np.asarray(r, dtype=np.float64) for r in rings[1:]])
    sizes = np.array([len(c) for c in shells])
    polys = shapely.polygons(
        shapely.linearrings(np.concatenate(shells), indices=np.repeat(np.arange(len(shells)), sizes))
    )
    for i in (i for i, h in enumerate(holes) if h):
        polys[i] = shapely.Polygon(shells[i], holes[i])
    area = shapely.area(polys)
    out: dict[int, shapely.Polygon] = {}
    best: dict[int, float] = {}
    for k, poly, a in zip(values, polys, area, strict=True):
        if k not in out or a > best[k]:
            out[k], best[k] = poly, a
    return out
