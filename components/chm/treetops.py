"""Treetops: local maxima of the smoothed CHM inside a fixed or height-dependent circular window.

All functions work on one in-memory array (a whole CHM or one block of it) and use only pixels within a
fixed distance of each output pixel, so a block read with enough overlap gives the same values in its core
as the whole raster (see :func:`reach_px`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

H_CAP = 60.0  # m: heights above this (birds, wires, spikes) get the window of a 60 m tree
GAUSS_TRUNCATE = 4.0  # the Gaussian kernel reaches ceil(4 * sigma) pixels


@dataclass(frozen=True)
class Window:
    """The treetop search window: a disk of radius ``fixed_px`` pixels, or ``a + b * h`` metres.

    ``r(h) = a + b * min(max(h, 0), H_CAP)`` metres, divided by the pixel size ``res`` (m); ``h`` is the
    candidate's smoothed height. Exactly one of ``fixed_px`` and ``(a, b)`` is used.
    """

    fixed_px: float | None = None
    a: float = 0.0
    b: float = 0.0
    res: float = 1.0

    def radius_px(self, h: np.ndarray) -> np.ndarray:
        """Search radius in pixels for smoothed heights ``h``."""
        h = np.asarray(h, dtype=np.float64)
        if self.fixed_px is not None:
            return np.full(h.shape, float(self.fixed_px))
        return (self.a + self.b * np.clip(h, 0.0, H_CAP)) / self.res

    @property
    def max_px(self) -> float:
        """The largest radius any pixel can get."""
        return float(self.radius_px(np.array(H_CAP)))


def gauss_reach_px(sigma: float) -> int:
    """Pixels the smoothing kernel reaches on each side (0 without smoothing)."""
    return math.ceil(GAUSS_TRUNCATE * sigma) if sigma > 0 else 0


def reach_px(window: Window, sigma: float) -> int:
    """How far (pixels) a treetop decision looks: the search radius plus the smoothing kernel, plus one."""
    return math.ceil(window.max_px) + gauss_reach_px(sigma) + 1


def smooth_chm(chm: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores nodata (normalised convolution); nodata pixels become ``-inf``.

    ``s = G(chm * valid) / G(valid)`` with ``G`` a Gaussian of ``sigma`` pixels (truncated at 4 sigma,
    zero outside the array), so nodata neither lowers nor raises its neighbours. ``sigma = 0``: no smoothing.
    """
    data = np.where(valid, chm, 0.0).astype(np.float64)
    if sigma > 0:
        kw = {"sigma": sigma, "mode": "constant", "cval": 0.0, "truncate": GAUSS_TRUNCATE}
        ndimage.gaussian_filter(data, output=data, **kw)
        den = ndimage.gaussian_filter(valid.astype(np.float64), **kw)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(data, den, out=data)
        del den
    data[~valid] = -np.inf
    return data


def disk_max(smoothed: np.ndarray, rows: np.ndarray, cols: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Maximum of ``smoothed`` over the disk ``dr^2 + dc^2 <= r^2`` around each (row, col); outside is -inf.

    The disk is a stack of horizontal runs: for row offset ``dr`` the run has half-width
    ``floor(sqrt(r^2 - dr^2))``. Each half-width ``w`` needs one running maximum of width ``2w + 1`` along
    the rows (linear time), gathered at the points that use it.
    """
    out = np.full(rows.shape, -np.inf)
    if rows.size == 0:
        return out
    h = smoothed.shape[0]
    rmax = int(np.floor(radii.max()))
    dr = np.arange(-rmax, rmax + 1)
    rem = radii.astype(np.float64)[None, :] ** 2 - (dr[:, None] ** 2).astype(np.float64)
    half = np.where(rem >= 0, np.floor(np.sqrt(np.maximum(rem, 0.0)) + 1e-9), -1).astype(np.int32)
    rr = rows[None, :] + dr[:, None]
    half[(rr < 0) | (rr >= h)] = -1  # runs in rows outside the array see only -inf
    for w in np.unique(half[half >= 0]):
        run = ndimage.maximum_filter1d(smoothed, 2 * int(w) + 1, axis=1, mode="constant", cval=-np.inf)
        k, idx = np.nonzero(half == w)
        np.maximum.at(out, idx, run[rr[k, idx], cols[idx]])
    return out


def find_treetops(smoothed: np.ndarray, min_height: float, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Treetops (rows, cols in raster order): pixels with ``smoothed >= min_height`` that are the highest
    pixel of their search window (a disk of radius ``window.radius_px(height)``).

    Ties (an equal value elsewhere in the window) go to the first pixel in raster order, so a plateau
    yields one treetop. Nodata (``-inf`` in ``smoothed``) is never a treetop and never blocks one.
    """
    local = ndimage.maximum_filter(smoothed, size=3, mode="constant", cval=-np.inf)
    cand = (smoothed == local) & np.isfinite(smoothed) & (smoothed >= min_height)
    rows, cols = np.nonzero(cand)  # raster order
    vals = smoothed[rows, cols]
    radii = window.radius_px(vals)
    top = disk_max(smoothed, rows, cols, radii) <= vals
    rows, cols, vals, radii = rows[top], cols[top], vals[top], radii[top]
    if rows.size > 1:
        keep = np.ones(rows.size, dtype=bool)
        pts = np.column_stack([rows, cols]).astype(np.float64)
        pairs = cKDTree(pts).query_pairs(float(max(radii.max(), 1.5)), output_type="ndarray")
        if len(pairs):
            i, j = pairs.min(axis=1), pairs.max(axis=1)  # i comes first in raster order
            d2 = (rows[i] - rows[j]) ** 2 + (cols[i] - cols[j]) ** 2
            tie = (vals[i] == vals[j]) & (d2 <= radii[j] ** 2 + 1e-9)
            keep[np.unique(j[tie])] = False
        rows, cols = rows[keep], cols[keep]
    return rows, cols
