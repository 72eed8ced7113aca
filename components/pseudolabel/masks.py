"""Pure mask helpers: prompt neighbourhoods, exact crop upsampling, logit patches, largest component,
vectorising."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import shapely.geometry
from rasterio import Affine
from scipy import ndimage

if TYPE_CHECKING:  # torch is imported where it is used: worker processes of the window loop never need it
    import torch


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip XYXY boxes (continuous pixel coordinates) to ``[0, width] x [0, height]``."""
    out = np.asarray(boxes, dtype=np.float64).copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out


# Pixel coordinates within this distance of a whole number count as that number before rounding: a
# round trip of the segments through another CRS (e.g. degrees) moves their edges by ~1e-9 px, which
# must not move a region or a point by a whole pixel. 1e-3 px is 25 um at 2.5 cm GSD.
SNAP_PX = 1e-3


def snap(values: np.ndarray, tol: float = SNAP_PX) -> np.ndarray:
    """``values`` with those within ``tol`` of an integer set to that integer (float64)."""
    v = np.asarray(values, dtype=np.float64)
    r = np.rint(v)
    return np.where(np.abs(v - r) <= tol, r, v)


def floor_px(values: np.ndarray) -> np.ndarray:
    """``floor`` that is tolerant of coordinate noise (:data:`SNAP_PX`)."""
    return np.floor(snap(values))


def ceil_px(values: np.ndarray) -> np.ndarray:
    """``ceil`` that is tolerant of coordinate noise (:data:`SNAP_PX`)."""
    return np.ceil(snap(values))


