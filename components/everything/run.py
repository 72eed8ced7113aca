"""The loop over tiles (read window, multi-pass, objects and strips, save) and the merge into one layer.

Only one tile's pixels are in memory at a time; finished tiles go to a :class:`TileStore` at once, and the
merge reads them back row by row and writes objects in chunks (``seams`` module docstring).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio import Affine
from rasterio.errors import RasterioIOError

from crownsam.common.progress import progress_bar
from crownsam.common.raster import Stretch, read_error, read_rgb_window
from crownsam.common.window_pipeline import WindowLoopParams, preload, run_pipeline
from crownsam.everything.params import EverythingParams
from crownsam.everything.passes import MaskGenerator, PassesResult, run_passes
from crownsam.everything.seams import MergeStats, group_object, merged_groups, tile_result
from crownsam.everything.store import TileResult, TileSource, TileStore
from crownsam.everything.tiles import Tile, TileGrid

LAYER = "masks"
COLUMNS: dict[str, str] = {
    "object_id": "int64",
    "score": "float64",
    "stability": "float64",
    "pass": "int64",
    "tile": "str",
    "area": "float64",
    "area_px": "int64",
    "pred_iou_thresh": "float64",
    "stability_thresh": "float64",
    "tiles": "int64",
    "model": "str",
    "untrained": "bool",
}
CHUNK = 2000


def read_tile(
    src: rasterio.io.DatasetReader, tile: Tile, bands: tuple[int, ...], stretch: Stretch
) -> tuple[np.ndarray, np.ndarray]:
    """The tile's read window as stretched RGB uint8 (H, W, 3; invalid pixels 0) and its valid mask."""
    rgb = read_rgb_window(src, tile.window, bands, stretch)
    try:
        valid = src.read_masks(bands[0], window=tile.window) > 0
    except RasterioIOError as exc:
        raise read_error(src.name, exc) from exc
    return rgb, valid


@dataclass
class TileInput:
    """A tile read for the model (stage 1), and how long that took."""

    tile: Tile
    image: np.ndarray
    valid: np.ndarray
    seconds: float = 0.0


@dataclass
class TilePasses:
    """The model's passes over a tile (stage 2), and how long they took."""

    passes: PassesResult
    model_seconds: float
    seconds: float


def load_tile(
    src: rasterio.io.DatasetReader, tile: Tile, bands: tuple[int, ...], stretch: Stretch
) -> TileInput:
    """Stage 1: :func:`read_tile`, timed."""
    t0 = time.perf_counter()
    image, valid = read_tile(src, tile, bands, stretch)
    return TileInput(tile, image, valid, time.perf_counter() - t0)


def pass_tile(inp: TileInput, generator: MaskGenerator, params: EverythingParams) -> TilePasses:
    """Stage 2: the multi-pass loop on the tile (model and its own host work interleave here)."""
    t0, m0 = time.perf_counter(), generator.model_seconds
    generator.start_tile(inp.tile)
    passes = run_passes(inp.image, inp.valid, inp.tile.local(inp.tile.own), generator, params)
    return TilePasses(passes, generator.model_seconds - m0, time.perf_counter() - t0)


def finish_tile(inp: TileInput, out: TilePasses, grid: TileGrid) -> TileResult:
    """Stage 3: the tile's objects' parts and strips (pixel coordinates) from its label array."""
    t0 = time.perf_counter()
    result = tile_result(out.passes, inp.tile, grid)
    result.model_seconds = out.model_seconds
    result.seconds = inp.seconds + out.seconds + time.perf_counter() - t0
    return result


def without_pixels(inp: TileInput) -> TileInput:
    """``inp`` without its image and valid mask (stage 3 does not need them)."""
    return replace(inp, image=np.empty((0, 0, 3), np.uint8), valid=np.empty((0, 0), bool))


def process_tile(
    src: rasterio.io.DatasetReader,
    grid: TileGrid,
    tile: Tile,
    generator: MaskGenerator,
    params: EverythingParams,
    stretch: Stretch,
) -> TileResult:
    """Read one tile, run the passes, and keep its objects' parts and strips (pixel coordinates)."""
    inp = load_tile(src, tile, params.rgb_bands, stretch)
    out = pass_tile(inp, generator, params)
    return finish_tile(without_pixels(inp), out, grid)


preload(__name__)  # worker processes of the window pipeline import this module once


def tile_summary(res: TileResult) -> dict:
    """What the run summary keeps of a tile (no geometry)."""
    return {
        "key": res.key,
        "stop": res.stop,
        "valid_px": res.valid_px,
        "covered_px": res.covered_px,
        "coverage": round(res.covered_px / res.valid_px, 6) if res.valid_px else None,
        "coverage_per_pass": [p["coverage"] for p in res.passes],
        "covered_px_per_pass": [p["covered_px"] for p in res.passes],
        "passes": res.passes,
        "objects": len(res.rows),
        "masks": sum(p["masks"] for p in res.passes),
        "points": res.prompts,
        "dropped": res.dropped,
        "seconds": round(res.seconds, 3),
        "model_seconds": round(res.model_seconds, 3),
    }


@dataclass
class TilesRun:
    """Per-tile summaries of a run over tiles (geometry lives in the store)."""

    tiles: list[dict] = field(default_factory=list)
    processed: int = 0
    resumed: int = 0
    seconds_total: float = 0.0
    seconds_in_model: float = 0.0


