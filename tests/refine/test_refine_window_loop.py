"""The refined crowns do not depend on ``--workers``: the sequential loop (``workers=0``) and the window
pipeline with two worker processes give the same crowns, row for row and geometry for geometry.

Stand-ins as in ``test_refine_known_answer.py``: box prompts are answered by
``crownsam.pseudolabel.predictor.KnownAnswerPredictor`` (the true crown whose box best matches the
prompt, rasterised on the window's grid); the SAM objects of SESSRS are made on the fly by
``crownsam.everything.known_answer.KnownAnswerGenerator`` (SAM2's own automatic mask generator with a
point model that answers from the true crowns). The scene is large enough for several windows (box: 2 x 2
windows of 1024 px; sessrs: 512 px tiles), so the pipeline really reorders work.
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import rasterio
import shapely
from degrade import degraded_scene

from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.everything.known_answer import KnownAnswerGenerator
from crownsam.everything.params import EverythingParams
from crownsam.pseudolabel.predictor import KnownAnswerPredictor
from crownsam.refine.api import RefineSetup, read_predictions, refine_crowns
from crownsam.refine.params import RefineParams

AMG = EverythingParams(tile=512, padding=64, passes=1, points_per_side=8)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("refine-loop")
    scene, truth = degraded_scene(d, size=1536, seed=5)
    with rasterio.open(scene.ortho) as src:
        transform = src.transform
    crowns, _ = read_predictions(str(d / "pred.gpkg"), "pred", truth.crs.to_string())
    return scene, truth, crowns, transform


def refine(case, method: str, workers: int) -> tuple[gpd.GeoDataFrame, dict]:
    scene, truth, crowns, transform = case
    setup = RefineSetup(
        params=RefineParams(method=method),
        everything=AMG,
        loop=WindowLoopParams(workers=workers),
        progress=False,
    )
    if method == "box":
        return refine_crowns(
            crowns, str(scene.ortho), setup, predictor=KnownAnswerPredictor(truth, transform)
        )
    gen = KnownAnswerGenerator(truth, transform, AMG)
    return refine_crowns(crowns, str(scene.ortho), setup, generator=gen)


def assert_same_crowns(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a.drop(columns=a.geometry.name), b.drop(columns=b.geometry.name))
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0.0).all()


@pytest.mark.parametrize("method", ["box", "sessrs"])
def test_refined_crowns_do_not_depend_on_workers(case, method: str) -> None:
    seq, s0 = refine(case, method, 0)
    par, s2 = refine(case, method, 2)
    assert s0["window_loop"] == {"workers": 0} and s2["window_loop"] == {"workers": 2}
    if method == "box":
        assert s2["box"]["windows"] == 4
        assert seq["refined_by"].eq("sam2").mean() > 0.9
    else:
        assert s2["sessrs"]["sam_objects"]["tiles"] > 4
        assert seq["refined_by"].eq("sam_objects").mean() > 0.5
    assert_same_crowns(seq, par)


def test_the_comparison_sees_one_moved_crown(case) -> None:
    """The check above is not vacuous: one vertex moved by a pixel fails it."""
    seq, _ = refine(case, "box", 0)
    moved = seq.copy()
    g = moved.geometry.values[0]
    moved.loc[0, moved.geometry.name] = shapely.affinity.translate(g, xoff=abs(case[3].a))
    with pytest.raises(AssertionError):
        assert_same_crowns(seq, moved)
