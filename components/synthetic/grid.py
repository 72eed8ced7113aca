"""Pixel grids of the synthetic scene: the orthophoto grid and the coarser CHM grid over the same extent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine

CRS = "EPSG:3067"
GSD = 0.025  # orthophoto pixel size, m
CHM_FACTOR = 8  # orthophoto pixels per CHM pixel along each axis
CHM_GSD = GSD * CHM_FACTOR  # 0.2 m
ORIGIN = (385000.0, 6672000.0)  # top-left corner (x, y) in EPSG:3067


@dataclass(frozen=True)
class Grid:
    """A square north-up scene of ``size`` orthophoto pixels whose top-left corner is ``(x0, y0)``."""

    size: int
    x0: float = ORIGIN[0]
    y0: float = ORIGIN[1]

    @property
    def extent(self) -> float:
        """Side length of the scene in metres: ``size * GSD``."""
        return self.size * GSD

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the orthophoto."""
        return (self.x0, self.y0 - self.extent, self.x0 + self.extent, self.y0)

    @property
    def transform(self) -> Affine:
        """Affine transform of the orthophoto grid."""
        return Affine(GSD, 0.0, self.x0, 0.0, -GSD, self.y0)

    @property
    def chm_size(self) -> int:
        """CHM pixels per side: ``ceil(size / CHM_FACTOR)`` (the last CHM column/row may overhang)."""
        return -(-self.size // CHM_FACTOR)

    @property
    def chm_transform(self) -> Affine:
        """Affine transform of the CHM grid (same origin, ``CHM_GSD`` pixels)."""
        return Affine(CHM_GSD, 0.0, self.x0, 0.0, -CHM_GSD, self.y0)


def centres(origin: float, res: float, start: int, stop: int, sign: float = 1.0) -> np.ndarray:
    """Map coordinates of pixel centres ``start..stop-1``: ``origin + sign * (i + 0.5) * res``."""
    return origin + sign * (np.arange(start, stop, dtype=np.float64) + 0.5) * res


def pixel_window(
    x: float, y: float, radius: float, x0: float, y0: float, res: float, n: int
) -> tuple[int, int, int, int]:
    """Rows ``r0:r1`` and columns ``c0:c1``, clipped to ``[0, n)``, of pixels within ``radius`` of (x, y)."""
    c0 = max(0, int(np.floor((x - radius - x0) / res)))
    c1 = min(n, int(np.ceil((x + radius - x0) / res)) + 1)
    r0 = max(0, int(np.floor((y0 - (y + radius)) / res)))
    r1 = min(n, int(np.ceil((y0 - (y - radius)) / res)) + 1)
    return r0, r1, c0, c1