def segment_tiles(
    ortho: str,
    grid: TileGrid,
    tiles: Iterable[Tile],
    generator: MaskGenerator,
    params: EverythingParams,
    stretch: Stretch,
    store: TileStore,
    *,
    progress: bool = False,
    loop: WindowLoopParams | None = None,
) -> TilesRun:
    """Process ``tiles`` (skipping those the store holds from an earlier attempt), saving each at once.

    The tiles go through a window pipeline (:mod:`crownsam.common.window_pipeline`) as ``loop`` says
    (None: the sequential loop; ``window_batch`` does not apply): tiles read ahead in a thread, the passes
    in this thread, parts and strips in worker processes, in the order of
    :func:`crownsam.common.raster.reading_order` (the summaries in that of ``tiles``). The results do not
    depend on ``loop``."""
    from crownsam.common.raster import gdal_cache, open_raster, reading_order

    t0 = time.perf_counter()
    m0 = generator.model_seconds
    run = TilesRun()
    done = store.done()
    tiles = list(tiles)
    summaries: dict[str, dict] = {}
    for tile in tiles:
        saved = store.get(tile.key) if tile.key in done else None
        if saved is not None:
            summaries[tile.key] = tile_summary(saved) | {"resumed": True}
    settings = replace((loop or WindowLoopParams(workers=0)).settings(), batch=1)
    with open_raster(ortho) as src:
        indices, cache_mib = reading_order(
            src, [(t.read[0], t.read[1]) for t in tiles], grid.tile + 2 * grid.padding, grid.tile
        )
        order = [tiles[i] for i in indices]
        todo = [t for t in order if t.key not in summaries]
        # src is used by one thread only: the reader thread (pipeline), or this one (sequential loop)
        stream = run_pipeline(
            todo,
            lambda t: load_tile(src, t, params.rgb_bands, stretch),
            lambda inps: [pass_tile(i, generator, params) for i in inps],
            partial(finish_tile, grid=grid),
            settings,
            strip=without_pixels,
        )
        bar = progress_bar(total=len(tiles), desc="tiles", unit="tile", enabled=progress)
        with gdal_cache(cache_mib), closing(stream), bar:
            for tile in order:
                if tile.key in summaries:
                    run.resumed += 1
                else:
                    result = next(stream)
                    store.save(result)
                    summaries[tile.key] = tile_summary(result)
                    run.processed += 1
                bar.update()
    run.tiles = [summaries[t.key] for t in tiles]
    run.seconds_total = time.perf_counter() - t0
    run.seconds_in_model = generator.model_seconds - m0
    return run


def overall_coverage(tiles: list[dict]) -> list[float]:
    """Coverage of all valid pixels after each pass: ``sum_t covered_t(p) / sum_t valid_t``, where a tile
    that stopped before pass ``p`` counts with its last coverage (0 for a tile without a pass)."""
    valid = sum(t["valid_px"] for t in tiles)
    n = max((len(t["covered_px_per_pass"]) for t in tiles), default=0)
    if not valid:
        return [0.0] * n
    out = []
    for p in range(n):
        covered = sum(
            (
                t["covered_px_per_pass"][min(p, len(t["covered_px_per_pass"]) - 1)]
                if t["covered_px_per_pass"]
                else 0
            )
            for t in tiles
        )
        out.append(round(covered / valid, 6))
    return out


def tiles_block(tiles: list[dict]) -> dict:
    """The summary's coverage and timing figures over a list of tile summaries."""
    ts = [t["seconds"] for t in tiles if not t.get("resumed")]
    dropped: dict[str, int] = {}
    for t in tiles:
        for k, v in t["dropped"].items():
            dropped[k] = dropped.get(k, 0) + v
    valid = sum(t["valid_px"] for t in tiles)
    return {
        "coverage_per_pass": overall_coverage(tiles),
        "coverage": round(sum(t["covered_px"] for t in tiles) / valid, 6) if valid else None,
        "valid_px": valid,
        "masks_from_sam2": sum(t["masks"] for t in tiles),
        "tile_objects": sum(t["objects"] for t in tiles),
        "masks_dropped": dict(sorted(dropped.items())),
        "points": sum(t["points"] for t in tiles),
        "seconds_per_tile": {
            "mean": round(statistics.fmean(ts), 3) if ts else None,
            "max": round(max(ts), 3) if ts else None,
        },
        "per_tile": {
            t["key"]: {k: v for k, v in t.items() if k != "key"}
            for t in sorted(tiles, key=lambda t: t["key"])
        },
    }


def empty_frame(crs: str) -> gpd.GeoDataFrame:
    """The output layer's schema with no rows."""
    cols = {k: pd.Series([], dtype="object" if v == "str" else v) for k, v in COLUMNS.items()}
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs=crs or None), crs=crs or None)


def write_merged(
    grid: TileGrid,
    source: TileSource,
    gpkg: Path,
    *,
    transform: Affine,
    crs: str,
    model: str,
    untrained: bool,
    match: bool = True,
) -> tuple[int, MergeStats]:
    """Merge the tiles (``seams``) and write one polygon per object to ``gpkg`` (layer ``masks``), in
    chunks; returns (objects written, merge figures)."""
    stats = MergeStats()
    pixel_area = abs(transform.determinant)
    empty_frame(crs).to_file(gpkg, layer=LAYER, driver="GPKG", geometry_type="Polygon")
    rows: list[dict] = []
    geoms: list = []
    written = 0

    def flush() -> None:
        nonlocal written
        if not rows:
            return
        frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs or None)
        frame = frame[[*COLUMNS, "geometry"]]
        frame.to_file(gpkg, layer=LAYER, driver="GPKG", mode="a")
        written += len(rows)
        rows.clear()
        geoms.clear()

    for group in merged_groups(grid, source, stats, match=match):
        row, geom = group_object(group, transform, stats)
        row |= {
            "object_id": written + len(rows) + 1,
            "area": row["area_px"] * pixel_area,
            "model": model,
            "untrained": untrained,
        }
        rows.append(row)
        geoms.append(geom)
        if len(rows) >= CHUNK:
            flush()
    flush()
    return written, stats
