"""SAM objects for SESSRS: read from ``segment-everything`` output, or generated over the crowns only.

On the fly, segment-everything's own tile loop and seam merge run (``crownsam.everything``) on the tiles
whose own pixels meet the crowns' pixel bounding box grown by :data:`MARGIN_PX`; tiles outside it count as
tiles without objects, so an object cut by the edge of that region is kept to its part inside it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.everything.add_missed import in_raster_crs, read_masks
from crownsam.everything.params import EverythingParams
from crownsam.everything.passes import MaskGenerator
from crownsam.everything.tiles import Rect
from crownsam.pseudolabel.params import Sam2Params

log = logging.getLogger(__name__)

MARGIN_PX = 64  # objects reach beyond a crown predicted too small by up to this (1.6 m at 2.5 cm)


def read_objects(path: str, source: str, crs: str) -> gpd.GeoDataFrame:
    """segment-everything objects (any polygon file; an empty one is valid), in the raster's CRS, without
    null or empty geometries."""
    gdf = read_masks(path, source)
    gdf = in_raster_crs(gdf, crs, source)
    geoms = gdf.geometry.values
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    bad = keep & ~shapely.is_valid(geoms)
    if bad.any():
        gdf = gdf.copy()
        gdf.loc[bad, gdf.geometry.name] = shapely.make_valid(geoms[bad])
    return gdf[keep].reset_index(drop=True)


def pixel_bounds(crowns: gpd.GeoDataFrame, transform: tuple, width: int, height: int, margin: int) -> Rect:
    """``(r0, c0, r1, c1)``: raster pixels covering the crowns, grown by ``margin``, clipped."""
    from rasterio import Affine

    inv = ~Affine(*transform[:6])
    x0, y0, x1, y1 = crowns.total_bounds
    cols, rows = zip(*(inv @ xy for xy in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))), strict=True)
    c0 = int(np.clip(np.floor(min(cols)) - margin, 0, width))
    r0 = int(np.clip(np.floor(min(rows)) - margin, 0, height))
    c1 = int(np.clip(np.ceil(max(cols)) + margin, 0, width))
    r1 = int(np.clip(np.ceil(max(rows)) + margin, 0, height))
    return r0, c0, r1, c1


def objects_on_the_fly(
    ortho: str,
    crowns: gpd.GeoDataFrame,
    params: EverythingParams,
    sam2: Sam2Params,
    *,
    generator: MaskGenerator | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
    loop: WindowLoopParams | None = None,
) -> tuple[gpd.GeoDataFrame, dict]:
    """SAM objects over the crowns (module docstring); returns them (raster CRS, segment-everything's
    columns) and a summary (tiles, coverage, model, untrained). ``loop``: segment-everything's window
    loop over the tiles (None: the sequential loop; the objects do not depend on it)."""
    from crownsam.everything.api import EverythingRequest, build_generator, prepare
    from crownsam.everything.run import LAYER, segment_tiles, tiles_block, write_merged
    from crownsam.everything.store import TileResult, TileStore, run_key

    with tempfile.TemporaryDirectory(prefix="crownsam-refine-objects-") as tmp:
        req = EverythingRequest(
            ortho=ortho,
            out=str(Path(tmp) / "objects.gpkg"),
            params=params,
            sam2=sam2,
            resume_dir="",
            cache_dir=cache_dir,
            progress=progress,
        )
        prep = prepare(req)
        info = prep.info
        r0, c0, r1, c1 = pixel_bounds(crowns, info.transform, info.width, info.height, MARGIN_PX)
        tiles = [
            t for t in prep.grid.tiles if t.own[0] < r1 and r0 < t.own[2] and t.own[1] < c1 and c0 < t.own[3]
        ]
        extra: dict = {}
        if generator is None:
            generator, extra = build_generator(req)
        key = run_key(info, prep.stretch, params, generator.name, sam2.checkpoint, generator.untrained)
        store = TileStore(str(Path(tmp) / "tiles"), key)
        run = segment_tiles(
            prep.ortho, prep.grid, tiles, generator, params, prep.stretch, store, progress=progress, loop=loop
        )
        done = {t.key for t in tiles}

        def source(k: str) -> TileResult | None:
            return store.get(k) if k in done else TileResult(key=k)

        gpkg = Path(tmp) / "merged.gpkg"
        n, _ = write_merged(
            prep.grid,
            source,
            gpkg,
            transform=info.affine,
            crs=info.crs or "",
            model=generator.name,
            untrained=generator.untrained,
        )
        objects = gpd.read_file(gpkg, layer=LAYER)
    block = tiles_block(run.tiles)
    summary = {
        "source": "generated",
        "tiles": len(tiles),
        "tiles_in_raster": len(prep.grid.tiles),
        "objects": n,
        "coverage": block["coverage"],
        "model": generator.name,
        "untrained": bool(generator.untrained),
        "seconds": round(run.seconds_total, 3),
        "settings": params.as_dict(),
    } | extra
    return objects, summary
