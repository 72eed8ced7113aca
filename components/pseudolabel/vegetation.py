"""Vegetation filter: the median NDVI of each segment, from the orthophoto's red and NIR bands.

NDVI = (NIR - red) / (NIR + red) per pixel, over the pixels whose centre lies in the segment, that are
valid in both bands (not nodata) and have NIR + red > 0. A segment's NDVI is the median of those values
(NaN when it has none). Rasters are read by windows: one read per group of segments (a plan window's
segments), covering only their bounding boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rasterio
import rasterio.features
import shapely
from rasterio import Affine
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from crownsam.common.errors import InputError
from crownsam.common.raster import RasterInfo, read_error
from crownsam.pseudolabel.masks import ceil_px, floor_px

RED_NAMES = frozenset({"red", "r"})
NIR_NAMES = frozenset({"nir", "near infrared", "near-infrared", "nearinfrared", "nir1"})


def find_band(info: RasterInfo, given: int | None, names: frozenset[str], flag: str, what: str) -> int:
    """The 1-based band: ``given`` (checked against the raster), else the one band whose description is
    one of ``names`` (case-insensitive), else an :class:`InputError` saying which option to pass."""
    if given is not None:
        if not 1 <= given <= info.count:
            raise InputError(info.path, f"{flag} {given} out of range: the raster has bands 1..{info.count}")
        return int(given)
    hits = [i + 1 for i, d in enumerate(info.descriptions) if d and d.strip().lower() in names]
    if len(hits) == 1:
        return hits[0]
    described = ", ".join(f"{i + 1}={d}" for i, d in enumerate(info.descriptions) if d) or "none"
    if not hits:
        raise InputError(
            info.path,
            f"NDVI needs a {what} band, and no band is described as {what} (band descriptions: "
            f"{described}); pass {flag} N",
        )
    raise InputError(info.path, f"bands {hits} are all described as {what}; pass {flag} N")


def ndvi_bands(info: RasterInfo, red: int | None, nir: int | None) -> tuple[int, int]:
    """(red, NIR) band numbers for the NDVI: given, else from the band descriptions."""
    r = find_band(info, red, RED_NAMES, "--red-band", "red")
    n = find_band(info, nir, NIR_NAMES, "--nir-band", "NIR")
    if r == n:
        raise InputError(info.path, f"red and NIR are the same band ({r}); pass --red-band and --nir-band")
    return r, n


def pixel_bounds(
    pix: Sequence[shapely.Geometry] | np.ndarray, width: int, height: int
) -> tuple[int, int, int, int]:
    """``(r0, c0, r1, c1)``: whole pixels covering pixel-space geometries, clipped to the raster."""
    b = shapely.bounds(np.asarray(pix, dtype=object))
    c0 = int(np.clip(floor_px(np.nanmin(b[:, 0])), 0, width))
    r0 = int(np.clip(floor_px(np.nanmin(b[:, 1])), 0, height))
    c1 = int(np.clip(ceil_px(np.nanmax(b[:, 2])), 0, width))
    r1 = int(np.clip(ceil_px(np.nanmax(b[:, 3])), 0, height))
    return r0, c0, r1, c1


def inside_mask(geom: shapely.Geometry, shape: tuple[int, int], r0: int, c0: int) -> np.ndarray:
    """Pixels of a ``shape`` grid starting at raster pixel ``(r0, c0)`` whose centre lies in ``geom``
    (pixel-space coordinates: x = column, y = row)."""
    if geom is None or geom.is_empty or shape[0] <= 0 or shape[1] <= 0:
        return np.zeros(shape, dtype=bool)
    return rasterio.features.geometry_mask(
        [geom], out_shape=shape, transform=Affine.translation(c0, r0), invert=True
    )


def median_ndvi(
    src: rasterio.io.DatasetReader, pix: Sequence[shapely.Geometry] | np.ndarray, red: int, nir: int
) -> np.ndarray:
    """Median NDVI of each pixel-space geometry in ``pix`` (NaN where no pixel counts), from one read
    of the red and NIR bands over the geometries' bounding box (see the module docstring)."""
    out = np.full(len(pix), np.nan)
    if not len(pix):
        return out
    r0, c0, r1, c1 = pixel_bounds(pix, src.width, src.height)
    if r1 <= r0 or c1 <= c0:
        return out
    win = Window(c0, r0, c1 - c0, r1 - r0)
    try:
        data = src.read([red, nir], window=win).astype(np.float64)
        valid = (src.read_masks(red, window=win) > 0) & (src.read_masks(nir, window=win) > 0)
    except RasterioIOError as exc:
        raise read_error(src.name, exc) from exc
    total = data[0] + data[1]
    valid &= total > 0
    ndvi = np.divide(data[1] - data[0], total, out=np.zeros_like(total), where=valid)
    for i, g in enumerate(pix):
        if g is None or g.is_empty:
            continue
        gr0, gc0, gr1, gc1 = pixel_bounds([g], src.width, src.height)
        gr0, gc0, gr1, gc1 = max(gr0, r0), max(gc0, c0), min(gr1, r1), min(gc1, c1)
        if gr1 <= gr0 or gc1 <= gc0:
            continue
        sub = np.s_[gr0 - r0 : gr1 - r0, gc0 - c0 : gc1 - c0]
        sel = inside_mask(g, (gr1 - gr0, gc1 - gc0), gr0, gc0) & valid[sub]
        if sel.any():
            out[i] = float(np.median(ndvi[sub][sel]))
    return out
