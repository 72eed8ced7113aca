"""Segment a CHM file block by block and write one polygon per crown (``crownsam segment-chm``).

Blocks: the raster is cut into ``ceil(H / (block - overlap))`` x ``ceil(W / (block - overlap))`` cores of
near-equal size; each core is read with ``overlap / 2`` extra pixels on every side (clipped at the raster
edge), so a read window is at most ``block`` pixels square. A crown is kept by the one block whose core
holds its treetop, so each crown is produced exactly once. With an overlap of at least twice
:meth:`ChmParams.reach_px` every treetop decision in a core sees the same pixels as in a whole-raster run;
a kept crown that reaches the edge of its read window (a crown wider than the overlap allows) triggers a
re-read of that block with twice the margin (up to :data:`MAX_REGROW` times).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from crownsam.chm.segment import (
    DROP_REASONS,
    ChmParams,
    crown_polygons,
    drop_reasons,
    drop_rule_text,
    segment_array,
)
from crownsam.common import storage
from crownsam.common.atomic import atomic_path, check_output_file
from crownsam.common.errors import InputError
from crownsam.common.raster import crs_string, gdal_cache, open_raster, read_error

log = logging.getLogger(__name__)

PLAUSIBLE_CROWN_RADIUS_M = 10.0  # the automatic overlap leaves room for crowns this wide on each side
MAX_HEIGHT_M = 150.0  # taller than any tree (the tallest known is about 116 m): larger values are not metres
MAX_REGROW = 3
GDAL_CACHE_MB = 64  # blocks are read about once each: a large GDAL block cache only costs memory
LAYER = "coarse"
COLUMNS = ("segment_id", "top_height_m", "area_m2", "treetop_x", "treetop_y")


@dataclass(frozen=True)
class Block:
    """A core (rows ``r0:r1``, cols ``c0:c1``) that owns the treetops inside it."""

    r0: int
    r1: int
    c0: int
    c1: int

    def window(self, margin: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The read window: the core grown by ``margin`` pixels, clipped to the raster."""
        return (
            max(0, self.r0 - margin),
            min(height, self.r1 + margin),
            max(0, self.c0 - margin),
            min(width, self.c1 + margin),
        )


def plan_blocks(height: int, width: int, block: int, overlap: int) -> list[Block]:
    """Cores of near-equal size, at most ``block - overlap`` pixels on a side, covering the raster.

    Along each axis of length ``n`` there are ``k = ceil(n / (block - overlap))`` cores with boundaries at
    ``round(i * n / k)``; row-major order.
    """
    step = block - overlap

    def cuts(n: int) -> list[int]:
        k = max(1, math.ceil(n / step))
        return [round(i * n / k) for i in range(k + 1)]

    rows, cols = cuts(height), cuts(width)
    return [
        Block(rows[i], rows[i + 1], cols[j], cols[j + 1])
        for i in range(len(rows) - 1)
        for j in range(len(cols) - 1)
    ]


def auto_overlap(params: ChmParams, res: float, block: int) -> int:
    """Default overlap: ``2 * (reach + ceil(10 m / res))`` pixels, at most ``block // 2``."""
    return min(block // 2, 2 * (params.reach_px(res) + math.ceil(PLAUSIBLE_CROWN_RADIUS_M / res)))


@dataclass
class _Grid:
    """What the driver needs to know about the CHM."""

    height: int
    width: int
    res: float
    transform: rasterio.Affine
    crs: str


def _check_grid(path: str, src: rasterio.io.DatasetReader) -> _Grid:
    """Refuse CHMs we cannot measure in metres: no CRS, geographic or non-metre CRS, rotated or
    non-square pixels, non-numeric data."""
    if src.crs is None:
        raise InputError(path, "CHM has no CRS; georeference it first (e.g. gdal_edit.py -a_srs EPSG:3067)")
    if not src.crs.is_projected:
        raise InputError(path, f"CHM CRS {crs_string(src.crs)} is not projected; reproject it to metres")
    unit, factor = src.crs.linear_units_factor
    if not math.isclose(factor, 1.0):
        raise InputError(path, f"CHM CRS units are {unit}, not metres; reproject it to a metre CRS")
    t = src.transform
    if t.b != 0 or t.d != 0:
        raise InputError(path, "CHM grid is rotated; warp it to a north-up grid first")
    if not math.isclose(abs(t.a), abs(t.e), rel_tol=1e-3):
        raise InputError(path, f"CHM pixels are not square ({abs(t.a):g} x {abs(t.e):g} m)")
    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer) and not np.issubdtype(
        np.dtype(src.dtypes[0]), np.floating
    ):
        raise InputError(path, f"CHM data type {src.dtypes[0]} is not numeric")
    if src.count > 1:
        raise InputError(
            path, f"has {src.count} bands; a CHM has one band of heights in metres (an orthophoto?)"
        )
    return _Grid(src.height, src.width, float(abs(t.a)), t, crs_string(src.crs))


