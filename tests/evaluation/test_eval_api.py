"""evaluate_label_sets: the rules (test area, precision area, ids, CRSs, repairs) and bad input."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import shapely

from crownsam.common.errors import InputError
from crownsam.evaluation.api import PER_TREE_COLUMNS, evaluate_label_sets

CRS = "EPSG:3067"
X0, Y0 = 385000.0, 6672000.0


def sq(x: float, y: float, w: float, h: float | None = None) -> shapely.Polygon:
    return shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + (w if h is None else h))


def frame(geoms, ids=None, id_column="segment_id", crs=CRS) -> gpd.GeoDataFrame:
    cols = {} if ids is None else {id_column: ids}
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries(list(geoms), crs=crs), crs=crs)


# Four crowns 2 m wide, 4 m apart; "coarse" labels offset by 1 m (J = 1/3), "pseudo" by 0.2 m (J = 0.9/1.1).
CROWNS = [sq(4 * i, 0, 2) for i in range(4)]
MANUAL = frame(CROWNS, [10, 20, 30, 40], "tree_id")
COARSE = frame([sq(4 * i + 1, 0, 2) for i in range(4)], [1, 2, 3, 4])
PSEUDO = frame([sq(4 * i + 0.2, 0, 2) for i in range(4)], [1, 2, 3, 4])
J_COARSE, J_PSEUDO = 1 / 3, 1.8 / 2.2


def test_per_tree_table_and_metric_keys() -> None:
    ev = evaluate_label_sets(MANUAL, {"coarse": COARSE, "pseudo": PSEUDO}, n_boot=200)
    assert tuple(ev.per_tree.columns) == PER_TREE_COLUMNS
    assert len(ev.per_tree) == 8 and ev.per_tree["label_id"].dtype == "Int64"
    assert ev.per_tree["tree_id"].tolist() == [10, 20, 30, 40] * 2
    j = ev.jaccard_table()
    np.testing.assert_allclose(j["coarse"], J_COARSE, atol=1e-9)
    np.testing.assert_allclose(j["pseudo"], J_PSEUDO, atol=1e-9)
    m = ev.metrics
    assert m["n_trees"] == 4
    assert m["jaccard_mean/coarse"] == pytest.approx(J_COARSE, abs=1e-9)
    for key in (
        "jaccard_median",
        "jaccard_std",
        "jaccard_ci_low",
        "jaccard_ci_high",
        "precision",
        "recall",
        "f1",
    ):
        assert f"{key}/pseudo" in m
    # Later minus earlier, keyed "<later>-<earlier>": pseudo better than coarse reads as positive.
    assert m["paired_diff_mean/pseudo-coarse"] == pytest.approx(J_PSEUDO - J_COARSE, abs=1e-9)
    assert m["paired_diff_ci_low/pseudo-coarse"] == pytest.approx(J_PSEUDO - J_COARSE, abs=1e-9)
    assert 0 < m["wilcoxon_p/pseudo-coarse"] <= 1
    assert m["paired_same_label/pseudo-coarse"] == 1.0
    # Detection at IoU >= 0.5: coarse detects nothing, pseudo everything.
    assert (m["recall/coarse"], m["precision/coarse"], m["f1/coarse"]) == (0.0, 0.0, 0.0)
    assert (m["recall/pseudo"], m["precision/pseudo"], m["f1/pseudo"]) == (1.0, 1.0, 1.0)
    # Given the other way round, the key and the sign flip.
    ev2 = evaluate_label_sets(MANUAL, {"pseudo": PSEUDO, "coarse": COARSE}, n_boot=200)
    assert ev2.metrics["paired_diff_mean/coarse-pseudo"] == pytest.approx(J_COARSE - J_PSEUDO, abs=1e-9)
    assert "paired_diff_mean/pseudo-coarse" not in ev2.metrics


def test_ids_default_to_row_numbers_with_a_note() -> None:
    ev = evaluate_label_sets(frame(CROWNS), {"x": frame([sq(0, 0, 2)])}, n_boot=10)
    assert ev.per_tree["tree_id"].tolist() == [1, 2, 3, 4]
    assert ev.per_tree["label_id"].iloc[0] == 1
    assert any("no tree_id column" in n for n in ev.notes)
    assert any("no segment_id column" in n for n in ev.notes)


def test_other_label_id_column() -> None:
    labels = frame([sq(0, 0, 2)], [99], id_column="label")
    ev = evaluate_label_sets(MANUAL, {"x": labels}, label_id_column="label", n_boot=10)
    assert ev.per_tree["label_id"].iloc[0] == 99


def test_test_area_selects_crowns_by_centroid_and_labels_by_half_their_area() -> None:
    # Area x in [-1, 8.5]: holds the centroids of crowns 10 (x = 1) and 20 (x = 5), not 30 (x = 9) nor 40.
    area = frame([sq(-1, -5, 9.5, 10)])
    labels = frame(
        [
            sq(0.2, 0, 2),  # matches 10, inside
            sq(4.2, 0, 2),  # matches 20, inside
            sq(8.2, 0, 2),  # matches 30 (not evaluated); 0.3 of 2 inside (15 %): not counted
            sq(6.5, 3, 2),  # a false positive, 100 % inside: counted
            sq(7.5, -4, 1.6),  # 1.0 of 1.6 inside (62.5 %): counted
            sq(7.86, -2, 1.6),  # 0.64 of 1.6 inside (40 %): not counted
        ],
        [1, 2, 3, 4, 5, 6],
    )
    ev = evaluate_label_sets(MANUAL, {"x": labels}, area, n_boot=10)
    assert ev.per_tree["tree_id"].tolist() == [10, 20]
    m = ev.metrics
    assert m["n_trees"] == 2 and m["n_manual"] == 4
    assert m["n_labels_in_area/x"] == 4 and m["tp/x"] == 2
    assert m["precision/x"] == pytest.approx(2 / 4) and m["recall/x"] == 1.0
    assert m["f1/x"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert any("2 of 4 manual crowns have their centroid outside the test area" in n for n in ev.notes)


def test_without_area_precision_uses_the_manual_crowns_hull() -> None:
    labels = frame([sq(0.2, 0, 2), sq(100, 0, 2)], [1, 2])  # the second is far outside the hull
    ev = evaluate_label_sets(MANUAL, {"x": labels}, n_boot=10)
    assert ev.metrics["n_labels_in_area/x"] == 1 and ev.metrics["precision/x"] == 1.0
    assert any("convex hull of the manual crowns" in n for n in ev.notes)


def test_area_without_manual_crowns_is_a_clear_error() -> None:
    area = frame([sq(500, 500, 10)])
    with pytest.raises(InputError, match="contains none of the 4 manual crowns"):
        evaluate_label_sets(MANUAL, {"x": COARSE}, area, sources={"area": "far.gpkg"})
    with pytest.raises(InputError, match=r"^far\.gpkg: "):
        evaluate_label_sets(MANUAL, {"x": COARSE}, area, sources={"area": "far.gpkg"})


def test_no_overlap_gives_zero_and_a_warning_not_a_crash() -> None:
    far = frame([sq(1000, 1000, 2), sq(1010, 1000, 2)], [1, 2])
    ev = evaluate_label_sets(MANUAL, {"far": far}, n_boot=50)
    assert (ev.per_tree["jaccard"] == 0).all() and ev.per_tree["label_id"].isna().all()
    assert ev.metrics["jaccard_mean/far"] == 0.0 and ev.metrics["recall/far"] == 0.0
    assert ev.metrics["n_no_overlap/far"] == 4
    assert any("4 of 4 manual crowns overlap no label (J = 0)" in n for n in ev.notes)


def test_empty_label_set_scores_zero_and_empty_manual_is_an_error() -> None:
    empty = gpd.GeoDataFrame({"segment_id": []}, geometry=gpd.GeoSeries([], crs=CRS), crs=CRS)
    ev = evaluate_label_sets(MANUAL, {"coarse": COARSE, "none": empty}, n_boot=50)
    assert (ev.jaccard_table()["none"] == 0).all()
    assert math.isnan(ev.metrics["precision/none"]) and ev.metrics["n_labels/none"] == 0
    assert ev.metrics["paired_diff_mean/none-coarse"] == pytest.approx(-J_COARSE)
    assert any("no features" in n for n in ev.notes)
    with pytest.raises(InputError, match="empty"):
        evaluate_label_sets(empty, {"coarse": COARSE})


def test_labels_in_another_crs_are_reprojected_with_a_note() -> None:
    ev_same = evaluate_label_sets(MANUAL, {"x": PSEUDO}, n_boot=10)
    ev = evaluate_label_sets(MANUAL, {"x": PSEUDO.to_crs("EPSG:4326")}, n_boot=10)
    np.testing.assert_allclose(ev.per_tree["jaccard"], ev_same.per_tree["jaccard"], atol=1e-6)
    assert any("reprojected from EPSG:4326 to EPSG:3067" in n for n in ev.notes)
    assert ev.crs == "EPSG:3067"


def test_geographic_input_is_evaluated_in_a_projected_crs() -> None:
    """All layers in lon/lat: areas are computed in the data's UTM zone (35N here, which is the same
    projection as EPSG:3067 up to the datum), so areas in m² and J match the projected evaluation."""
    ev = evaluate_label_sets(MANUAL.to_crs("EPSG:4326"), {"x": PSEUDO.to_crs("EPSG:4326")}, n_boot=10)
    ref = evaluate_label_sets(MANUAL, {"x": PSEUDO}, n_boot=10)
    assert ev.crs == "EPSG:32635"
    assert any("geographic CRS EPSG:4326" in n and "EPSG:32635" in n for n in ev.notes)
    np.testing.assert_allclose(ev.per_tree["manual_area_m2"], 4.0, rtol=1e-4)
    np.testing.assert_allclose(ev.per_tree["jaccard"], ref.per_tree["jaccard"], atol=1e-5)


def test_non_metre_units_are_converted_to_square_metres() -> None:
    feet = "EPSG:2263"  # NAD83 / New York Long Island (ftUS)
    g = [shapely.box(1000, 1000, 1010, 1010)]
    ev = evaluate_label_sets(frame(g, crs=feet), {"x": frame(g, crs=feet)}, n_boot=10)
    assert ev.per_tree["manual_area_m2"].iloc[0] == pytest.approx(100 * 0.3048006096**2, rel=1e-6)
    assert ev.per_tree["jaccard"].iloc[0] == pytest.approx(1.0)


def bowtie(x: float, y: float, s: float) -> shapely.Polygon:
    """Self-intersecting square-ish polygon: make_valid gives two triangles of total area s²/2."""
    return shapely.Polygon(
        [(X0 + x, Y0 + y), (X0 + x + s, Y0 + y + s), (X0 + x + s, Y0 + y), (X0 + x, Y0 + y + s)]
    )


def test_invalid_geometries_are_repaired_and_counted() -> None:
    manual = frame([bowtie(0, 0, 2), CROWNS[1]], [1, 2], "tree_id")
    labels = frame([bowtie(0, 0, 2), sq(4, 0, 2), bowtie(20, 0, 2)], [1, 2, 3])
    assert not manual.geometry.iloc[0].is_valid
    ev = evaluate_label_sets(manual, {"x": labels}, n_boot=10)
    t = ev.per_tree.set_index("tree_id")
    assert t.loc[1, "jaccard"] == pytest.approx(1.0, abs=1e-9)  # the same repaired bow-tie
    assert t.loc[1, "manual_area_m2"] == pytest.approx(2.0, abs=1e-9)
    assert t.loc[2, "jaccard"] == pytest.approx(1.0, abs=1e-9)
    assert any(n.startswith("manual crowns: 1 invalid geometries repaired") for n in ev.notes)
    assert any(n.startswith("label set 'x': 2 invalid geometries repaired") for n in ev.notes)


def test_null_and_empty_geometries_are_dropped_and_counted() -> None:
    manual = frame([CROWNS[0], None, shapely.Polygon()], [1, 2, 3], "tree_id")
    ev = evaluate_label_sets(manual, {"x": frame([CROWNS[0], None], [1, 2])}, n_boot=10)
    assert ev.per_tree["tree_id"].tolist() == [1]
    assert any("manual crowns: 2 null or empty geometries dropped" in n for n in ev.notes)
    assert any("label set 'x': 1 null or empty geometries dropped" in n for n in ev.notes)


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        ({}, "at least one label set"),
        ({"-a": COARSE}, "letters, digits"),
        ({"a/b": COARSE}, "letters, digits"),
        ({"b-c": COARSE, "c": COARSE, "a": COARSE, "a-b": COARSE}, "the same key 'a-b-c'"),
    ],
)
def test_bad_label_set_names(sets, match) -> None:
    with pytest.raises(InputError, match=match):
        evaluate_label_sets(MANUAL, sets)


def test_duplicate_or_missing_ids_are_errors() -> None:
    with pytest.raises(InputError, match="unique; 1 appears more than once"):
        evaluate_label_sets(MANUAL, {"x": frame([sq(0, 0, 1), sq(5, 0, 1)], [1, 1])})
    with pytest.raises(InputError, match="tree_id must hold whole numbers; found an empty value"):
        evaluate_label_sets(frame(CROWNS, [1.0, None, 3.0, 4.0], "tree_id"), {"x": COARSE})
    no_crs = gpd.GeoDataFrame(geometry=[sq(0, 0, 1)])
    with pytest.raises(InputError, match="no CRS"):
        evaluate_label_sets(MANUAL, {"x": no_crs})


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    labels = frame([sq(4 * i + 0.1 * i, 0, 2) for i in range(4)], [1, 2, 3, 4])
    a = evaluate_label_sets(MANUAL, {"x": labels}, n_boot=300, seed=5).metrics
    b = evaluate_label_sets(MANUAL, {"x": labels}, n_boot=300, seed=5).metrics
    c = evaluate_label_sets(MANUAL, {"x": labels}, n_boot=300, seed=6).metrics
    assert a == b
    assert (a["jaccard_ci_low/x"], a["jaccard_ci_high/x"]) != (c["jaccard_ci_low/x"], c["jaccard_ci_high/x"])


def test_overlap_figures_per_label_set_side_by_side() -> None:
    """Three label sets side by side; the overlap figures count pairs of labels sharing area among the
    labels in the precision area, and the summed shared area (hand-computed)."""
    # Two labels overlapping by a 1 x 2 m strip, one label overlapping both of them by 0.5 x 2 m each.
    bleeding = frame([sq(0, 0, 3), sq(2, 0, 2), sq(4, 0, 2), sq(12, 0, 2)], [1, 2, 3, 4])
    ev = evaluate_label_sets(
        MANUAL, {"coarse": COARSE, "pseudo-box": bleeding, "pseudo-npc": PSEUDO}, n_boot=50
    )
    m = ev.metrics
    assert ev.label_sets == ["coarse", "pseudo-box", "pseudo-npc"]
    assert m["overlap_pairs/coarse"] == 0 and m["overlap_area_m2/coarse"] == 0
    assert m["overlap_pairs/pseudo-npc"] == 0 and m["overlap_share/pseudo-npc"] == 0
    # sq(0,0,3) x sq(2,0,2) share x 2..3, y 0..2 (2 m²); sq(2,0,2) and sq(4,0,2) only touch
    assert m["overlap_pairs/pseudo-box"] == 1
    assert m["overlap_area_m2/pseudo-box"] == pytest.approx(2.0)
    assert m["overlap_share/pseudo-box"] == pytest.approx(2.0 / (9 + 4 + 4 + 4))
    for s in ev.label_sets:
        assert f"f1/{s}" in m and f"jaccard_mean/{s}" in m
    assert "paired_diff_mean/pseudo-npc-pseudo-box" in m
