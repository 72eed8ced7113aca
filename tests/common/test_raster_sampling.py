"""The scene-wide stretch's sample (GDAL's nearest-neighbour decimation, read by rows of blocks) and the
GDAL block cache settings."""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from helpers import write_array
from rasterio._env import get_gdal_config, set_gdal_config
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from crownsam.common import raster
from crownsam.common.raster import (
    block_rows_mib,
    compute_stretch,
    gdal_cache,
    nearest_samples,
    sample_cache_mib,
    sample_chunk,
    sampled_valid_values,
    strip_order,
    window_rows_cache_mib,
    window_strips,
)


def _gdal_rows(n: int, out: int) -> np.ndarray:
    """The rows GDAL's own decimated read takes: a one-column raster whose values are the row numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not georeferenced
        with MemoryFile() as mf:
            with mf.open(driver="GTiff", width=1, height=n, count=1, dtype="uint16") as dst:
                dst.write(np.arange(n, dtype=np.uint16)[None, :, None])
            with mf.open() as src:
                return src.read(1, out_shape=(out, 1), resampling=Resampling.nearest)[:, 0].astype(np.int64)


def test_nearest_samples_are_the_pixels_gdal_decimation_reads() -> None:
    rng = np.random.default_rng(0)
    cases = [(472, 97), (1344, 1043), (1794, 1133), (5, 5), (7, 1), (4096, 4000)]
    cases += [(int(n), int(rng.integers(1, n + 1))) for n in rng.integers(1, 5000, 60)]
    for n, out in cases:
        np.testing.assert_array_equal(nearest_samples(n, out), _gdal_rows(n, out), err_msg=f"{n} -> {out}")
    # the check catches the textbook rule, which float rounding sends one row up: 48.5 x 472 / 97 = 236
    plain = np.floor((np.arange(97) + 0.5) * (472 / 97)).astype(np.int64)
    assert not np.array_equal(plain, _gdal_rows(472, 97))


def _gdal_sample(path: str, bands: tuple[int, ...], shape: tuple[int, int]) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        data = src.read(
            list(bands), out_shape=(len(bands), *shape), masked=True, resampling=Resampling.nearest
        )
    return [np.ma.asarray(data[i]).compressed() for i in range(len(bands))]


RASTERS = {
    "uint16 nodata, tiled": dict(
        dtype="uint16", nodata=0, extra=dict(tiled=True, blockxsize=32, blockysize=16)
    ),
    "int16 nodata, band interleave": dict(
        dtype="int16", nodata=-9999, extra=dict(tiled=True, blockxsize=64, blockysize=64, interleave="band")
    ),
    "float32 nodata, striped": dict(dtype="float32", nodata=-1.0, extra=dict(blockysize=3)),
    "float32 nan nodata": dict(
        dtype="float32", nodata=float("nan"), extra=dict(tiled=True, blockxsize=16, blockysize=16)
    ),
    "uint8 no nodata": dict(dtype="uint8", nodata=None, extra=dict(tiled=True, blockxsize=16, blockysize=32)),
    "uint8 internal mask": dict(
        dtype="uint8", nodata=None, mask=True, extra=dict(tiled=True, blockxsize=16, blockysize=16)
    ),
}


@pytest.mark.parametrize("chunk_mib", [raster.SAMPLE_CHUNK_MIB, 0])
@pytest.mark.parametrize("kind", list(RASTERS))
def test_sample_is_gdals_decimated_read(
    tmp_path: Path, kind: str, chunk_mib: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of blocks sampled at GDAL's pixels give exactly the valid values (and their order) of GDAL's
    own decimated masked read, for every kind of validity: nodata (integer, float, NaN), none, a mask;
    whether a row of blocks is read in one chunk (these rasters are small) or one block at a time."""
    monkeypatch.setattr(raster, "SAMPLE_CHUNK_MIB", chunk_mib)
    spec = RASTERS[kind]
    rng = np.random.default_rng(3)
    data = (rng.random((4, 301, 257)) * 200).astype(spec["dtype"])
    nodata = spec["nodata"]
    mask = None
    if nodata is not None:
        data[:, 40:90, 30:200] = nodata
        data[2, 150:160, :] = nodata  # one band's own holes
    if spec.get("mask"):
        mask = np.full(data.shape[1:], 255, dtype=np.uint8)
        mask[100:180, 50:120] = 0
    path = write_array(tmp_path / "r.tif", data, nodata, mask, **spec["extra"])
    for shape in [(37, 41), (150, 256), (301, 257), (1, 1)]:
        with rasterio.open(path) as src:
            got = sampled_valid_values(src, (3, 2, 1), shape)
        want = _gdal_sample(path, (3, 2, 1), shape)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w, err_msg=f"{kind} {shape}")
        if nodata is not None or mask is not None:
            assert want[0].size < shape[0] * shape[1] or shape == (1, 1)


