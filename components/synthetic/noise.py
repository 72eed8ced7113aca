"""Smooth random fields (Gaussian-filtered white noise), made cheaply at reduced resolution when wide."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def upsample(a: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by an integer ``factor`` (pixel areas aligned), cropped to ``shape``."""
    if factor == 1:
        return a[: shape[0], : shape[1]]
    big = ndimage.zoom(a, factor, order=1, grid_mode=True, mode="nearest")
    return big[: shape[0], : shape[1]]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance float32 noise with correlation length ``sigma`` pixels.

    For ``sigma >= 4`` the field is drawn at ``1/f`` resolution (``f = floor(sigma / 2)``), filtered with
    ``sigma / f`` and upsampled bilinearly, which keeps wide fields cheap on large rasters.
    """
    f = max(1, int(sigma // 2)) if sigma >= 4 else 1
    small = (-(-shape[0] // f), -(-shape[1] // f))
    a = ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sigma / f, mode="wrap")
    a = upsample(a, f, shape)
    a -= a.mean()
    a /= max(float(a.std()), 1e-12)
    return a
