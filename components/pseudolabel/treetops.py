"""Treetops: the positive point of each segment, for point prompts and negative prompt calibration.

Sources, in order of preference (the summary counts which one each segment used):

* ``columns``: the segments file's ``treetop_x`` / ``treetop_y`` columns (map units of the file's CRS;
  ``crownsam segment-chm`` writes them). A treetop outside its segment is an input error.
* ``chm``: the highest CHM pixel whose centre lies in the segment (ties: the first in raster order), at
  that pixel's centre; CHM nodata never counts. Read by windows: one read per group of segments.
* ``pole``: the segment's pole of inaccessibility (``shapely.polylabel``, tolerance one orthophoto
  pixel): when there is no CHM, or the segment holds no valid CHM pixel centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from rasterio import Affine
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from shapely.ops import polylabel

from crownsam.common.errors import InputError
from crownsam.common.raster import crs_string, open_raster, read_error
from crownsam.common.vector import ID_COLUMN, same_crs
from crownsam.pseudolabel.masks import SNAP_PX
from crownsam.pseudolabel.vegetation import inside_mask, pixel_bounds
from crownsam.tiling.plan import pixel_geometries

COLUMNS = ("treetop_x", "treetop_y")
SOURCES = ("columns", "chm", "pole")


@dataclass
class Treetops:
    """One treetop per segment, in the raster's CRS (map units), and the source of each."""

    xy: np.ndarray  # (n, 2)
    source: np.ndarray  # (n,) of str, one of SOURCES

    def counts(self) -> dict[str, int]:
        return {s: int(np.count_nonzero(self.source == s)) for s in SOURCES if np.any(self.source == s)}