def test_stretch_of_a_large_raster_is_that_of_gdals_sample(tmp_path: Path) -> None:
    """A raster over ``max_pixels`` is sampled; the stretch is that of GDAL's decimated read, and with
    overviews (which GDAL reads instead) it is GDAL's read."""
    rng = np.random.default_rng(4)
    data = rng.integers(1, 4000, (3, 700, 900), dtype=np.uint16)
    data[:, :50] = 0
    path = write_array(tmp_path / "big.tif", data, 0, tiled=True, blockxsize=128, blockysize=128)
    max_pixels = 50_000
    factor = math.sqrt(700 * 900 / max_pixels)
    shape = (round(700 / factor), round(900 / factor))

    def stretch_of(values: list[np.ndarray]) -> list[tuple[float, float]]:
        return [tuple(float(v) for v in np.percentile(x.astype(np.float64), (2.0, 98.0))) for x in values]

    assert compute_stretch(path, (1, 2, 3), max_pixels=max_pixels) == stretch_of(
        _gdal_sample(path, (1, 2, 3), shape)
    )
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4], Resampling.average)
    with_overviews = compute_stretch(path, (1, 2, 3), max_pixels=max_pixels)
    assert with_overviews == stretch_of(_gdal_sample(path, (1, 2, 3), shape))
    assert with_overviews != stretch_of(_gdal_sample(str(tmp_path / "big.tif"), (1, 2, 3), (700, 900)))


def test_stretch_of_a_vrt_is_gdals_read(tmp_path: Path) -> None:
    """A VRT's own decimated read picks other pixels near the edges of its sources than the rule
    (checked here), so a VRT is read by GDAL."""
    rng = np.random.default_rng(5)
    parts = []
    for i, w in enumerate((333, 290)):
        parts.append(
            write_array(tmp_path / f"v{i}.tif", rng.integers(1, 4000, (3, 401, w), dtype=np.uint16), 0)
        )

    def source(path: str, w: int, x: int, b: int) -> str:
        return (
            f'<SimpleSource><SourceFilename relativeToVRT="0">{path}</SourceFilename>'
            f'<SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="401"/>'
            f'<DstRect xOff="{x}" yOff="0" xSize="{w}" ySize="401"/></SimpleSource>'
        )

    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}"><NoDataValue>0</NoDataValue>'
        f"{source(parts[0], 333, 0, b)}{source(parts[1], 290, 333, b)}</VRTRasterBand>"
        for b in (1, 2, 3)
    )
    vrt = tmp_path / "m.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="623" rasterYSize="401">{bands}</VRTDataset>')
    max_pixels = 100_000  # (254, 394): this sample differs from the VRT's
    factor = math.sqrt(623 * 401 / max_pixels)
    shape = (round(401 / factor), round(623 / factor))
    want = _gdal_sample(str(vrt), (1, 2, 3), shape)
    with rasterio.open(vrt) as src:
        assert any(
            not np.array_equal(a, b)
            for a, b in zip(sampled_valid_values(src, (1, 2, 3), shape), want, strict=True)
        )
    got = compute_stretch(str(vrt), (1, 2, 3), max_pixels=max_pixels)
    assert got == [tuple(float(v) for v in np.percentile(x.astype(np.float64), (2.0, 98.0))) for x in want]


