"""segment-everything's tile loop as a window pipeline (``--workers``) stores the tiles of the sequential
loop: the same parts, strips and rows, tile for tile (known-answer model, real AMG and seam code)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
import shapely
from everything_helpers import PARAMS, SEED, SIZE, objects_for

from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.everything.api import EverythingRequest, prepare
from crownsam.everything.known_answer import KnownAnswerGenerator
from crownsam.everything.run import segment_tiles
from crownsam.everything.store import TileStore, run_key
from crownsam.synthetic import generate_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("scene"), size=SIZE, seed=SEED)


def tiles_of(scene, d: Path, loop: WindowLoopParams) -> list:
    import geopandas as gpd

    objects, _ = objects_for(scene, gpd.read_file(scene.truth))
    with rasterio.open(scene.ortho) as src:
        gen = KnownAnswerGenerator(objects, src.transform, PARAMS)
    prep = prepare(EverythingRequest(ortho=str(scene.ortho), out=str(d / "masks.gpkg"), params=PARAMS))
    store = TileStore(str(d / "parts"), run_key(prep.info, prep.stretch, PARAMS, gen.name, None, False))
    run = segment_tiles(prep.ortho, prep.grid, prep.tiles, gen, PARAMS, prep.stretch, store, loop=loop)
    assert run.processed == len(prep.tiles) > 1
    return [store.get(t.key) for t in prep.tiles]


def test_pipeline_tiles_equal_the_sequential_loop(scene, tmp_path) -> None:
    seq = tiles_of(scene, tmp_path / "seq", WindowLoopParams(workers=0))
    piped = tiles_of(scene, tmp_path / "w2", WindowLoopParams(workers=2))
    assert sum(len(t.rows) for t in seq) > 10
    for a, b in zip(seq, piped, strict=True):
        assert a.key == b.key
        assert a.rows == b.rows  # attributes and seam strips (WKB)
        assert (a.passes, a.stop, a.valid_px, a.covered_px, a.dropped) == (
            b.passes,
            b.stop,
            b.valid_px,
            b.covered_px,
            b.dropped,
        )
        assert len(a.geoms) == len(b.geoms)
        assert all(shapely.equals_exact(g, h, tolerance=0) for g, h in zip(a.geoms, b.geoms, strict=True))


class SeesTheBlockCache(KnownAnswerGenerator):
    """The known-answer generator, recording GDAL's block cache size (bytes) as each tile starts."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cache: set[int] = set()

    def start_tile(self, tile) -> None:
        from rasterio._env import get_gdal_config

        self.cache.add(int(get_gdal_config("GDAL_CACHEMAX")))
        super().start_tile(tile)


def test_the_block_cache_holds_a_row_of_tiles_during_the_loop(scene, tmp_path) -> None:
    """While the tiles are read, GDAL's block cache is what one row of read windows (tile and padding)
    needs, not GDAL's default; the size before comes back after."""
    import geopandas as gpd
    from rasterio._env import get_gdal_config

    from crownsam.common.raster import window_rows_cache_mib

    before = int(get_gdal_config("GDAL_CACHEMAX"))
    objects, _ = objects_for(scene, gpd.read_file(scene.truth))
    with rasterio.open(scene.ortho) as src:
        gen = SeesTheBlockCache(objects, src.transform, PARAMS)
        prep = prepare(EverythingRequest(ortho=str(scene.ortho), out=str(tmp_path / "m.gpkg"), params=PARAMS))
        want = int(window_rows_cache_mib(src, prep.grid.tile + 2 * prep.grid.padding) * 2**20)
    store = TileStore(
        str(tmp_path / "parts"), run_key(prep.info, prep.stretch, PARAMS, gen.name, None, False)
    )
    segment_tiles(
        prep.ortho, prep.grid, prep.tiles, gen, PARAMS, prep.stretch, store, loop=WindowLoopParams(workers=2)
    )
    assert gen.cache == {want} and 0 < want < before
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before
