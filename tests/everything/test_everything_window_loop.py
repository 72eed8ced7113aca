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
from crownsam.everything.params import EverythingParams
from crownsam.everything.run import segment_tiles
from crownsam.everything.store import TileStore, run_key
from crownsam.synthetic import generate_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("scene"), size=SIZE, seed=SEED)


def generator(
    scene, kind: type[KnownAnswerGenerator] = KnownAnswerGenerator, params: EverythingParams = PARAMS
) -> KnownAnswerGenerator:
    import geopandas as gpd

    objects, _ = objects_for(scene, gpd.read_file(scene.truth))
    with rasterio.open(scene.ortho) as src:
        return kind(objects, src.transform, params)


def tiles_of(
    scene,
    d: Path,
    loop: WindowLoopParams,
    gen: KnownAnswerGenerator | None = None,
    params: EverythingParams = PARAMS,
) -> list:
    gen = gen or generator(scene, params=params)
    prep = prepare(EverythingRequest(ortho=str(scene.ortho), out=str(d / "masks.gpkg"), params=params))
    store = TileStore(str(d / "parts"), run_key(prep.info, prep.stretch, params, gen.name, None, False))
    run = segment_tiles(prep.ortho, prep.grid, prep.tiles, gen, params, prep.stretch, store, loop=loop)
    assert run.processed == len(prep.tiles) > 1
    assert [t["key"] for t in run.tiles] == [t.key for t in prep.tiles]  # summaries in the tiles' order
    return [store.get(t.key) for t in prep.tiles]


def assert_same_tiles(seq: list, piped: list) -> None:
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


def test_pipeline_tiles_equal_the_sequential_loop(scene, tmp_path) -> None:
    seq = tiles_of(scene, tmp_path / "seq", WindowLoopParams(workers=0))
    assert_same_tiles(seq, tiles_of(scene, tmp_path / "w2", WindowLoopParams(workers=2)))


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


def test_a_raster_too_wide_for_the_cache_is_read_in_strips(scene, tmp_path, monkeypatch) -> None:
    """With a cache budget below one row of read windows across the scene, tiles are read in strips, with
    the strips' cache; every tile stores what row-major order stores (6 x 6 tiles of 256 px: strips of
    fewer blocks than the scene's 6 across)."""
    from dataclasses import replace

    from crownsam.common import raster
    from crownsam.common.raster import window_rows_cache_mib, window_strips

    small = replace(PARAMS, tile=256, padding=32)
    loop = WindowLoopParams(workers=2)
    rows = tiles_of(scene, tmp_path / "rows", loop, params=small)
    prep = prepare(EverythingRequest(ortho=str(scene.ortho), out=str(tmp_path / "m.gpkg"), params=small))
    read = prep.grid.tile + 2 * prep.grid.padding
    with rasterio.open(scene.ortho) as src:
        monkeypatch.setattr(raster, "WINDOW_CACHE_MIB", window_rows_cache_mib(src, read) * 0.6)
        strip, mib = window_strips(src, read, prep.grid.tile)
        assert strip < src.width
    gen = generator(scene, SeesTheBlockCache, small)
    strips = tiles_of(scene, tmp_path / "strips", loop, gen, small)
    assert isinstance(gen, SeesTheBlockCache) and gen.cache == {int(mib * 2**20)}
    assert_same_tiles(rows, strips)
