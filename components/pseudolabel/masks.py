"""Pure mask helpers: prompt neighbourhoods, exact crop upsampling, logit patches, largest component,
vectorising."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely.geometry
import torch
from rasterio import Affine
from scipy import ndimage


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
    _, first, last = _interp_matrix(lo, hi, in_size, out_size)
    return first, last


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
        my, ry0, ry1 = _interp_matrix(r0, r1, self.low_hw[0], self.out_hw[0])
        mx, rx0, rx1 = _interp_matrix(c0, c1, self.low_hw[1], self.out_hw[1])
        if ry0 < self.r0 or rx0 < self.c0 or ry1 > self.r0 + h or rx1 > self.c0 + w:
            raise ValueError(f"region {region} reads outside the logit patch")
        sub = self.data[ry0 - self.r0 : ry1 - self.r0, rx0 - self.c0 : rx1 - self.c0]
        return (my.numpy() @ sub @ mx.numpy().T).astype(np.float32, copy=False)


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected component of a boolean mask, or None if the mask is empty."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    if n == 1:
        return labels == 1
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def mask_to_polygon(mask: np.ndarray, transform: Affine) -> shapely.geometry.Polygon:
    """Vectorise a single 4-connected component to one polygon (holes kept) with ``transform``."""
    geoms = [
        shapely.geometry.shape(g)
        for g, v in rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=transform)
        if v == 1
    ]
    if len(geoms) != 1:
        raise ValueError(f"expected one connected component, got {len(geoms)}")
    return geoms[0]


def touches_border(mask: np.ndarray) -> bool:
    """True if any mask pixel lies on the array's border (the region may have cut the mask)."""
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
