"""Known answer: degraded predictions refined with a stand-in SAM2 that answers from the true crowns.

Stand-ins (``crownsam.pseudolabel.predictor.KnownAnswerPredictor`` for box prompts: the true crown whose
bounding box best matches the prompt box, rasterised on the window's grid; for SESSRS, the true crowns
themselves as the SAM objects). Predictions: the true crowns of a synthetic scene degraded by the recipe of
``degrade.py`` (eroded, dilated, shifted, split). The check (:func:`passes`): refinement raises the mean
Jaccard against the truth by at least :data:`MARGIN` and reaches :data:`FLOOR`, and the crowns that SAM
replaced sit on their true crowns (median centroid distance below :data:`MAX_SHIFT_PX` pixel, over the
crowns that were not split: box prompts cannot join the halves of a split crown, so those stay two
instances). The tests below prove that a reversed threshold or a one-pixel georeferencing error makes
the check fail.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from degrade import degrade
from rasterio import Affine

import crownsam.pseudolabel.run as pseudolabel_run
import crownsam.refine.sessrs as sessrs_module
from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.evaluation.api import evaluate_label_sets
from crownsam.pseudolabel.masks import mask_to_polygon
from crownsam.pseudolabel.predictor import KnownAnswerPredictor
from crownsam.refine.api import RefineSetup, read_predictions, refine_crowns
from crownsam.refine.params import RefineParams
from crownsam.synthetic import generate_scene

MARGIN = (
    0.25  # refined mean Jaccard - predicted mean Jaccard (measured on this scene: +0.38 box, +0.40 sessrs)
)
FLOOR = 0.90  # refined mean Jaccard (measured: 0.936 box, 0.958 sessrs; predictions 0.560)
MAX_SHIFT_PX = 0.25  # median centroid distance of SAM-refined crowns to their true crowns, in pixels


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("refine-known")
    scene = generate_scene(d / "scene", size=768, seed=3)
    truth = gpd.read_file(scene.truth)
    pred = degrade(truth)
    pred.to_file(d / "pred.gpkg")
    with rasterio.open(scene.ortho) as src:
        transform = src.transform
    crowns, _ = read_predictions(str(d / "pred.gpkg"), "pred", truth.crs.to_string())
    return scene, truth, crowns, transform


def mean_jaccard(truth: gpd.GeoDataFrame, crowns: gpd.GeoDataFrame) -> float:
    ev = evaluate_label_sets(truth, {"x": crowns}, None, label_id_column="crown_id", n_boot=1)
    return float(ev.metrics["jaccard_mean/x"])


def centroid_shift_px(truth: gpd.GeoDataFrame, refined: gpd.GeoDataFrame, gsd: float) -> float:
    """Median distance (pixels) from each SAM-refined crown's centroid to the centroid of the true crown it
    overlaps most; crowns that were not split only."""
    done = refined[(refined["refined_by"] != "prediction") & (refined["kind"] != "split")]
    tree = shapely.STRtree(truth.geometry.values)
    dist = []
    for g in done.geometry.values:
        near = tree.query(g, predicate="intersects")
        best = max(near, key=lambda i: truth.geometry.values[i].intersection(g).area)
        dist.append(g.centroid.distance(truth.geometry.values[best].centroid) / gsd)
    return float(np.median(dist)) if dist else float("inf")


def refine(case, method: str) -> gpd.GeoDataFrame:
    scene, truth, crowns, transform = case
    # the sequential loop: the mutations below patch this process, not the window pipeline's workers
    # (test_refine_window_loop.py shows that the workers do not change the crowns)
    setup = RefineSetup(
        params=RefineParams(method=method, t1=0.5, t2=0.5), loop=WindowLoopParams(workers=0), progress=False
    )
    if method == "box":
        out, _ = refine_crowns(
            crowns, str(scene.ortho), setup, predictor=KnownAnswerPredictor(truth, transform)
        )
    else:
        out, _ = refine_crowns(crowns, str(scene.ortho), setup, objects=truth)
    return out


def passes(case, refined: gpd.GeoDataFrame) -> bool:
    """The check of the module docstring."""
    _, truth, crowns, transform = case
    raw, new = mean_jaccard(truth, crowns), mean_jaccard(truth, refined)
    shift = centroid_shift_px(truth, refined, abs(transform.a))
    return new - raw >= MARGIN and new >= FLOOR and shift < MAX_SHIFT_PX


def test_degraded_predictions_are_poor(case) -> None:
    _, truth, crowns, _ = case
    assert set(crowns["kind"]) == {"eroded", "dilated", "shifted", "split"}
    assert mean_jaccard(truth, crowns) < FLOOR - MARGIN


@pytest.mark.parametrize("method", ["box", "sessrs"])
def test_refinement_raises_mean_jaccard_by_the_margin(case, method: str) -> None:
    out = refine(case, method)
    assert passes(case, out)
    assert (out["refined_by"] != "prediction").mean() > 0.9
    assert out["crown_id"].is_unique
    # exclusive: no two crowns share more than a pixel
    g = out.geometry.values
    left, right = shapely.STRtree(g).query(g, predicate="intersects")
    px = abs(case[3].a) ** 2
    assert all(shapely.intersection(g[a], g[b]).area < px for a, b in zip(left, right, strict=True) if a < b)


def test_reversed_support_thresholds_fail_the_check(case, monkeypatch: pytest.MonkeyPatch) -> None:
    """SESSRS with ``<`` for ``>`` in the support rule: nothing is replaced, the check fails."""
    monkeypatch.setattr(sessrs_module, "supports", lambda os_, op, t1, t2: (os_ < t1) | (op < t2))
    assert not passes(case, refine(case, "sessrs"))


def test_reversed_comparable_size_rule_fails_the_check(case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessrs_module, "comparable", lambda s, p, t1, t2: t2 * p > s and t1 * s > p)
    assert not passes(case, refine(case, "sessrs"))


def test_reversed_fallback_threshold_fails_the_check(case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Box method with the IoU fallback the wrong way round: every SAM2 mask is refused."""

    def reversed_fallback(empty: bool, score: float, ratio: float, iou: float, p) -> str:
        return "low_iou" if iou > p.fallback_min_iou else ""

    monkeypatch.setattr(pseudolabel_run, "fallback_reason", reversed_fallback)
    assert not passes(case, refine(case, "box"))