def test_gdal_cache_is_in_mib_capped_and_restored() -> None:
    before = int(get_gdal_config("GDAL_CACHEMAX"))
    with rasterio.Env():  # restored inside another environment too (rasterio's nested Env does not)
        with gdal_cache(64):
            assert int(get_gdal_config("GDAL_CACHEMAX")) == 64 * 2**20
            with gdal_cache(10**9):  # never more than what is already set
                assert int(get_gdal_config("GDAL_CACHEMAX")) == 64 * 2**20
            assert int(get_gdal_config("GDAL_CACHEMAX")) == 64 * 2**20
        assert int(get_gdal_config("GDAL_CACHEMAX")) == before
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before
    try:
        with rasterio.Env(GDAL_CACHEMAX=64):  # the trap gdal_cache avoids: rasterio's integer is bytes
            assert int(get_gdal_config("GDAL_CACHEMAX")) == 64
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def test_block_rows_cover_every_band_of_the_rows(tmp_path: Path) -> None:
    data = np.zeros((3, 600, 1000), dtype=np.uint16)
    path = write_array(tmp_path / "b.tif", data, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path) as src:
        # 300 rows: 2 rows of blocks, plus one; 4 blocks across; 3 bands of 2 bytes
        assert block_rows_mib(src, 300) == 3 * 256 * 4 * 256 * 3 * 2 / 2**20
        assert block_rows_mib(src, 256) == 2 * 256 * 4 * 256 * 3 * 2 / 2**20


def test_sample_chunks_do_not_grow_with_the_width(tmp_path: Path) -> None:
    """The stretch's sample reads chunks of whole blocks of about SAMPLE_CHUNK_MIB, with a cache of two:
    the same on a raster ten times as wide (a whole row of blocks would be 10x the memory)."""
    sizes = []
    for width in (4096, 40960):
        path = write_array(
            tmp_path / f"w{width}.tif",
            np.zeros((6, 1, width), dtype=np.uint16),
            tiled=True,
            blockxsize=256,
            blockysize=256,
        )
        with rasterio.open(path) as src:
            rows, columns = sample_chunk(src)
            assert (rows, columns) == (256, min(width, 42 * 256))  # 42 blocks of 0.75 MiB: 31.5 MiB
            sizes.append(sample_cache_mib(src))
            assert block_rows_mib(src, 256) == 2 * 256 * width * 12 / 2**20
    assert sizes == [2 * 256 * 4096 * 12 / 2**20, 2 * 256 * (42 * 256) * 12 / 2**20]