def _check_blocks(params: ChmParams, res: float, block: int, overlap: int | None) -> int:
    """Validate block and overlap (pixels); return the overlap to use."""
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or not 64 <= block <= 32768:
        raise InputError("--block", f"must be an integer of 64..32768 pixels, got {block!r}")
    need = 2 * params.reach_px(res)
    if overlap is None:
        overlap = max(need, auto_overlap(params, res, block))
    if isinstance(overlap, bool) or not isinstance(overlap, int | np.integer) or overlap < 0:
        raise InputError("--overlap", f"must be a non-negative integer of pixels, got {overlap!r}")
    if overlap < need:
        raise InputError(
            "--overlap",
            f"{overlap} px is too small for these parameters: treetops look {need // 2} px around them, so "
            f"the overlap must be at least {need} px",
        )
    if overlap > block // 2:
        raise InputError(
            "--overlap", f"{overlap} px is more than half the block ({block} px); use a larger block"
        )
    return int(overlap)


def _read(
    path: str, src: rasterio.io.DatasetReader, win: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """CHM values (float64) and validity (mask band and finite) of one read window."""
    r0, r1, c0, c1 = win
    w = Window(c0, r0, c1 - c0, r1 - r0)
    try:
        data = src.read(1, window=w).astype(np.float64)
        valid = src.read_masks(1, window=w) > 0
    except RasterioIOError as exc:
        raise read_error(path, exc) from exc
    valid &= np.isfinite(data)
    if valid.any() and (top := float(data[valid].max())) > MAX_HEIGHT_M:
        raise InputError(
            path,
            f"holds values up to {top:g}, above {MAX_HEIGHT_M:g} m: not a CHM in metres "
            "(reflectances? centimetres? convert it to metres)",
        )
    return data, valid


def _touches_inner_edge(bbox: tuple[slice, slice], win: tuple[int, int, int, int], grid: _Grid) -> bool:
    """Whether a crown's bounding box reaches a side of the read window that is not the raster edge."""
    r0, r1, c0, c1 = win
    rs, cs = bbox
    return (
        (rs.start == 0 and r0 > 0)
        or (rs.stop == r1 - r0 and r1 < grid.height)
        or (cs.start == 0 and c0 > 0)
        or (cs.stop == c1 - c0 and c1 < grid.width)
    )


def _segment_block(
    path: str, src: rasterio.io.DatasetReader, grid: _Grid, b: Block, margin: int, params: ChmParams
) -> tuple[dict, int, int, bool]:
    """Crowns whose treetop lies in the core of ``b``, read with ``margin``; regrown when a kept crown reaches
    an inner window edge. Returns (crowns, valid pixels in the core, times regrown, still cut)."""
    for attempt in range(MAX_REGROW + 1):
        win = b.window(margin * 2**attempt, grid.height, grid.width)
        data, valid = _read(path, src, win)
        r0, c0 = win[0], win[2]
        core = valid[b.r0 - r0 : b.r1 - r0, b.c0 - c0 : b.c1 - c0]
        core_valid = int(core.sum())
        core_data = data[b.r0 - r0 : b.r1 - r0, b.c0 - c0 : b.c1 - c0][core]
        crowns = segment_array(data, valid, grid.res, params)
        gr, gc = crowns.rows + r0, crowns.cols + c0
        own = np.flatnonzero((gr >= b.r0) & (gr < b.r1) & (gc >= b.c0) & (gc < b.c1))
        cut = any(_touches_inner_edge(crowns.bbox[k], win, grid) for k in own)
        if not cut or attempt == MAX_REGROW:
            break
    polys = crown_polygons(crowns.labels, own + 1)
    geoms = np.empty(own.size, dtype=object)
    geoms[:] = [polys[int(k) + 1] for k in own]
    geoms = shapely.transform(geoms, lambda xy: xy + np.array([c0, r0], dtype=np.float64))  # global pixels
    out = {"row": gr[own], "col": gc[own], "top": crowns.top_height(own), "geom": geoms}
    out["top_valid"] = float(core_data.max()) if core_valid else None
    return out, core_valid, attempt, cut


@dataclass
class _Prepared:
    """A validated CHM and its block plan."""

    path: str
    local: Path
    grid: _Grid
    params: ChmParams
    block: int
    overlap: int
    blocks: list[Block]


def _prepare(chm: str | Path, params: ChmParams) -> _Prepared:
    """Check the parameters and the CHM (existence, CRS, grid, block and overlap) without reading pixels."""
    params.check()
    block, overlap = params.block, params.overlap
    path = str(chm)
    local = storage.fetch(path, what="CHM")
    with open_raster(local) as src:
        grid = _check_grid(path, src)
    overlap = _check_blocks(params, grid.res, block, overlap)
    blocks = plan_blocks(grid.height, grid.width, block, overlap)
    return _Prepared(path, local, grid, params, int(block), overlap, blocks)


def _frame(parts: list[dict], prep: _Prepared, first_id: int, counts: dict) -> gpd.GeoDataFrame:
    """The crowns of one row of blocks as a GeoDataFrame: sorted by treetop (row, col), georeferenced,
    drop rule applied, ids from ``first_id`` on. Adds the drop counts to ``counts``."""
    rows = np.concatenate([p["row"] for p in parts]).astype(np.int64)
    cols = np.concatenate([p["col"] for p in parts]).astype(np.int64)
    top = np.concatenate([p["top"] for p in parts]).astype(np.float64)
    geoms = np.concatenate([p["geom"] for p in parts])
    order = np.lexsort((cols, rows))
    rows, cols, top, geoms = rows[order], cols[order], top[order], geoms[order]
    t = prep.grid.transform

    def to_map(xy: np.ndarray) -> np.ndarray:  # pixel corner coordinates (col, row) -> map (x, y)
        return np.column_stack([t.c + t.a * xy[:, 0] + t.b * xy[:, 1], t.f + t.d * xy[:, 0] + t.e * xy[:, 1]])

    geoms = shapely.normalize(shapely.transform(geoms, to_map))
    area = shapely.area(geoms) if geoms.size else np.zeros(0)
    reasons = drop_reasons(top, area, prep.params)
    for r in counts["dropped"]:
        counts["dropped"][r] += int(np.count_nonzero(reasons == r))
    counts["treetops"] += int(rows.size)
    keep = reasons == ""
    x = t.c + t.a * (cols + 0.5) + t.b * (rows + 0.5)  # treetop pixel centres
    y = t.f + t.d * (cols + 0.5) + t.e * (rows + 0.5)
    return gpd.GeoDataFrame(
        {
            "segment_id": np.arange(first_id, first_id + int(keep.sum()), dtype=np.int64),
            "top_height_m": np.round(top[keep], 3),
            "area_m2": np.round(area[keep], 4),
            "treetop_x": x[keep].astype(np.float64),
            "treetop_y": y[keep].astype(np.float64),
        },
        geometry=gpd.GeoSeries(list(geoms[keep]), crs=prep.grid.crs),
        crs=prep.grid.crs,
    )


def _iter_frames(prep: _Prepared, summary: dict) -> Iterator[gpd.GeoDataFrame]:
    """Crowns one row of blocks at a time (every treetop of a row of cores precedes the next row's in raster
    order, so ids 1..n follow treetop (row, col) across rows). Fills ``summary`` when done; raises
    InputError when the CHM turns out to have no valid pixel."""
    t0 = time.perf_counter()
    grid, params = prep.grid, prep.params
    counts: dict = {"treetops": 0, "dropped": dict.fromkeys(DROP_REASONS, 0)}
    valid_px = regrown = regrowths = cut = crowns = 0
    high = -math.inf
    with rasterio.Env(), gdal_cache(GDAL_CACHE_MB), open_raster(prep.local) as src:
        for _, row_blocks in itertools.groupby(prep.blocks, key=lambda b: b.r0):
            parts = []
            for b in row_blocks:
                part, n_valid, grown, still_cut = _segment_block(
                    prep.path, src, grid, b, prep.overlap // 2, params
                )
                parts.append(part)
                if part["top_valid"] is not None:
                    high = max(high, part["top_valid"])
                valid_px += n_valid
                regrown += grown > 0
                regrowths += grown
                cut += bool(still_cut)
            frame = _frame(parts, prep, crowns + 1, counts)
            crowns += len(frame)
            yield frame
    if valid_px == 0:
        raise InputError(prep.path, "CHM has no valid pixels (everything is nodata)")
    if high <= 0:
        raise InputError(
            prep.path,
            f"CHM has no height above 0 m (its highest valid pixel is {high:g}): not a height model",
        )
    if cut:
        log.warning(
            "%s: %d blocks hold crowns that still reach the block edge after %d regrowths; those crowns may "
            "differ from a whole-raster run (use a larger --overlap)",
            prep.path,
            cut,
            MAX_REGROW,
        )
    if crowns == 0:
        log.warning("%s: no crowns found (no treetop at or above %g m)", prep.path, params.min_height)
    seconds = time.perf_counter() - t0
    summary.update(
        {
            "chm": prep.path,
            "crs": grid.crs,
            "width": grid.width,
            "height": grid.height,
            "res_m": grid.res,
            "params": params.describe(),
            "block": prep.block,
            "overlap": prep.overlap,
            "blocks": len(prep.blocks),
            "blocks_regrown": int(regrown),
            "regrowths": int(regrowths),
            "blocks_with_cut_crowns": int(cut),
            "valid_pixels": int(valid_px),
            "treetops": counts["treetops"],
            "crowns": int(crowns),
            "dropped": counts["dropped"],
            "drop_rule": drop_rule_text(params),
            "seconds": round(seconds, 3),
            "mpx_per_s": round(grid.width * grid.height / 1e6 / max(seconds, 1e-9), 3),
        }
    )


def segment_chm(
    chm: str | Path, *, params: ChmParams | None = None, **changes: Any
) -> tuple[gpd.GeoDataFrame, dict]:
    """Coarse crowns of a CHM file in memory: a GeoDataFrame (columns :data:`COLUMNS`, the CHM's CRS) and
    the run summary. ``changes`` replace fields of ``params`` (e.g. ``block=1024``).
    :func:`segment_chm_file` gives the same crowns without holding them all.

    Reads the CHM by windows (:func:`plan_blocks`), never whole unless it fits in one block. Segment ids
    are 1..n in raster order of the treetops (row, then column), so they do not depend on ``block``.
    """
    prep = _prepare(chm, (params or ChmParams()).replace(**changes))
    summary: dict = {}
    frames = list(_iter_frames(prep, summary))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=prep.grid.crs), summary


def segment_chm_file(chm: str, out: str, params: ChmParams | None = None, **changes: Any) -> dict:
    """Segment the CHM ``chm`` into coarse crowns and write them to the GeoPackage ``out``.

    Parameters: :class:`ChmParams` (``changes`` replace its fields, e.g. ``min_distance=3``). Paths may
    be local or ``gs://``. Crowns are appended one row of blocks at a time to a temporary file that is
    renamed onto ``out`` only when the run succeeds. Returns the run summary (counts, drop rule, parameters,
    timing). Bad input or parameters raise :class:`InputError` and leave no output.
    """
    check_output_file(out, "--out")
    prep = _prepare(chm, (params or ChmParams()).replace(**changes))
    summary: dict = {}
    with storage.local_output(str(out)) as target, atomic_path(target) as tmp:
        written = False
        for frame in _iter_frames(prep, summary):
            if len(frame) or not written:
                pyogrio.write_dataframe(
                    frame, tmp, layer=LAYER, driver="GPKG", append=written, geometry_type="Polygon"
                )
                written = True
    summary["out"] = str(out)
    return summary
