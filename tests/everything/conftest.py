"""Fixtures of the segment-everything tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from everything_helpers import KnownRun, build_known_run


@pytest.fixture(scope="session")
def known_run(tmp_path_factory: pytest.TempPathFactory) -> KnownRun:
    """One known-answer run over the synthetic scene, shared by the tests that read it."""
    return build_known_run(tmp_path_factory.mktemp("everything-known"))


@pytest.fixture(scope="session")
def pseudolabels(known_run: KnownRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pseudolabels of the scene's coarse segments from the known-answer box predictor (the true crown
    that best matches each segment's box): the labels that add-missed completes."""
    import rasterio

    from crownsam.pseudolabel.api import PseudolabelRequest, run_pseudolabel
    from crownsam.pseudolabel.predictor import KnownAnswerPredictor

    out = tmp_path_factory.mktemp("everything-pseudo") / "pseudo.gpkg"
    with rasterio.open(known_run.scene.ortho) as src:
        predictor = KnownAnswerPredictor(known_run.truth, src.transform)
    req = PseudolabelRequest(
        ortho=str(known_run.scene.ortho), segments=str(known_run.scene.coarse), out=str(out), progress=False
    )
    run_pseudolabel(req, predictor=predictor)
    return out
