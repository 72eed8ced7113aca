"""Pure mask helpers: prompt neighbourhoods, exact crop upsampling, largest component, vectorising."""

from __future__ import annotations

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


def neighbourhoods(
    boxes: np.ndarray, width: int, height: int, frac: float = 0.25, min_margin: int = 16
) -> np.ndarray:
    """Integer pixel regions ``(r0, c0, r1, c1)`` around each box: the box grown by
    ``max(min_margin, frac * max(box width, box height))`` on every side, clipped to the window.

    Masks are only computed and vectorised inside these regions, never over the whole window.
    """
    b = np.asarray(boxes, dtype=np.float64)
    m = np.maximum(min_margin, frac * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
    c0 = np.clip(np.floor(b[:, 0] - m), 0, width)
    r0 = np.clip(np.floor(b[:, 1] - m), 0, height)
    c1 = np.clip(np.ceil(b[:, 2] + m), 0, width)
    r1 = np.clip(np.ceil(b[:, 3] + m), 0, height)
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
