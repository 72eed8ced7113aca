"""Raster access by windows: opening with clear errors, band checks, a scene-wide stretch, RGB windows."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from crownsam.common.errors import InputError

Stretch = list[tuple[float, float]]
T = TypeVar("T")


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know about a raster, without its pixels."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    descriptions: tuple[str | None, ...]

    @property
    def affine(self) -> rasterio.Affine:
        return rasterio.Affine(*self.transform)


def open_raster(path: str | Path, *, threads: int | None = None) -> rasterio.io.DatasetReader:
    """Open a raster for reading or raise InputError naming the file and the problem. ``threads``: GDAL
    decodes the tiles of one read in that many threads (GeoTIFF's ``NUM_THREADS`` open option)."""
    p = Path(path)
    if not p.exists():
        raise InputError(path, "raster not found")
    if p.is_dir():
        raise InputError(path, "is a folder, expected a raster file")
    try:
        return rasterio.open(p, **({"NUM_THREADS": str(threads)} if threads and threads > 1 else {}))
    except RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"not a readable raster ({first})") from exc


def read_error(path: str | Path, exc: RasterioIOError) -> InputError:
    """InputError for pixels that cannot be read (truncated or corrupt file), with GDAL's own reason."""
    cause = exc.__cause__ or exc  # rasterio's "Read failed. See previous exception" wraps GDAL's message
    first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return InputError(path, f"cannot read pixels; truncated or corrupt raster? ({first})")


def crs_string(crs: rasterio.crs.CRS) -> str:
    """``EPSG:NNNN`` when the CRS has a code (portable between GDAL's and pyproj's PROJ), else WKT."""
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.to_wkt()


def raster_info(path: str | Path) -> RasterInfo:
    """Read a raster's metadata (no pixels)."""
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(path, "raster has no CRS; georeference it first")
        return RasterInfo(
            path=str(path),
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=src.dtypes[0],
            crs=crs_string(src.crs),
            transform=tuple(src.transform)[:6],
            nodata=src.nodata,
            descriptions=tuple(src.descriptions),
        )


def parse_bands(text: str | Sequence[int]) -> tuple[int, ...]:
    """Parse ``"3,2,1"`` (1-based band indices) into a tuple; raise ValueError on junk."""
    if isinstance(text, str):
        parts = [t.strip() for t in text.split(",") if t.strip()]
        try:
            bands = tuple(int(t) for t in parts)
        except ValueError as exc:
            raise ValueError(f"band list {text!r} must be comma-separated integers such as 3,2,1") from exc
    else:
        bands = tuple(int(b) for b in text)
    if not bands:
        raise ValueError("band list is empty")
    return bands


def check_rgb_bands(info: RasterInfo, bands: Sequence[int]) -> tuple[int, int, int]:
    """Validate three 1-based band indices against the raster; raise InputError otherwise."""
    if info.count < 3:
        raise InputError(info.path, f"has {info.count} band(s); an RGB rendering for SAM2 needs at least 3")
    if len(bands) != 3:
        raise InputError(info.path, f"--rgb-bands needs exactly 3 band indices, got {len(bands)}")
    for b in bands:
        if not 1 <= b <= info.count:
            raise InputError(info.path, f"band {b} out of range: the raster has bands 1..{info.count}")
    return (int(bands[0]), int(bands[1]), int(bands[2]))


# GDAL's nearest-neighbour decimation reads source pixel floor((i + 0.5) x n / out + EPS) for output pixel i
_GDAL_NEAREST_EPS = 1e-10