def neighbourhoods(
    boxes: np.ndarray, width: int, height: int, frac: float = 0.25, min_margin: int = 16
) -> np.ndarray:
    """Integer pixel regions ``(r0, c0, r1, c1)`` around each box: the box grown by
    ``max(min_margin, frac * max(box width, box height))`` on every side, clipped to the window.
    Edges are rounded outwards (floor/ceil) after snapping values within :data:`SNAP_PX` of a whole
    pixel, so coordinate noise from reprojection never moves a region by a pixel.

    Masks are only computed and vectorised inside these regions, never over the whole window.
    """
    b = snap(np.asarray(boxes, dtype=np.float64))
    m = np.maximum(min_margin, frac * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
    c0 = np.clip(floor_px(b[:, 0] - m), 0, width)
    r0 = np.clip(floor_px(b[:, 1] - m), 0, height)
    c1 = np.clip(ceil_px(b[:, 2] + m), 0, width)
    r1 = np.clip(ceil_px(b[:, 3] + m), 0, height)
    return np.stack([r0, c0, r1, c1], axis=1).astype(np.int64)


def _interp_matrix(lo: int, hi: int, in_size: int, out_size: int) -> tuple[torch.Tensor, int, int]:
    """Rows ``lo..hi-1`` of the bilinear (align_corners=False) resize matrix from in_size to out_size,
    restricted to the input columns they touch. Returns (matrix, first input index, last input index + 1).

    Matches ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``:
    ``src = max(0, (dst + 0.5) * in/out - 0.5)``, ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``.
    """
    import torch

    dst = np.arange(lo, hi, dtype=np.float64)
    src = np.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = src - i0
    first, last = int(i0.min()), int(i1.max()) + 1
    mat = np.zeros((hi - lo, last - first), dtype=np.float32)
    rows = np.arange(hi - lo)
    np.add.at(mat, (rows, i0 - first), (1.0 - w1).astype(np.float32))
    np.add.at(mat, (rows, i1 - first), w1.astype(np.float32))
    return torch.from_numpy(mat), first, last


def _taps_of(lo: int, hi: int, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_taps`, computed."""
    dst = np.arange(lo, hi, dtype=np.float64)
    src = np.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_taps` of every output row ``0..out_size-1`` (read-only: shared by all callers)."""
    taps = _taps_of(0, out_size, in_size, out_size)
    for a in taps:
        a.flags.writeable = False
    return taps


def _taps(lo: int, hi: int, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two input indices and the weight of the second for output rows ``lo..hi-1`` of the bilinear
    (align_corners=False) resize, by :func:`_interp_matrix`'s rule: ``out = (1 - w) x in[i0] + w x in[i1]``
    (weights float32). Each row's taps are its own, so rows inside ``0..out_size`` are slices of the
    whole axis's (:func:`_axis_taps`, computed once per size); read-only."""
    if 0 <= lo <= hi <= out_size:
        i0, i1, w = _axis_taps(in_size, out_size)
        return i0[lo:hi], i1[lo:hi], w[lo:hi]
    return _taps_of(lo, hi, in_size, out_size)


def region_tuple(region: np.ndarray) -> tuple[int, int, int, int]:
    """``(r0, c0, r1, c1)`` of one row of :func:`neighbourhoods` as Python ints."""
    r0, c0, r1, c1 = (int(v) for v in region)
    return r0, c0, r1, c1


def upsample_crop(
    low_res: torch.Tensor, out_hw: tuple[int, int], region: tuple[int, int, int, int]
) -> torch.Tensor:
    """The ``region = (r0, c0, r1, c1)`` crop of ``interpolate(low_res, out_hw, bilinear)``, computed
    without upsampling the rest. ``low_res`` is one (h, w) logit map (float)."""
    r0, c0, r1, c1 = region
    my, ry0, ry1 = _interp_matrix(r0, r1, low_res.shape[-2], out_hw[0])
    mx, rx0, rx1 = _interp_matrix(c0, c1, low_res.shape[-1], out_hw[1])
    sub = low_res[ry0:ry1, rx0:rx1].float().cpu()
    return my @ sub @ mx.T


def support(lo: int, hi: int, in_size: int, out_size: int) -> tuple[int, int]:
    """Input index range ``[first, last)`` that output rows ``lo..hi-1`` of the bilinear resize read."""
    if hi <= lo:
        return 0, 0
    # both taps are non-decreasing in the output row, and each row's are its own: the ends suffice
    i0, _, _ = _taps(lo, lo + 1, in_size, out_size)
    _, i1, _ = _taps(hi - 1, hi, in_size, out_size)
    return int(i0[0]), int(i1[0]) + 1


@dataclass(frozen=True)
class LogitPatch:
    """Part of one prompt's logit map at the predictor's own resolution (SAM2: 256 x 256 per window),
    enough to compute its full-resolution logits anywhere in the window rows/columns it supports.

    ``data[i, j]`` is the logit of low-resolution cell ``(r0 + i, c0 + j)`` of a ``low_hw`` grid that
    is upsampled to the window image size ``out_hw`` by :func:`upsample_crop`'s rule (bilinear,
    ``align_corners=False``, as SAM2 does). A predictor that answers at full resolution has
    ``low_hw == out_hw``, where the rule is the identity. Masks are ``logits > 0``.
    """

    data: np.ndarray  # float32 (h, w)
    r0: int
    c0: int
    low_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @classmethod
    def from_map(
        cls, low: np.ndarray, out_hw: tuple[int, int], region: tuple[int, int, int, int]
    ) -> LogitPatch:
        """The part of a whole low-resolution map ``low`` that ``region`` (window px) needs."""
        r0, c0, r1, c1 = region
        lh, lw = low.shape
        y0, y1 = support(r0, r1, lh, out_hw[0])
        x0, x1 = support(c0, c1, lw, out_hw[1])
        return cls(np.ascontiguousarray(low[y0:y1, x0:x1], dtype=np.float32), y0, x0, (lh, lw), out_hw)

    def crop(self, region: tuple[int, int, int, int]) -> LogitPatch:
        """The smaller patch that ``region`` (inside this patch's support) needs."""
        r0, c0, r1, c1 = region
        y0, y1 = support(r0, r1, self.low_hw[0], self.out_hw[0])
        x0, x1 = support(c0, c1, self.low_hw[1], self.out_hw[1])
        if r1 <= r0 or c1 <= c0:
            y0 = y1 = self.r0
            x0 = x1 = self.c0
        sub = self.data[y0 - self.r0 : y1 - self.r0, x0 - self.c0 : x1 - self.c0]
        return LogitPatch(np.ascontiguousarray(sub), y0, x0, self.low_hw, self.out_hw)

    def upsample(self, region: tuple[int, int, int, int]) -> np.ndarray:
        """Full-resolution logits (float32) of ``region = (r0, c0, r1, c1)`` in window pixels."""
        r0, c0, r1, c1 = region
        if r1 <= r0 or c1 <= c0:
            return np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=np.float32)
        h, w = self.data.shape
        if self.low_hw == self.out_hw:  # full resolution: the rule is the identity
            if r0 < self.r0 or c0 < self.c0 or r1 > self.r0 + h or c1 > self.c0 + w:
                raise ValueError(f"region {region} reads outside the logit patch")
            return self.data[r0 - self.r0 : r1 - self.r0, c0 - self.c0 : c1 - self.c0].copy()
        y0, y1, wy = _taps(r0, r1, self.low_hw[0], self.out_hw[0])
        x0, x1, wx = _taps(c0, c1, self.low_hw[1], self.out_hw[1])
        return self._interpolate(region, (y0, y1, wy), (x0, x1, wx))

    def _interpolate(
        self,
        region: tuple[int, int, int, int],
        rows: tuple[np.ndarray, np.ndarray, np.ndarray],
        cols: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """Logits of ``region`` from its rows' and columns' taps (:func:`_taps`)."""
        # Two taps per output column on the small patch, then two per output row (elementwise: a matrix
        # product of these tiny, mostly-zero interpolation matrices costs 100x more where BLAS threads
        # compete for cores; columns first, so that the full-size step gathers whole rows).
        (y0, y1, wy), (x0, x1, wx) = rows, cols
        h, w = self.data.shape
        if y0[0] < self.r0 or x0[0] < self.c0 or y1[-1] >= self.r0 + h or x1[-1] >= self.c0 + w:
            raise ValueError(f"region {region} reads outside the logit patch")
        top, bottom = int(y0[0]) - self.r0, int(y1[-1]) + 1 - self.r0  # the patch rows these output rows read
        d = self.data[top:bottom]
        per_col = d[:, x0 - self.c0] * (1 - wx) + d[:, x1 - self.c0] * wx
        out = per_col[y0 - self.r0 - top]
        out *= (1 - wy)[:, None]
        out += per_col[y1 - self.r0 - top] * wy[:, None]
        return out.astype(np.float32, copy=False)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(r0, c0, r1, c1)`` of a boolean mask's True pixels (end-exclusive), or None if it has none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _span(i0: np.ndarray, i1: np.ndarray, first: int, last: int) -> tuple[int, int]:
    """Positions ``[a, b)`` of the output rows whose taps ``i0``/``i1`` reach input rows ``first..last``
    (contiguous: both taps are non-decreasing in the output row); ``(0, 0)`` when none do."""
    a, b = int(np.searchsorted(i1, first, "left")), int(np.searchsorted(i0, last, "right"))
    return (a, b) if a < b else (0, 0)


@dataclass(frozen=True)
class RegionLogits:
    """Full-resolution logits of a mask's region as :func:`region_mask_and_logits` computed them (window
    rows ``r0..``, columns ``c0..``), so that they need not be upsampled again (exclusive labels compare
    them where masks meet); anywhere else they come from ``patch``. The same values either way: each
    interpolated pixel is computed from its own taps alone."""

    data: np.ndarray  # float32, read-only
    r0: int
    c0: int
    patch: LogitPatch

    def upsample(self, region: tuple[int, int, int, int]) -> np.ndarray:
        """:meth:`LogitPatch.upsample` of ``region`` (read-only where it is a view of ``data``)."""
        r0, c0, r1, c1 = region
        h, w = self.data.shape
        if self.r0 <= r0 <= r1 <= self.r0 + h and self.c0 <= c0 <= c1 <= self.c0 + w:
            return self.data[r0 - self.r0 : r1 - self.r0, c0 - self.c0 : c1 - self.c0]
        return self.patch.upsample(region)


def region_mask(patch: LogitPatch, region: tuple[int, int, int, int]) -> np.ndarray:
    """The mask (logits > 0) of ``region``, computed only where it can be True: an interpolated value is
    positive only if a cell it reads is, so the rows and columns that read no positive cell are False
    without interpolating them."""
    return region_mask_and_logits(patch, region)[0]


def region_mask_and_logits(
    patch: LogitPatch, region: tuple[int, int, int, int]
) -> tuple[np.ndarray, RegionLogits]:
    """:func:`region_mask`, and the logits it interpolated (:class:`RegionLogits`)."""
    r0, c0, r1, c1 = region
    shape = (max(0, r1 - r0), max(0, c1 - c0))
    mask = np.zeros(shape, dtype=bool)
    none = RegionLogits(np.zeros((0, 0), dtype=np.float32), r0, c0, patch)
    pos = patch.data > 0
    rows, cols = np.flatnonzero(pos.any(axis=1)), np.flatnonzero(pos.any(axis=0))
    if not rows.size or not shape[0] or not shape[1]:
        return mask, none
    if patch.low_hw == patch.out_hw:  # full resolution: the rule is the identity
        a, b = max(r0, patch.r0 + int(rows[0])), min(r1, patch.r0 + int(rows[-1]) + 1)
        c, d = max(c0, patch.c0 + int(cols[0])), min(c1, patch.c0 + int(cols[-1]) + 1)
        if b <= a or d <= c:
            return mask, none
        sub = patch.upsample((a, c, b, d))
    else:
        ty = _taps(r0, r1, patch.low_hw[0], patch.out_hw[0])
        tx = _taps(c0, c1, patch.low_hw[1], patch.out_hw[1])
        ya, yb = _span(ty[0], ty[1], patch.r0 + int(rows[0]), patch.r0 + int(rows[-1]))
        xa, xb = _span(tx[0], tx[1], patch.c0 + int(cols[0]), patch.c0 + int(cols[-1]))
        if yb <= ya or xb <= xa:
            return mask, none
        a, b, c, d = r0 + ya, r0 + yb, c0 + xa, c0 + xb
        rows_taps = (ty[0][ya:yb], ty[1][ya:yb], ty[2][ya:yb])
        cols_taps = (tx[0][xa:xb], tx[1][xa:xb], tx[2][xa:xb])
        sub = patch._interpolate((a, c, b, d), rows_taps, cols_taps)
    np.greater(sub, 0, out=mask[a - r0 : b - r0, c - c0 : d - c0])
    sub.flags.writeable = False
    return mask, RegionLogits(sub, a, c, patch)


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected component of a boolean mask (ties: the one whose first pixel in row-major
    order comes first), or None if the mask is empty: ``mask`` itself when it is one component, else a new
    array. Labels only the mask's bounding box, and only when a row holds more than one run of pixels or
    two rows' runs do not touch."""
    got = largest_component_box(mask)
    return None if got is None else got[0]


Box = tuple[int, int, int, int]


def largest_component_box(mask: np.ndarray) -> tuple[np.ndarray, Box] | None:
    """:func:`largest_component` and its :func:`bbox`, or None if the mask is empty."""
    box = bbox(mask)
    if box is None:
        return None
    r0, c0, r1, c1 = box
    if _one_run_per_row_connected(mask[r0:r1, c0:c1]):
        return mask, box  # already one component (most masks): no labelling, no copy
    labels, n = ndimage.label(mask[r0:r1, c0:c1])
    if n == 1:
        keep, k = labels == 1, 1
    else:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        k = int(np.argmax(sizes))
        keep = labels == k
    rows, cols = cast("tuple[slice, slice]", ndimage.find_objects(labels, max_label=k)[k - 1])
    out = np.zeros(mask.shape, dtype=bool)
    out[r0:r1, c0:c1] = keep
    return out, (r0 + rows.start, c0 + cols.start, r0 + rows.stop, c0 + cols.stop)


def _one_run_per_row_connected(crop: np.ndarray) -> bool:
    """Whether a mask cropped to its bounding box has exactly one run of pixels in each row and each run
    shares a column with the next row's: then it is one 4-connected component (a cheap, sufficient test;
    False says nothing)."""
    h, w = crop.shape
    padded = np.zeros((h, w + 2), dtype=bool)
    padded[:, 1:-1] = crop
    return _staircase_runs(_runs(padded), h)


def _staircase_runs(runs: tuple[np.ndarray, np.ndarray, np.ndarray], h: int) -> bool:
    """Whether the :func:`_runs` of the ``h`` rows of a mask cropped to its bounding box are one per row,
    each sharing a column with the next row's (:func:`_one_run_per_row_connected`)."""
    line, first, end = runs
    if len(line) != h:  # some row has more than one run (every row of the box has one at least)
        return False
    return bool(np.all((first[1:] < end[:-1]) & (first[:-1] < end[1:])))


def _runs(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(line, first, end)`` of each maximal run of True along the rows of a 2-D boolean array whose first
    and last columns are False (padding), in row-major order; ``first`` and ``end`` (exclusive) count
    columns without the padding."""
    flat = edges.ravel()
    nz = np.flatnonzero(flat[1:] != flat[:-1])  # alternately a run's start and its end (5x np.diff's speed)
    w = edges.shape[1]
    first, end = nz[0::2] + 1, nz[1::2] + 1
    line = first // w
    return line, first - line * w - 1, end - line * w - 1


def _columns(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vertical edges (grid line ``x``, from row ``y`` to ``y + 1``) joined into maximal pieces
    ``(x, first, end)``, in the order of :func:`_runs` over the columns (by ``x``, then ``y``)."""
    key = x * (int(y.max(initial=0)) + 2) + y
    order = np.argsort(key, kind="stable")
    key, x, y = key[order], x[order], y[order]
    breaks = np.flatnonzero(np.diff(key) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(key)]]) - 1
    return x[starts], y[starts], y[ends] + 1


def _padded(mask: np.ndarray) -> np.ndarray:
    """``mask`` with a row or column of False on every side."""
    h, w = mask.shape
    p = np.zeros((h + 2, w + 2), dtype=bool)
    p[1:-1, 1:-1] = mask
    return p


def _pieces(
    p: np.ndarray, runs: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Start ``(x, y)`` and end ``(x, y)`` grid corners of the maximal straight pieces of the outline of a
    boolean mask's pixels, each directed with the mask on its right (y down: clockwise around the mask).
    ``p``: the mask :func:`_padded`; ``runs``: the :func:`_runs` of its rows (``p[1:-1]``)."""
    above, below = p[:-1], p[1:]  # rows y-1 and y of the horizontal grid line y
    ty, t0, t1 = _runs(below > above)  # top edges of mask pixels: +x
    by, b0, b1 = _runs(above > below)  # bottom edges: -x
    row, first, end = runs  # the mask's runs: a left edge where one starts, a right where it ends
    lx, l0, l1 = _columns(first, row)  # left edges: -y
    rx, r0, r1 = _columns(end, row)  # right edges: +y
    sx, sy = np.concatenate([t0, b1, lx, rx]), np.concatenate([ty, by, l1, r0])
    ex, ey = np.concatenate([t1, b0, lx, rx]), np.concatenate([ty, by, l0, r1])
    return sx, sy, ex, ey


def _rings(sx: np.ndarray, sy: np.ndarray, ex: np.ndarray, ey: np.ndarray, width: int) -> list[list[int]]:
    """The pieces of :func:`_pieces` linked into closed rings (lists of piece indices in order).

    Each piece continues with the piece that starts where it ends. Where two pieces start at one corner
    (two mask pixels meeting only diagonally), each turns right (stays on its pixel), and a ring that
    would then pass the corner twice (touch itself: an invalid ring) is split there into two rings that
    touch at the corner."""
    n = len(sx)
    ks, ke = sy * (width + 1) + sx, ey * (width + 1) + ex  # corner keys
    order = np.argsort(ks, kind="stable")
    pos = np.searchsorted(ks[order], ke)
    succ_a = order[pos]
    twice = np.flatnonzero((pos + 1 < n) & (ks[order][np.minimum(pos + 1, n - 1)] == ke))
    if twice.size:  # turn right there (y down: keep to the same pixel), so each start is taken once
        dx, dy = np.sign(ex[twice] - sx[twice]), np.sign(ey[twice] - sy[twice])
        c = succ_a[twice]
        right = (np.sign(ex[c] - sx[c]) == -dy) & (np.sign(ey[c] - sy[c]) == dx)
        succ_a[twice] = np.where(right, c, order[pos[twice] + 1])
    succ = succ_a.tolist()
    ring = [-1] * n
    rings: list[list[int]] = []
    for start in range(n):
        if ring[start] >= 0:
            continue
        k, cycle, i = len(rings), [start], succ[start]
        ring[start] = k
        while i != start:
            ring[i] = k
            cycle.append(i)
            i = succ[i]
        rings.append(cycle)
    corners: dict[int, list[int]] = {}
    for i in twice.tolist():  # the two pieces ending at each such corner
        corners.setdefault(int(ke[i]), []).append(i)
    for a, b in corners.values():
        if ring[a] != ring[b]:
            continue
        succ[a], succ[b] = succ[b], succ[a]  # swap the continuations: the ring splits in two
        for k, first in ((ring[a], a), (len(rings), b)):
            if k == len(rings):
                rings.append([])
            rings[k] = []
            i = first
            while True:
                ring[i] = k
                rings[k].append(i)
                i = succ[i]
                if i == first:
                    break
    return rings


def _staircase(first: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The corners ``(x, y)`` of the outline of a mask with one run of pixels per row, ``first[r]`` to
    ``end[r]`` (exclusive) in row ``r``, each run sharing a column with the next (one simply connected
    component): in :func:`_rings`' order, from the first row's top-left corner, clockwise (y down), one
    vertex where the outline turns."""
    # every row boundary on each side: down the right ends, then up the first columns
    k = (np.arange(2 * len(first)) + 1) // 2  # 0, 1, 1, 2, 2, ...: the rows the right side passes
    left = np.repeat(first, 2)[::-1]
    x = np.concatenate([first[:1], np.repeat(end, 2), left[:-1]])
    y = np.concatenate([k[:1], k, k[:0:-1]])
    # a point between two on its vertical or horizontal line is not a corner (rows with equal ends give
    # such points twice: both go)
    xs, ys = np.concatenate([x[-1:], x, x[:1]]), np.concatenate([y[-1:], y, y[:1]])  # cyclic neighbours
    straight = ((xs[:-2] == x) & (x == xs[2:])) | ((ys[:-2] == y) & (y == ys[2:]))
    return x[~straight], y[~straight]


def mask_to_polygon(
    mask: np.ndarray, transform: Affine, box: tuple[int, int, int, int] | None = None
) -> shapely.geometry.Polygon:
    """Vectorise a single 4-connected component to one polygon (holes kept) with ``transform``: the
    outline of its pixels, one vertex per corner (the same point set as GDAL's polygonize; ~3x faster,
    as only this one component is traced). Where the outline touches itself at a corner (pixels meeting
    diagonally) it is split into rings that touch there, so the polygon is valid. Raises ValueError
    unless the mask is one 4-connected component. ``box``: the mask's :func:`bbox`, when known."""
    box = box or bbox(mask)
    if box is None:
        raise ValueError("expected one connected component, got 0")
    r0, c0, r1, c1 = box
    p = _padded(np.asarray(mask[r0:r1, c0:c1], dtype=bool))
    runs = _runs(p[1:-1])
    if _staircase_runs(runs, r1 - r0):  # most masks: the outline is a staircase
        sx, sy = _staircase(runs[1], runs[2])
        gx, gy = _georeferenced(sx + c0, sy + r0, transform)
        idx = np.append(np.arange(len(gx)), 0)
        return shapely.geometry.Polygon(np.stack([gx[idx], gy[idx]], axis=1))
    return _traced_polygon(p, runs, transform, r0, c0)


def _georeferenced(x: np.ndarray, y: np.ndarray, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Pixel corners ``(x, y)`` through ``transform`` (float64)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    return transform.a * x + transform.b * y + transform.c, transform.d * x + transform.e * y + transform.f


def _traced_polygon(
    p: np.ndarray, runs: tuple[np.ndarray, np.ndarray, np.ndarray], transform: Affine, r0: int, c0: int
) -> shapely.geometry.Polygon:
    """:func:`mask_to_polygon` of any one component, from its :func:`_pieces` linked by :func:`_rings`
    (``p``: the mask cropped to its box at ``(r0, c0)``, :func:`_padded`; ``runs``: its rows' runs)."""
    sx, sy, ex, ey = _pieces(p, runs)
    rings = _rings(sx, sy, ex, ey, p.shape[1] - 2)
    x, y = (sx + c0).astype(np.float64), (sy + r0).astype(np.float64)
    gx, gy = _georeferenced(x, y, transform)
    shells: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    for ring in rings:
        idx = np.array([*ring, ring[0]])
        twice_area = np.dot(x[idx[:-1]], y[idx[1:]]) - np.dot(x[idx[1:]], y[idx[:-1]])
        (shells if twice_area > 0 else holes).append(np.stack([gx[idx], gy[idx]], axis=1))
    if len(shells) != 1:
        raise ValueError(f"expected one connected component, got {len(shells)}")
    return shapely.geometry.Polygon(shells[0], holes)


def touches_border(mask: np.ndarray) -> bool:
    """True if any mask pixel lies on the array's border (the region may have cut the mask)."""
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
