"""Block processing: cores tile the raster once, windowed reads, blocks give the whole-raster crowns."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from crownsam.chm.blocks import COLUMNS, GDAL_CACHE_MB, plan_blocks, segment_chm
from crownsam.chm.segment import ChmParams


@settings(max_examples=50, deadline=None)
@given(
    height=st.integers(1, 700),
    width=st.integers(1, 700),
    block=st.integers(64, 300),
    frac=st.floats(0.0, 0.5),
)
def test_cores_cover_the_raster_once_and_windows_fit_the_block(
    height: int, width: int, block: int, frac: float
) -> None:
    overlap = int(frac * block)
    blocks = plan_blocks(height, width, block, overlap)
    count = np.zeros((height, width), dtype=np.int32)
    for b in blocks:
        count[b.r0 : b.r1, b.c0 : b.c1] += 1
        r0, r1, c0, c1 = b.window(overlap // 2, height, width)
        assert r1 - r0 <= block and c1 - c0 <= block
        assert r0 <= b.r0 and c0 <= b.c0 and r1 >= b.r1 and c1 >= b.c1
    assert (count == 1).all()


def assert_same_crowns(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    assert len(a) == len(b) > 0
    for col in COLUMNS:
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy(), err_msg=col)
    assert np.all(shapely.equals(a.geometry.values, b.geometry.values))


@pytest.fixture(scope="module")
def whole(chm_path: Path) -> tuple[gpd.GeoDataFrame, dict]:
    return segment_chm(chm_path)


@pytest.mark.parametrize(
    ("block", "overlap", "params"),
    [
        (128, 48, ChmParams()),
        (100, 40, ChmParams()),  # cores of uneven size
        (128, 48, ChmParams(min_distance=3.0, smooth=0.5)),
    ],
)
def test_blocks_give_the_whole_raster_crowns(
    chm_path: Path, whole: tuple[gpd.GeoDataFrame, dict], block: int, overlap: int, params: ChmParams
) -> None:
    ref = whole[0] if params == ChmParams() else segment_chm(chm_path, params=params)[0]
    assert whole[1]["blocks"] == 1
    got, summary = segment_chm(chm_path, params=params, block=block, overlap=overlap)
    assert summary["blocks"] > 4 and summary["blocks_with_cut_crowns"] == 0
    assert_same_crowns(got, ref)


def test_blocks_read_windows_never_the_whole_raster(
    chm_path: Path, whole: tuple[gpd.GeoDataFrame, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):  # records what is read, then reads it
        w = kwargs.get("window")
        seen.append((int(w.height), int(w.width)) if w is not None else (self.height, self.width))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    got, summary = segment_chm(chm_path, block=128, overlap=48)
    assert summary["blocks"] == 16  # ceil(256 / (128 - 48)) = 4 cores per axis
    # one read per block plus one per regrowth (a larger margin), and only those exceed the block size
    assert len(seen) == summary["blocks"] + summary["regrowths"]
    assert sum(max(s) > 128 for s in seen) <= summary["regrowths"]
    assert (summary["height"], summary["width"]) not in seen
    assert_same_crowns(got, whole[0])


def test_blocks_are_read_with_a_64_mib_block_cache(
    chm_path: Path, whole: tuple[gpd.GeoDataFrame, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GDAL_CACHE_MB means MiB (``rasterio.Env(GDAL_CACHEMAX=64)`` made it a 64-byte cache), and the
    size before is restored after."""
    from rasterio._env import get_gdal_config

    before = int(get_gdal_config("GDAL_CACHEMAX"))
    sizes: list[int] = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):  # records the cache size at each read, then reads
        sizes.append(int(get_gdal_config("GDAL_CACHEMAX")))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    got, summary = segment_chm(chm_path, block=128, overlap=48)
    assert len(sizes) >= summary["blocks"] and set(sizes) == {min(before, GDAL_CACHE_MB * 2**20)}
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before
    assert_same_crowns(got, whole[0])


def test_ids_are_in_raster_order_of_treetops(whole: tuple[gpd.GeoDataFrame, dict]) -> None:
    g = whole[0]
    assert g["segment_id"].tolist() == list(range(1, len(g) + 1))
    key = list(zip(-g["treetop_y"].to_numpy(), g["treetop_x"].to_numpy(), strict=True))
    assert key == sorted(key)


def test_deterministic(chm_path: Path, whole: tuple[gpd.GeoDataFrame, dict]) -> None:
    again, _ = segment_chm(chm_path)
    assert_same_crowns(again, whole[0])
    for ga, gb in zip(again.geometry, whole[0].geometry, strict=True):
        assert ga.wkb == gb.wkb  # same vertices in the same order, not just the same shape