def test_one_pixel_georeferencing_error_fails_the_check(case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Box masks traced one pixel east of where they are (a georeferencing off-by-one): the centroid part
    of the check fails."""
    monkeypatch.setattr(
        pseudolabel_run,
        "mask_to_polygon",
        lambda m, t, box=None: mask_to_polygon(m, t @ Affine.translation(1, 0), box),
    )
    assert not passes(case, refine(case, "box"))


def test_exclusive_step_retraces_on_the_right_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two overlapping squares on a 1 m grid (origin 100, 200): the refined one keeps the shared strip,
    the other is traced again without it, exactly; rows and columns swapped in the region transform (a
    transform bug) put the retraced crown elsewhere."""
    t = Affine(1.0, 0, 100.0, 0, -1.0, 200.0)
    a = shapely.box(110, 170, 130, 190)  # columns 10..30, rows 10..30
    b = shapely.box(125, 150, 160, 185)  # columns 25..60, rows 15..50 (overlap: columns 25..30, rows 15..30)

    def run() -> list:
        return sessrs_module.make_exclusive([a, b], [a, b], np.array([True, False]), t, 100, 100).geoms

    ga, gb = run()
    assert ga.equals(a)
    assert gb.symmetric_difference(b.difference(a)).area == 0
    monkeypatch.setattr(sessrs_module, "region_transform", lambda tr, r: tr @ Affine.translation(r[0], r[1]))
    _, bad = run()
    assert bad.symmetric_difference(b.difference(a)).area > 10
