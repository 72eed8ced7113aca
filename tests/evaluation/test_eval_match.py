"""Hand-computed Jaccard indices and one-to-one matching on simple shapes (exact to 1e-9)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from crownsam.evaluation.api import evaluate_label_sets
from crownsam.evaluation.match import jaccard, match_crowns

CRS = "EPSG:3067"
X0, Y0 = 385000.0, 6672000.0  # shapes are placed here, in metres


def sq(x: float, y: float, w: float, h: float | None = None) -> shapely.Polygon:
    """Rectangle with lower-left corner (X0 + x, Y0 + y)."""
    return shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + (w if h is None else h))


def frame(geoms, ids=None, id_column="segment_id") -> gpd.GeoDataFrame:
    cols = {} if ids is None else {id_column: ids}
    return gpd.GeoDataFrame(cols, geometry=list(geoms), crs=CRS)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (sq(0, 0, 2), sq(0, 0, 2), 1.0),  # identical
        (sq(0, 0, 2), sq(1, 0, 2), 2 / 6),  # offset by half a side: |∩| = 2, |∪| = 6
        (sq(0, 0, 2), sq(1, 1, 2), 1 / 7),  # offset diagonally: |∩| = 1, |∪| = 7
        (sq(0, 0, 2), sq(0.5, 0.5, 1), 1 / 4),  # nested: |∩| = 1, |∪| = 4
        (sq(0, 0, 2), sq(5, 5, 1), 0.0),  # disjoint
        (sq(0, 0, 2), sq(2, 0, 2), 0.0),  # touching along an edge: no area in common
        (sq(0, 0, 3, 1), sq(1, 0, 3, 1), 2 / 4),  # rectangles
    ],
)
def test_jaccard_hand_computed(a, b, expected) -> None:
    assert jaccard(a, b) == pytest.approx(expected, abs=1e-9)
    assert jaccard(b, a) == pytest.approx(expected, abs=1e-9)
    ev = evaluate_label_sets(frame([a], [7], "tree_id"), {"x": frame([b], [3])}, n_boot=10)
    row = ev.per_tree.iloc[0]
    assert row["jaccard"] == pytest.approx(expected, abs=1e-9)
    assert row["tree_id"] == 7
    assert (row["label_id"] == 3) if expected > 0 else pd_isna(row["label_id"])
    assert row["manual_area_m2"] == pytest.approx(a.area, abs=1e-9)
    assert row["intersection_m2"] == pytest.approx(a.intersection(b).area, abs=1e-9)


def pd_isna(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_each_crown_gets_its_best_label_without_competition() -> None:
    manual = frame([sq(0, 0, 2), sq(10, 0, 2), sq(20, 0, 2)], [1, 2, 3], "tree_id")
    # Crown 1: candidates J = 1/3 and 1/7; crown 2: a nested label (1/4); crown 3: nothing near.
    labels = frame([sq(1, 1, 2), sq(1, 0, 2), sq(10.5, 0.5, 1), sq(40, 0, 1)], [11, 12, 13, 14])
    ev = evaluate_label_sets(manual, {"x": labels}, n_boot=10)
    t = ev.per_tree.set_index("tree_id")
    assert t.loc[1, "jaccard"] == pytest.approx(1 / 3, abs=1e-9) and t.loc[1, "label_id"] == 12
    assert t.loc[2, "jaccard"] == pytest.approx(1 / 4, abs=1e-9) and t.loc[2, "label_id"] == 13
    assert t.loc[3, "jaccard"] == 0.0 and pd_isna(t.loc[3, "label_id"])
    assert any("1 of 3 manual crowns overlap no label" in n and "tree_id 3" in n for n in ev.notes)


def test_a_label_overlapping_two_crowns_serves_only_one() -> None:
    # Crowns A = [0,2]x[0,2], B = [2,4]x[0,2]; label L = [1,3.5]x[0,2] overlaps both:
    # J(A, L) = 2 / (4 + 5 - 2) = 2/7, J(B, L) = 3 / (4 + 5 - 3) = 1/2. L goes to B; A scores 0.
    manual = frame([sq(0, 0, 2), sq(2, 0, 2)], [1, 2], "tree_id")
    labels = frame([sq(1, 0, 2.5, 2)], [5])
    ev = evaluate_label_sets(manual, {"x": labels}, n_boot=10)
    t = ev.per_tree.set_index("tree_id")
    assert t.loc[2, "jaccard"] == pytest.approx(0.5, abs=1e-9) and t.loc[2, "label_id"] == 5
    assert t.loc[1, "jaccard"] == 0.0 and pd_isna(t.loc[1, "label_id"])
    assert t.loc[1, "intersection_m2"] == 0.0 and np.isnan(t.loc[1, "label_area_m2"])
    assert any("overlap only labels matched to other crowns" in n and "tree_id 1" in n for n in ev.notes)
    # A second label for A: both crowns are matched.
    ev = evaluate_label_sets(manual, {"x": frame([sq(1, 0, 2.5, 2), sq(0, 0, 1.5, 2)], [5, 6])}, n_boot=10)
    t = ev.per_tree.set_index("tree_id")
    assert t.loc[1, "jaccard"] == pytest.approx(3 / 4, abs=1e-9) and t.loc[1, "label_id"] == 6
    assert t.loc[2, "jaccard"] == pytest.approx(0.5, abs=1e-9) and t.loc[2, "label_id"] == 5


def test_matching_maximises_the_total_not_greedy() -> None:
    """Strips of height 1: A = [0,10], B = [10,20]; L1 = [0,19], L2 = [0,4].
    J(A,L1) = 10/19 (the single best pair), J(B,L1) = 9/20, J(A,L2) = 4/10. Greedy would give A L1 and
    leave B with nothing (total 0.53); the one-to-one optimum gives A L2 and B L1 (total 0.85)."""
    manual = np.array([sq(0, 0, 10, 1), sq(10, 0, 10, 1)], dtype=object)
    labels = np.array([sq(0, 0, 19, 1), sq(0, 0, 4, 1)], dtype=object)
    m = match_crowns(manual, labels)
    assert m.label_index.tolist() == [1, 0]
    np.testing.assert_allclose(m.jaccard, [4 / 10, 9 / 20], atol=1e-9)
    np.testing.assert_allclose(m.intersection, [4.0, 9.0], atol=1e-9)
    assert m.overlaps.tolist() == [True, True]


def test_matching_is_one_to_one_with_many_candidates() -> None:
    rng = np.random.default_rng(1)
    manual = np.array([sq(*rng.uniform(0, 20, 2), rng.uniform(1, 3)) for _ in range(30)], dtype=object)
    labels = np.array([sq(*rng.uniform(0, 20, 2), rng.uniform(1, 3)) for _ in range(25)], dtype=object)
    m = match_crowns(manual, labels)
    used = m.label_index[m.label_index >= 0]
    assert len(used) == len(set(used.tolist())) > 0
    for i, j in enumerate(m.label_index):
        if j >= 0:
            assert m.jaccard[i] == pytest.approx(jaccard(manual[i], labels[j]), abs=1e-12)
        else:
            assert m.jaccard[i] == 0.0


rects = st.tuples(
    st.floats(0, 10, allow_nan=False), st.floats(0, 10, allow_nan=False), st.floats(0.1, 8), st.floats(0.1, 8)
)


@settings(max_examples=60, deadline=None)
@given(rects, rects)
def test_jaccard_of_rectangles_matches_the_formula(r, s) -> None:
    """Axis-aligned rectangles: |∩| = overlap_x * overlap_y, J = |∩| / (|A| + |B| - |∩|)."""
    a, b = sq(*r), sq(*s)
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.bounds, b.bounds  # the coordinates as stored
    ox = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    oy = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = ox * oy
    expected = inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)
    assert jaccard(a, b) == pytest.approx(expected, abs=1e-9)
    m = match_crowns(np.array([a], dtype=object), np.array([b], dtype=object))
    assert m.jaccard[0] == pytest.approx(expected if inter > 0 else 0.0, abs=1e-9)