def _transform_xy(xy: np.ndarray, src: pyproj.CRS, dst: pyproj.CRS) -> np.ndarray:
    if same_crs(src, dst):
        return xy
    t = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    x, y = t.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def from_columns(
    gdf: gpd.GeoDataFrame, source: str, file_crs: pyproj.CRS, tolerance: float
) -> np.ndarray | None:
    """Treetops from the ``treetop_x``/``treetop_y`` columns (None when the file has neither), moved
    from the file's CRS to the segments' (the raster's); each must lie in its segment (within
    ``tolerance`` map units)."""
    have = [c for c in COLUMNS if c in gdf.columns]
    if not have:
        return None
    if len(have) == 1:
        raise InputError(source, f"has {have[0]} but not {({*COLUMNS} - {have[0]}).pop()}")
    xy = gdf[list(COLUMNS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        ids = gdf.loc[bad, ID_COLUMN].head(5).tolist()
        raise InputError(source, f"treetop_x/treetop_y missing for segment_id {', '.join(map(str, ids))}")
    xy = _transform_xy(xy, file_crs, pyproj.CRS.from_user_input(gdf.crs))
    pts = shapely.points(xy)
    outside = ~shapely.dwithin(pts, gdf.geometry.values, tolerance)
    if outside.any():
        ids = gdf.loc[outside, ID_COLUMN].head(5).tolist()
        raise InputError(
            source,
            f"{int(outside.sum())} treetop(s) lie outside their segment (segment_id "
            f"{', '.join(map(str, ids))}{', ...' if outside.sum() > 5 else ''})",
        )
    return xy


def pole(geom: shapely.Geometry, tolerance: float) -> tuple[float, float]:
    """The pole of inaccessibility of a polygon (its largest part for a multi-polygon)."""
    if geom.geom_type == "MultiPolygon":
        geom = max(geom.geoms, key=lambda g: g.area)
    p = polylabel(geom, tolerance=tolerance)
    return float(p.x), float(p.y)


def highest_chm_pixels(chm_path: str, gdf: gpd.GeoDataFrame, groups: Sequence[np.ndarray]) -> np.ndarray:
    """For each segment, the map coordinates (segments' CRS) of the centre of its highest valid CHM
    pixel (NaN when it holds none). ``groups`` are index arrays into ``gdf``: each group is read once."""
    out = np.full((len(gdf), 2), np.nan)
    with open_raster(chm_path) as src:
        if src.crs is None:
            raise InputError(chm_path, "CHM has no CRS; georeference it first")
        if src.count != 1:
            raise InputError(chm_path, f"a CHM has one band, this raster has {src.count}")
        chm_crs = pyproj.CRS.from_user_input(crs_string(src.crs))
        seg_crs = pyproj.CRS.from_user_input(gdf.crs)
        in_chm = gdf if same_crs(seg_crs, chm_crs) else gdf.to_crs(chm_crs)
        pix = pixel_geometries(in_chm, src.transform)
        for idx in groups:
            idx = np.asarray(idx, dtype=np.int64)
            if not idx.size:
                continue
            r0, c0, r1, c1 = pixel_bounds(pix[idx], src.width, src.height)
            if r1 <= r0 or c1 <= c0:
                continue
            win = Window(c0, r0, c1 - c0, r1 - r0)
            try:
                data = src.read(1, window=win, masked=True)
            except RasterioIOError as exc:
                raise read_error(chm_path, exc) from exc
            values = np.ma.filled(data.astype(np.float64), -np.inf)
            values[~np.isfinite(values)] = -np.inf
            for i in idx:
                g = pix[i]
                gr0, gc0, gr1, gc1 = pixel_bounds([g], src.width, src.height)
                gr0, gc0, gr1, gc1 = max(gr0, r0), max(gc0, c0), min(gr1, r1), min(gc1, c1)
                if gr1 <= gr0 or gc1 <= gc0:
                    continue
                sub = values[gr0 - r0 : gr1 - r0, gc0 - c0 : gc1 - c0]
                cand = np.where(inside_mask(g, sub.shape, gr0, gc0), sub, -np.inf)
                k = int(np.argmax(cand))  # first maximum in raster order
                if not np.isfinite(cand.flat[k]):
                    continue
                rr, cc = divmod(k, cand.shape[1])
                out[i] = src.transform @ (gc0 + cc + 0.5, gr0 + rr + 0.5)
        if not same_crs(seg_crs, chm_crs):
            ok = np.isfinite(out).all(axis=1)
            out[ok] = _transform_xy(out[ok], chm_crs, seg_crs)
    return out


def find_treetops(
    gdf: gpd.GeoDataFrame,
    *,
    source: str,
    file_crs: pyproj.CRS,
    pixel_size: float,
    chm: str | None = None,
    groups: Sequence[np.ndarray] | None = None,
) -> Treetops:
    """One treetop per segment of ``gdf`` (the raster's CRS), by the rule in the module docstring.
    ``pixel_size`` is the orthophoto's pixel size in map units (tolerances); ``groups`` (index arrays
    into ``gdf``, default all in one) say which segments are read together from the CHM."""
    n = len(gdf)
    tol = SNAP_PX * pixel_size
    xy = from_columns(gdf, source, file_crs, tol)
    if xy is not None:
        return Treetops(xy, np.full(n, "columns", dtype=object))
    xy = np.full((n, 2), np.nan)
    src = np.full(n, "pole", dtype=object)
    if chm:
        xy = highest_chm_pixels(chm, gdf, groups if groups is not None else [np.arange(n)])
        src[np.isfinite(xy).all(axis=1)] = "chm"
    for i in np.flatnonzero(src == "pole"):
        xy[i] = pole(gdf.geometry.iloc[i], pixel_size)
    return Treetops(xy, src)


def to_window_pixels(xy: np.ndarray, transform: Affine, row_off: int, col_off: int) -> np.ndarray:
    """Map coordinates -> continuous window pixel coordinates (x = column, y = row; a pixel's centre at
    +0.5), by the same chain as the boxes: the raster's inverse transform, then the window offset."""
    inv = ~transform
    m = np.array([[inv.a, inv.b], [inv.d, inv.e]])
    t = np.array([inv.c, inv.f])
    px = np.asarray(xy, dtype=np.float64) @ m.T + t
    return px - np.array([col_off, row_off], dtype=np.float64)
