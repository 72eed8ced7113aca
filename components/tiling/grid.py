"""Pure window-grid arithmetic along one axis (no I/O)."""

from __future__ import annotations

import numpy as np

WINDOW = 1024
STRIDE = 512


def window_offsets(length: int, size: int = WINDOW, stride: int = STRIDE) -> list[int]:
    """Window start offsets covering ``[0, length)``.

    ``o_k = k * stride`` for ``o_k + size <= length``; if that misses the end, one more window at
    ``length - size`` (the last window is aligned to the raster edge). A raster shorter than one
    window gets a single window at 0 (read short, padded later).
    """
    if length <= 0 or size <= 0 or stride <= 0:
        raise ValueError(f"length, size and stride must be positive, got {length}, {size}, {stride}")
    if length <= size:
        return [0]
    offsets = list(range(0, length - size + 1, stride))
    if offsets[-1] != length - size:
        offsets.append(length - size)
    return offsets


def ownership_bounds(offsets: list[int], length: int, size: int = WINDOW) -> np.ndarray:
    """Boundaries between the pixel ranges that each window owns.

    Window ``k`` owns ``[b_{k-1}, b_k)`` with ``b_k = (o_k + o_{k+1} + size) / 2`` (midway between window
    centres), ``b_{-1} = -inf`` and ``b_last = +inf``. For regular windows this is exactly the central
    square ``[o_k + (size - stride)/2, o_k + (size + stride)/2)``; the first and last windows extend to
    the raster edge, and an edge-aligned last window splits the overlap with its neighbour evenly.
    """
    o = np.asarray(offsets, dtype=np.float64)
    return (o[:-1] + o[1:] + min(size, length)) / 2.0


def owner(coords: np.ndarray, offsets: list[int], length: int, size: int = WINDOW) -> np.ndarray:
    """Index of the window owning each coordinate (continuous pixel units along this axis)."""
    return np.searchsorted(ownership_bounds(offsets, length, size), np.asarray(coords), side="right")
