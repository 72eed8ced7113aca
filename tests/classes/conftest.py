"""Shared test data for the pseudo-classes tests: synthetic scenes whose true crowns carry a species."""

from __future__ import annotations

import pytest

from crownsam.synthetic import ScenePaths, generate_scene

SPECIES_SIZE = 1536  # ~120 visible crowns of spruce, pine and birch
SPECIES_SEED = 12  # options were chosen on seeds 0-9 (benchmarks/bench_classes.py); this seed tests them


@pytest.fixture(scope="session")
def species_scene(tmp_path_factory: pytest.TempPathFactory) -> ScenePaths:
    return generate_scene(tmp_path_factory.mktemp("classes_species"), size=SPECIES_SIZE, seed=SPECIES_SEED)


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> ScenePaths:
    """512 px (one SAM2 window), about a dozen crowns."""
    return generate_scene(tmp_path_factory.mktemp("classes_small"), size=512, seed=1)
