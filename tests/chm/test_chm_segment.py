"""Crowns of one array: watershed between known domes, merging of low treetops, drop rule, parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crownsam.chm.segment import (
    ChmParams,
    crown_polygons,
    drop_reasons,
    expected_area_m2,
    merge_low_tops,
    pass_heights,
    segment_array,
)
from crownsam.common.errors import InputError

RES = 0.2


def cone(shape: tuple[int, int], r: float, c: float, height: float, radius_px: float) -> np.ndarray:
    """A pointed crown: ``height * (0.3 + 0.7 (1 - rho^1.5))`` inside ``radius_px``, 0 outside."""
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    rho = np.hypot(rr - r, cc - c) / radius_px
    return np.where(rho < 1, height * (0.3 + 0.7 * (1 - np.clip(rho, 0, 1) ** 1.5)), 0.0)


def test_two_touching_crowns_split_at_the_valley() -> None:
    shape = (40, 60)
    chm = np.maximum(cone(shape, 20, 18, 15.0, 12), cone(shape, 20, 40, 12.0, 12))
    valid = np.ones(shape, dtype=bool)
    crowns = segment_array(chm, valid, RES, ChmParams(smooth=0.0))
    assert list(zip(crowns.rows, crowns.cols, strict=True)) == [(20, 18), (20, 40)]
    np.testing.assert_allclose(crowns.top_height(np.array([0, 1])), [15.0, 12.0])
    left, right = crowns.labels == 1, crowns.labels == 2
    # the boundary lies where the two surfaces cross: the taller crown reaches further
    cross = np.flatnonzero(left[20])[-1]
    assert 29 <= cross <= 31
    assert not (left & right).any() and (left | right).sum() == (chm >= 2.0).sum()
    polys = crown_polygons(crowns.labels, np.array([1, 2]))
    assert polys[1].area == crowns.n_px[0] and polys[2].area == crowns.n_px[1]


def test_nodata_is_never_a_crown_or_treetop() -> None:
    shape = (40, 40)
    chm = cone(shape, 20, 20, 15.0, 14)
    valid = np.ones(shape, dtype=bool)
    valid[:, 25:] = False
    chm[~valid] = -9999.0
    crowns = segment_array(chm, valid, RES, ChmParams())
    assert crowns.rows.size == 1 and crowns.cols[0] < 25
    assert not (crowns.labels[~valid] > 0).any()


def gable_roof(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A 6 m x 12 m gable roof (eave 5 m, ridge 7.5 m, along the columns) with 3 cm noise."""
    rng = np.random.default_rng(seed)
    chm = np.zeros(shape)
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    inside = (np.abs(rr - 30) < 15) & (np.abs(cc - 40) < 30)
    v = np.abs(rr - 30) / 15.0
    chm[inside] = 5.0 + 2.5 * (1 - v[inside])
    return chm + np.where(inside, rng.normal(0, 0.03, shape), 0.0)


def test_flat_roof_becomes_one_crown_and_is_dropped_as_too_large() -> None:
    chm = gable_roof((60, 80))
    valid = np.ones(chm.shape, dtype=bool)
    merged = segment_array(chm, valid, RES, ChmParams())
    assert merged.rows.size == 1  # every noise bump on the ridge merged into the highest
    area = merged.n_px * RES**2
    assert drop_reasons(merged.top_height(np.array([0])), area, ChmParams()).tolist() == ["too_large"]
    split = segment_array(chm, valid, RES, ChmParams(min_prominence=0.0))
    assert split.rows.size > 3


def test_merge_low_tops_follows_passes() -> None:
    # crowns 1 (top 20), 2 (top 19.95) and 3 (top 15); 2 meets 1 at 19.9 (dynamic 0.05 < 0.1), 3 meets 2 at 10
    peak = np.array([np.inf, 20.0, 19.95, 15.0])
    a, b, v = np.array([1, 2]), np.array([2, 3]), np.array([19.9, 10.0])
    assert merge_low_tops(peak, a, b, v, 0.1).tolist() == [0, 1, 1, 3]
    assert merge_low_tops(peak, a, b, v, 0.01).tolist() == [0, 1, 2, 3]
    # 3 is merged into the crown across its pass even when that crown was itself merged
    assert merge_low_tops(peak, a, b, np.array([19.9, 14.95]), 0.1).tolist() == [0, 1, 1, 1]


def test_pass_heights_are_the_highest_shared_edge() -> None:
    labels = np.array([[1, 1, 2], [1, 2, 2], [3, 3, 2]], dtype=np.int32)
    s = np.array([[9.0, 5.0, 6.0], [4.0, 8.0, 7.0], [1.0, 2.0, 3.0]])
    a, b, v = pass_heights(labels, s)
    got = {(int(x), int(y)): float(z) for x, y, z in zip(a, b, v, strict=True)}
    assert got == {(1, 2): 5.0, (1, 3): 1.0, (2, 3): 2.0}


def test_drop_rule() -> None:
    p = ChmParams()
    h = np.array([10.0, 10.0, 10.0, 20.0, 1.9])
    exp = expected_area_m2(h)
    assert exp[0] == pytest.approx(math.pi * 1.5**2)
    area = np.array([0.5, 5.0, 4.01 * exp[2], 3.9 * exp[3], 2.0])
    assert drop_reasons(h, area, p).tolist() == ["too_small", "", "too_large", "", "too_low"]


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"min_height": -1.0}, "--min-height"),
        ({"min_height": 500.0}, "--min-height"),
        ({"min_height": float("nan")}, "--min-height"),
        ({"smooth": -0.5}, "--smooth"),
        ({"smooth": 100.0}, "--smooth"),
        ({"min_distance": 0.0}, "--min-distance"),
        ({"min_distance": 5000.0}, "--min-distance"),
        ({"min_distance": 3.0, "window_from_height": (0.2, 0.03)}, "--min-distance"),
        ({"window_from_height": (-1.0, 0.1)}, "--window-from-height"),
        ({"window_from_height": (0.0, 0.0)}, "--window-from-height"),
        ({"window_from_height": (0.5, 5.0)}, "--window-from-height"),
        ({"window_from_height": (0.5,)}, "--window-from-height"),
        ({"min_prominence": -0.1}, "--min-prominence"),
    ],
)
def test_bad_parameters(kwargs: dict, flag: str) -> None:
    with pytest.raises(InputError) as err:
        ChmParams(**kwargs).check()
    assert err.value.source == flag
    assert "\n" not in str(err.value)