def _decoded(blocks: int, windows: list[tuple[int, int]], window: int, block: int) -> tuple[int, int]:
    """(blocks decoded, distinct blocks) for windows read in this order through an LRU cache of ``blocks``
    blocks (GDAL's block cache), each window's blocks in row-major order."""
    from collections import OrderedDict

    cache: OrderedDict[tuple[int, int], None] = OrderedDict()
    decoded, seen = 0, set()
    for r, c in windows:
        for br in range(r // block, (r + window - 1) // block + 1):
            for bc in range(c // block, (c + window - 1) // block + 1):
                seen.add((br, bc))
                if (br, bc) in cache:
                    cache.move_to_end((br, bc))
                    continue
                decoded += 1
                cache[(br, bc)] = None
                if len(cache) > blocks:
                    cache.popitem(last=False)
    return decoded, len(seen)


def test_window_rows_cache_decodes_each_block_once(tmp_path: Path) -> None:
    """A pass over overlapping windows, row by row (the window loops' order), through a block cache of
    :func:`window_rows_cache_mib` decodes every block once (an LRU cache like GDAL's, simulated); two rows
    of blocks less decode some twice, so the size is not just generous (it leaves one row to spare)."""
    width, height, window, stride, block = 5000, 3000, 1024, 585, 256
    data = np.zeros((2, height, width), dtype=np.uint16)
    path = write_array(
        tmp_path / "w.tif", data, tiled=True, blockxsize=block, blockysize=block, compress="deflate"
    )
    with rasterio.open(path) as src:
        mib = window_rows_cache_mib(src, window)
    blocks = int(mib * 2**20) // (block * block * 2 * 2)
    across = -(-width // block)

    def offsets(n: int) -> list[int]:
        return sorted({min(o, n - window) for o in range(0, n - window + stride, stride)})

    windows = [(r, c) for r in offsets(height) for c in offsets(width)]
    decoded, distinct = _decoded(blocks, windows, window, block)
    assert decoded == distinct == across * -(-height // block)
    assert _decoded(blocks - 2 * across, windows, window, block)[0] > distinct


def test_window_strips_bound_the_cache_and_decode_little_twice(tmp_path: Path) -> None:
    """A raster too wide for the budget is read in even strips of windows, each row by row
    (:func:`strip_order`), with a cache that fits the budget: every block is decoded at most once per
    strip it lies in (the simulated LRU cache), so only blocks where strips overlap can be decoded twice.
    Row by row across the whole width with that cache decodes the overlap of every two rows of windows
    twice."""
    width, height, window, stride, block = 9000, 2100, 1024, 512, 256
    data = np.zeros((2, height, width), dtype=np.uint16)
    path = write_array(
        tmp_path / "w.tif", data, tiled=True, blockxsize=block, blockysize=block, compress="deflate"
    )
    block_mib = block * block * 2 * 2 / 2**20
    with rasterio.open(path) as src:
        whole = window_rows_cache_mib(src, window)
        assert window_strips(src, window, stride, budget_mib=whole) == (width, whole)  # fits: one strip
        strip, mib = window_strips(src, window, stride, budget_mib=whole / 2)
    assert mib <= whole / 2 and strip % stride == 0
    cols = sorted({min(o, width - window) for o in range(0, width - window + stride, stride)})
    rows = sorted({min(o, height - window) for o in range(0, height - window + stride, stride)})
    per_strip = [sum(1 for c in cols if c // strip == k) for k in range(cols[-1] // strip + 1)]
    assert per_strip == [6, 6, 5]  # 17 columns; 7 in a strip would not fit
    offsets = [(r, c) for r in rows for c in cols]
    windows = [offsets[i] for i in strip_order(offsets, strip)]
    blocks = int(mib / block_mib)
    decoded, distinct = _decoded(blocks, windows, window, block)
    # blocks in two strips: the columns of blocks where one strip's last windows overlap the next one's
    spans = [
        {b for c in cols if c // strip == k for b in range(c // block, (c + window - 1) // block + 1)}
        for k in range(len(per_strip))
    ]
    shared = sum(len(a & b) for a, b in itertools.pairwise(spans)) * -(-height // block)
    assert distinct < decoded <= distinct + shared < 1.15 * distinct
    striped = write_array(tmp_path / "s.tif", data, blockysize=16)  # strips of the width gain nothing
    with rasterio.open(striped) as src:
        whole = window_rows_cache_mib(src, window)
        assert window_strips(src, window, stride, budget_mib=whole / 2) == (width, whole)
    assert _decoded(blocks, offsets, window, block)[0] > 1.3 * distinct  # row-major order, same cache


def test_strip_order_goes_down_each_strip_then_right() -> None:
    """Windows of a 3 x 5 grid (stride 10, the last column at the edge, offset 37) in strips of two
    columns of offsets: each strip row by row; a strip spanning every offset is plain row-major order."""
    cols = [0, 10, 20, 30, 37]
    offsets = [(r, c) for r in (0, 10, 20) for c in cols]
    got = [offsets[i] for i in strip_order(offsets, 20)]
    assert got == [(r, c) for s in ([0, 10], [20, 30, 37]) for r in (0, 10, 20) for c in s]
    assert strip_order(offsets, 38) == list(range(15))  # every offset in one strip
    shuffled = offsets[::-1]
    assert [shuffled[i] for i in strip_order(shuffled, 1000)] == offsets


def test_a_corrupt_raster_gives_the_same_error_every_time(tmp_path: Path) -> None:
    """GDAL's decoding threads meet the corrupt blocks of a truncated file in any order; the error is
    always that of the first one in raster order (the message names its offset), as one thread reads."""
    from rasterio.windows import Window

    from crownsam.common.errors import InputError
    from crownsam.common.raster import open_raster, read_band_window

    rng = np.random.default_rng(6)
    data = rng.integers(1, 4000, (3, 512, 512), dtype=np.uint16)
    path = Path(
        write_array(tmp_path / "t.tif", data, 0, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    )
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # the second half of the blocks is gone
    with rasterio.open(path) as one:
        try:
            one.read([1, 2, 3])
        except rasterio.errors.RasterioIOError as exc:
            first = str(exc.__cause__ or exc).splitlines()[0]
    stretch_errors, window_errors = set(), set()
    for _ in range(8):
        with pytest.raises(InputError) as err:
            compute_stretch(str(path), (1, 2, 3), max_pixels=100_000)
        stretch_errors.add(str(err.value))
        with open_raster(path, threads=4) as src, pytest.raises(InputError) as err:
            read_band_window(src, Window(0, 0, 512, 512), (1, 2, 3), [(0.0, 1.0)] * 3)
        window_errors.add(str(err.value))
    assert len(stretch_errors) == 1 and len(window_errors) == 1
    assert first in stretch_errors.pop() and first in window_errors.pop()
