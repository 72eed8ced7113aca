"""Treetop detection: nodata-aware smoothing, disk maxima, local-maximum rule, ties, search windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from crownsam.chm.treetops import H_CAP, Window, disk_max, find_treetops, reach_px, smooth_chm


def brute_disk_max(s: np.ndarray, r: int, c: int, radius: float) -> float:
    rr, cc = np.mgrid[0 : s.shape[0], 0 : s.shape[1]]
    inside = (rr - r) ** 2 + (cc - c) ** 2 <= radius**2
    return float(s[inside].max())


def field(seed: int, shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(10.0, 3.0, shape), 1.5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.floats(0.0, 7.5))
def test_disk_max_equals_brute_force(seed: int, radius: float) -> None:
    s = field(seed)
    rng = np.random.default_rng(seed + 1)
    rows, cols = rng.integers(0, s.shape[0], 30), rng.integers(0, s.shape[1], 30)
    radii = np.full(30, radius) * rng.uniform(0.5, 1.0, 30)
    got = disk_max(s, rows, cols, radii)
    want = [brute_disk_max(s, r, c, q) for r, c, q in zip(rows, cols, radii, strict=True)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("window", [Window(fixed_px=3.0, res=0.2), Window(a=0.2, b=0.05, res=0.2)])
def test_treetops_are_exactly_the_window_maxima(window: Window) -> None:
    s = field(7, (60, 70))
    s[5:9, 40:46] = -np.inf  # nodata patch: never a treetop, never blocks one
    rows, cols = find_treetops(s, 9.0, window)
    found = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert found, "expected some treetops"
    for r in range(s.shape[0]):
        for c in range(s.shape[1]):
            v = s[r, c]
            radius = float(window.radius_px(np.array(v)))
            is_max = np.isfinite(v) and v >= 9.0 and brute_disk_max(s, r, c, radius) == v
            assert ((r, c) in found) == is_max, (r, c)
    assert list(zip(rows, cols, strict=True)) == sorted(found)  # raster order


def test_plateau_gives_one_treetop_first_in_raster_order() -> None:
    s = np.zeros((20, 20))
    s[8:11, 5:9] = 12.0  # flat top, 3 x 4 pixels
    rows, cols = find_treetops(s, 2.0, Window(fixed_px=4.0, res=0.2))
    assert (rows.tolist(), cols.tolist()) == ([8], [5])


def test_min_height_and_all_nodata() -> None:
    s = field(3)
    rows, _ = find_treetops(s, float(s.max()) + 0.01, Window(fixed_px=2.0, res=0.2))
    assert rows.size == 0
    rows, _ = find_treetops(np.full((10, 10), -np.inf), 0.0, Window(fixed_px=2.0, res=0.2))
    assert rows.size == 0


def test_smoothing_ignores_nodata() -> None:
    chm = np.full((30, 30), 7.5)
    valid = np.ones(chm.shape, dtype=bool)
    valid[10:15, 12:20] = False
    chm[~valid] = -9999.0
    s = smooth_chm(chm, valid, 1.5)
    assert np.all(np.isneginf(s[~valid]))
    np.testing.assert_allclose(s[valid], 7.5)  # neither the nodata value nor the raster edge leaks in
    np.testing.assert_array_equal(smooth_chm(chm, valid, 0.0)[valid], 7.5)


def test_window_radius_from_height_and_reach() -> None:
    w = Window(a=0.5, b=0.1, res=0.25)
    np.testing.assert_allclose(
        w.radius_px(np.array([0.0, 10.0, 100.0])), [2.0, 6.0, (0.5 + 0.1 * H_CAP) / 0.25]
    )
    assert w.max_px == pytest.approx(26.0)
    assert Window(fixed_px=3.0).radius_px(np.array([1.0, 50.0])).tolist() == [3.0, 3.0]
    assert reach_px(Window(fixed_px=3.0), 1.0) == 3 + 4 + 1
    assert reach_px(Window(fixed_px=2.5), 0.0) == 3 + 0 + 1