@contextlib.contextmanager
def gdal_cache(mib: float) -> Iterator[None]:
    """Within: GDAL's block cache holds ``mib`` MiB, or the size already set if that is smaller (GDAL's
    default: 5 % of the RAM); the size before is restored after. The cache is process-wide: one such
    context at a time per process. (``rasterio.Env(GDAL_CACHEMAX=64)`` is a trap: rasterio hands an
    integer to ``GDALSetCacheMax64``, in bytes, and a nested Env does not restore it.)"""
    from rasterio._env import get_gdal_config, set_gdal_config

    before = int(get_gdal_config("GDAL_CACHEMAX"))
    set_gdal_config("GDAL_CACHEMAX", max(1, min(before, int(mib * 2**20))))
    try:
        yield
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def pixel_bytes(src: rasterio.io.DatasetReader) -> int:
    """Bytes of one pixel of every band in GDAL's block cache (all bands at the widest band's type: a
    pixel-interleaved file caches every band of a block it reads)."""
    return src.count * max(np.dtype(dt).itemsize for dt in src.dtypes)


def block_rows_mib(src: rasterio.io.DatasetReader, rows: int, columns: int | None = None) -> float:
    """MiB of GDAL blocks (all bands: a pixel-interleaved file caches every band of a block it reads) that
    cover ``rows`` raster rows across ``columns`` (None: the whole width), plus one row of blocks (and,
    for part of the width, one column: its edges need not fall on the blocks'): the cache a pass over
    rows of the raster needs so that no block is decoded twice."""
    bh, bw = src.block_shapes[0]
    blocks_down = -(-rows // bh) + 1
    blocks_across = -(-src.width // bw)
    if columns is not None:
        blocks_across = min(blocks_across, -(-columns // bw) + 1)
    return blocks_down * bh * blocks_across * bw * pixel_bytes(src) / 2**20


def window_rows_cache_mib(
    src: rasterio.io.DatasetReader, window_height: int, columns: int | None = None
) -> float:
    """The GDAL block cache a pass over windows ``window_height`` rows tall needs when they come row by row
    across ``columns`` (None: the whole width), each row of windows overlapping the next (the window
    loops): the blocks of one row of windows and one more row of blocks. No block is decoded twice, and
    the cache does not grow with the raster's height (GDAL's default, 5 % of the RAM, otherwise fills with
    blocks no window reads again); :func:`window_strips` keeps it from growing with the width."""
    return block_rows_mib(src, window_height + src.block_shapes[0][0], columns)


WINDOW_CACHE_MIB = 256
"""The most GDAL block cache a window loop takes (:func:`window_strips`): rasters wider than that allows
for one row of windows are read in vertical strips."""


def window_strips(
    src: rasterio.io.DatasetReader, window: int, stride: int, budget_mib: float | None = None
) -> tuple[int, float]:
    """(strip, cache MiB) for a loop over windows ``window`` px square whose column offsets are ``stride``
    apart (the last one may be aligned to the raster's edge): it reads them strip by strip, the windows
    with column offsets in ``[k * strip, (k + 1) * strip)`` (:func:`strip_order`),
    each strip row by row, with a block cache of one row of a strip's windows
    (:func:`window_rows_cache_mib`). One strip (plain row-major order) when the whole width fits
    ``budget_mib`` (None: :data:`WINDOW_CACHE_MIB`); else the widest strips of whole strides, as even as
    the windows allow, that fit it (one column of windows if none does; one strip if that needs no less,
    as with blocks as wide as the raster). Blocks at the strips' edges are decoded once per strip."""
    budget_mib = WINDOW_CACHE_MIB if budget_mib is None else budget_mib
    whole = window_rows_cache_mib(src, window)
    if whole <= budget_mib or src.width <= window:
        return src.width, whole
    columns = -(-(src.width - window) // stride) + 1  # columns of windows, the last one at the edge
    per = 1
    while per < columns and window_rows_cache_mib(src, window, (per + 1) * stride + window) <= budget_mib:
        per += 1
    per = -(-columns // -(-columns // per))  # as many strips, as even as whole strides make them
    strip = per * stride
    mib = window_rows_cache_mib(src, window, strip + window)
    return (strip, mib) if mib < whole else (src.width, whole)  # blocks as wide as the raster: no gain


def strip_order(offsets: Sequence[tuple[int, int]], strip: int) -> list[int]:
    """Indices of the windows at pixel ``offsets`` (row, column) in the order a window loop reads them:
    vertical strips of the windows whose column offsets lie in ``[k * strip, (k + 1) * strip)``, left to
    right, each row by row and left to right (row-major order when ``strip`` spans every offset)."""
    return sorted(range(len(offsets)), key=lambda i: (offsets[i][1] // strip, offsets[i][0], offsets[i][1]))


def reading_order(
    src: rasterio.io.DatasetReader, offsets: Sequence[tuple[int, int]], window: int, stride: int
) -> tuple[list[int], float]:
    """Indices of the windows at pixel ``offsets`` (row, column) in the order a window loop reads them
    (:func:`strip_order` of :func:`window_strips`), and the GDAL block cache (MiB) to read them with."""
    strip, mib = window_strips(src, window, stride)
    return strip_order(offsets, strip), mib


def nearest_samples(n: int, out: int) -> np.ndarray:
    """The source pixels (of ``n``) that GDAL's nearest-neighbour decimation to ``out`` pixels reads."""
    return np.minimum(((np.arange(out) + 0.5) * (n / out) + _GDAL_NEAREST_EPS).astype(np.int64), n - 1)


def _valid_sample(
    src: rasterio.io.DatasetReader,
    band: int,
    sample: np.ndarray,
    window: Window,
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray | None:
    """Which of a band's ``sample`` (its pixels ``rows`` x ``cols`` of ``window``) are valid, by GDAL's
    mask as ``read(masked=True)`` has it; None: all of them."""
    flags = src.mask_flag_enums[band - 1]
    nodata = src.nodatavals[band - 1]
    if MaskFlags.all_valid in flags:
        return None
    if flags == [MaskFlags.nodata] and nodata is not None and sample.dtype.kind in "iu":
        return sample != nodata
    return src.read_masks(band, window=window)[rows][:, cols] > 0


SAMPLE_CHUNK_MIB = 32
"""MiB of decoded blocks (all bands) the stretch's sample reads at a time: a row of blocks is read in chunks
of about this size across, so the memory of the read does not grow with the raster's width."""


def sample_chunk(src: rasterio.io.DatasetReader) -> tuple[int, int]:
    """(rows, columns) of the chunks :func:`sampled_valid_values` reads: whole rows of blocks (about 256
    rows) by as many whole blocks across (at least one, at most the width) as hold about
    :data:`SAMPLE_CHUNK_MIB` of decoded blocks of every band."""
    bh, bw = src.block_shapes[0]
    rows = bh * max(1, 256 // bh)
    block_bytes = rows * bw * pixel_bytes(src)
    blocks = min(-(-src.width // bw), max(1, int(SAMPLE_CHUNK_MIB * 2**20 // block_bytes)))
    return rows, bw * blocks


def sample_cache_mib(src: rasterio.io.DatasetReader) -> float:
    """The GDAL block cache :func:`sampled_valid_values` reads with: two of its chunks (every band), so a
    chunk's blocks stay cached until every band of them is copied."""
    rows, columns = sample_chunk(src)
    return 2 * rows * columns * pixel_bytes(src) / 2**20


def sampled_valid_values(
    src: rasterio.io.DatasetReader, bands: Sequence[int], shape: tuple[int, int]
) -> list[np.ndarray]:
    """Each band's valid pixels among those of GDAL's nearest-neighbour decimation of the raster to
    ``shape`` (rows, columns): what ``read(bands, out_shape=..., masked=True, resampling=nearest)``
    returns, compressed, in its order. Reads the raster at full resolution in chunks of whole blocks
    (:func:`sample_chunk`), row of chunks after row, and samples them: GDAL's own decimated read decodes
    every block once per band (and again for the masks), this once."""
    rows = nearest_samples(src.height, shape[0])
    cols = nearest_samples(src.width, shape[1])
    step, across = sample_chunk(src)
    parts: list[list[np.ndarray]] = [[] for _ in bands]
    for r0 in range(0, src.height, step):
        r1 = min(r0 + step, src.height)
        here = rows[(rows >= r0) & (rows < r1)] - r0
        if not here.size:
            continue
        chunks: list[np.ndarray] = []
        valids: list[list[np.ndarray | None]] = [[] for _ in bands]
        for c0 in range(0, src.width, across):
            c1 = min(c0 + across, src.width)
            there = cols[(cols >= c0) & (cols < c1)] - c0
            if not there.size:
                continue
            window = Window(c0, r0, c1 - c0, r1 - r0)
            sample = src.read(list(bands), window=window)[:, here][:, :, there]
            chunks.append(sample)
            for i, b in enumerate(bands):
                valids[i].append(_valid_sample(src, b, sample[i], window, here, there))
        row = np.concatenate(chunks, axis=2)
        for i in range(len(bands)):
            parts[i].append(
                row[i][_chunks_valid(valids[i], chunks)]
                if any(v is not None for v in valids[i])
                else row[i].ravel()
            )
    return [np.concatenate(p) if p else np.empty(0) for p in parts]


def _chunks_valid(valids: list[np.ndarray | None], chunks: list[np.ndarray]) -> np.ndarray:
    """One band's validity across a row of chunks (None: every pixel of that chunk is valid)."""
    return np.concatenate(
        [np.ones(s.shape[1:], dtype=bool) if v is None else v for v, s in zip(valids, chunks, strict=True)],
        axis=1,
    )


def in_one_thread(
    src: rasterio.io.DatasetReader, read: Callable[[rasterio.io.DatasetReader], T], exc: RasterioIOError
) -> T:
    """``read`` again on the file of ``src`` opened without GDAL's decoding threads, after ``read(src)``
    failed with ``exc``: threads decode a read's blocks in any order, so which corrupt block fails first
    (and GDAL's message) varies; in one thread it is always the first in raster order. Raises the
    :func:`read_error` of that failure (or returns, if the second read works)."""
    try:
        with rasterio.open(src.name) as one:
            return read(one)
    except RasterioIOError as again:
        raise read_error(src.name, again) from exc


def _stretch_sample(
    src: rasterio.io.DatasetReader, bands: Sequence[int], shape: tuple[int, int]
) -> list[np.ndarray]:
    """:func:`compute_stretch`'s valid values of each band."""
    # GDAL reads overviews instead of the full resolution, and a VRT's read picks its own pixels near the
    # edges of its sources: those are GDAL's decimated read (with GDAL's cache, as before)
    if src.driver != "GTiff" or any(src.overviews(b) for b in bands):
        data = src.read(
            list(bands), out_shape=(len(bands), *shape), masked=True, resampling=Resampling.nearest
        )
        return [data[i].compressed() for i in range(len(bands))]
    with gdal_cache(sample_cache_mib(src)):
        return sampled_valid_values(src, bands, shape)


def compute_stretch(
    path: str | Path,
    bands: Sequence[int],
    percentiles: tuple[float, float] = (2.0, 98.0),
    max_pixels: int = 4_000_000,
) -> Stretch:
    """Scene-wide linear stretch per band: the given percentiles of valid pixels.

    Reads a decimated version of the raster (at most ``max_pixels`` per band: GDAL's nearest-neighbour
    sample, or its overviews when present) so the whole orthophoto is never in memory. A GeoTIFF without
    overviews is read in chunks of whole blocks one after another (:func:`sampled_valid_values`), decoded
    in the task's CPUs, with a block cache of two such chunks; anything else by GDAL's decimated read.
    Computed once per scene and reused for every window, which keeps tiles seamless.
    """
    from crownsam.common.window_pipeline import task_cpus

    with open_raster(path, threads=task_cpus()) as src:
        factor = max(1.0, math.sqrt(src.width * src.height / max_pixels))
        shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
        try:
            values = _stretch_sample(src, bands, shape)
        except RasterioIOError as exc:
            values = in_one_thread(src, lambda one: _stretch_sample(one, bands, shape), exc)
    stretch: Stretch = []
    for valid, b in zip(values, bands, strict=True):
        if valid.size == 0:
            raise InputError(path, f"band {b} has no valid (non-nodata) pixels")
        lo, hi = np.percentile(valid.astype(np.float64), percentiles)
        if hi <= lo:
            hi = lo + 1.0
        stretch.append((float(lo), float(hi)))
    return stretch


def stretch_values(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The linear stretch of one band: ``clip(rint((v - lo) x 255 / (hi - lo)), 0, 255)`` as uint8,
    computed in float32."""
    scaled = (values.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def stretch_table(dtype: str, lo: float, hi: float) -> np.ndarray | None:
    """For 8- and 16-bit integer bands: :func:`stretch_values` of every value of ``dtype``, indexed by the
    value's bits read as unsigned (so ``table[band.view(unsigned)]`` is the stretch, exactly); else None."""
    dt = np.dtype(dtype)
    if dt.kind not in "iu" or dt.itemsize > 2:
        return None
    unsigned = np.dtype(f"u{dt.itemsize}")
    values = np.arange(2 ** (8 * dt.itemsize), dtype=np.int64).astype(unsigned).view(dt)
    return stretch_values(values, lo, hi)


def stretch_planes(data: np.ndarray, stretch: Stretch, valid: np.ndarray | None = None) -> np.ndarray:
    """Map (bands, H, W) data to uint8 (bands, H, W) with a per-band linear stretch
    (:func:`stretch_values`); invalid pixels -> 0. 8- and 16-bit integer bands go through a lookup table
    of the same values (:func:`stretch_table`)."""
    out = np.empty(data.shape, dtype=np.uint8)
    for i, (lo, hi) in enumerate(stretch):
        table = stretch_table(data.dtype.str, float(lo), float(hi))
        if table is None:
            out[i] = stretch_values(data[i], lo, hi)
        else:
            np.take(table, data[i].view(f"u{data.dtype.itemsize}"), out=out[i])
    if valid is not None:
        np.multiply(out, valid, out=out)
    return out


def apply_stretch(data: np.ndarray, stretch: Stretch, valid: np.ndarray | None = None) -> np.ndarray:
    """Map (bands, H, W) data to uint8 (H, W, bands), contiguous, with :func:`stretch_planes`."""
    return np.ascontiguousarray(stretch_planes(data, stretch, valid).transpose(1, 2, 0))


def nodata_is_the_mask(src: rasterio.io.DatasetReader, band: int) -> bool:
    """Whether GDAL's validity mask of an integer ``band`` is just "not the nodata value" (so it can be
    computed from the values read)."""
    return (
        src.nodata is not None
        and np.dtype(src.dtypes[band - 1]).kind in "iu"
        and src.mask_flag_enums[band - 1] == [MaskFlags.nodata]
    )


def valid_pixels(
    src: rasterio.io.DatasetReader, band: int, values: np.ndarray, window: Window
) -> np.ndarray | None:
    """GDAL's validity mask of ``band`` in ``window`` (None when every pixel is valid: no nodata value,
    mask band or alpha band), from ``values`` (the band's pixels there) when the mask is just "not the
    nodata value" of an integer band, else by reading the mask (an alpha band, an internal or ``.msk``
    mask, a float band's nodata)."""
    if src.mask_flag_enums[band - 1] == [MaskFlags.all_valid]:
        return None
    if nodata_is_the_mask(src, band):
        return values != src.nodata
    return src.read_masks(band, window=window) > 0


@dataclass(frozen=True)
class BandWindow:
    """A window's bands as read, with the stretch still to apply: what a model on an accelerator takes, so
    that the lookup runs there (a few microseconds on a GPU, ~10 ms of host CPU per 1024 px window);
    :meth:`rgb` gives the same pixels on the host."""

    data: np.ndarray  # (bands, h, w) as read
    stretch: Stretch
    valid: np.ndarray | None  # (h, w) GDAL's validity mask of the first band; None: see nodata
    pad_to: int | None = None  # padded with 0 (right and bottom) to at least this size
    # with ``valid`` None: the first band's pixels equal to this are invalid (None: all are valid)
    nodata: float | None = None

    def validity(self) -> np.ndarray | None:
        """The (h, w) validity mask, None when every pixel is valid."""
        if self.valid is not None or self.nodata is None:
            return self.valid
        return self.data[0] != self.nodata

    def nodata_bits(self) -> int | None:
        """``nodata`` as the first band's value read as a signed integer of its width (as a device compares
        it), or None when no value of the band's type equals it (every pixel valid)."""
        dt = self.data.dtype
        if self.nodata is None or dt.kind not in "iu" or not float(self.nodata).is_integer():
            return None
        info = np.iinfo(dt)
        if not info.min <= self.nodata <= info.max:
            return None
        return int(np.array(int(self.nodata), dtype=dt).view(f"i{dt.itemsize}"))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, bands)`` of :meth:`rgb` (padded)."""
        bands, h, w = self.data.shape
        pad = self.pad_to or 0
        return max(pad, h), max(pad, w), bands

    def tables(self) -> list[np.ndarray] | None:
        """The stretch as one lookup table per band (:func:`stretch_table`), or None for other than 8- and
        16-bit integer bands."""
        tables = [stretch_table(self.data.dtype.str, float(lo), float(hi)) for lo, hi in self.stretch]
        return None if any(t is None for t in tables) else tables  # type: ignore[return-value]

    def rgb(self) -> np.ndarray:
        """Stretched uint8 (H, W, bands), padded: an (H, W, bands) view of contiguous band planes, the
        layout SAM2's transforms want (they make their (3, H, W) tensor from it without a copy)."""
        planes = stretch_planes(self.data, self.stretch, self.validity())
        h, w = planes.shape[1:]
        height, width, _ = self.shape
        if (height, width) != (h, w):
            padded = np.zeros((planes.shape[0], height, width), dtype=np.uint8)
            padded[:, :h, :w] = planes
            planes = padded
        return planes.transpose(1, 2, 0)


def _band_window(
    src: rasterio.io.DatasetReader, window: Window, bands: Sequence[int], stretch: Stretch, pad_to: int | None
) -> BandWindow:
    data = src.read(list(bands), window=window)
    if nodata_is_the_mask(src, bands[0]):  # validity from the values, where they are stretched
        return BandWindow(data, list(stretch), None, pad_to, nodata=src.nodata)
    return BandWindow(data, list(stretch), valid_pixels(src, bands[0], data[0], window), pad_to)


def read_band_window(
    src: rasterio.io.DatasetReader,
    window: Window,
    bands: Sequence[int],
    stretch: Stretch,
    pad_to: int | None = None,
) -> BandWindow:
    """Read one window of the chosen bands, to be stretched by whoever uses it (:class:`BandWindow`)."""
    try:
        return _band_window(src, window, bands, stretch, pad_to)
    except RasterioIOError as exc:
        return in_one_thread(src, lambda one: _band_window(one, window, bands, stretch, pad_to), exc)


def read_rgb_window(
    src: rasterio.io.DatasetReader,
    window: Window,
    bands: Sequence[int],
    stretch: Stretch,
    pad_to: int | None = None,
) -> np.ndarray:
    """Read one window of the chosen bands as stretched uint8 RGB (H, W, 3), padded with 0 to ``pad_to``
    (:meth:`BandWindow.rgb`)."""
    return read_band_window(src, window, bands, stretch, pad_to).rgb()
