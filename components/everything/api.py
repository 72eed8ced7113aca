"""File-level entry points of segment-everything, shared by the CLI and the KFP components.

Inputs and outputs may be local paths or ``gs://`` URIs. Without a shard the run writes the merged
objects (``.gpkg``) and a summary beside them; a shard writes a folder of finished tiles that
:func:`merge_everything` turns into the same outputs.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rasterio import Affine

from crownsam.common import storage
from crownsam.common.atomic import atomic_paths, check_output_file, check_output_folder
from crownsam.common.device import resolve_device
from crownsam.common.errors import InputError
from crownsam.common.raster import RasterInfo, Stretch, check_rgb_bands, compute_stretch, raster_info
from crownsam.common.window_pipeline import WindowLoopParams, start_workers
from crownsam.everything.params import EverythingParams, PipelineFindMissed
from crownsam.everything.passes import AmgGenerator, MaskGenerator
from crownsam.everything.run import segment_tiles, tiles_block, write_merged
from crownsam.everything.store import (
    TileSource,
    TileStore,
    read_shard_summary,
    run_key,
    shard_source,
    write_shard_folder,
)
from crownsam.everything.tiles import Tile, TileGrid, tile_grid
from crownsam.pseudolabel.params import Sam2Params
from crownsam.tiling.plan import split_windows

log = logging.getLogger(__name__)

ARTIFACT_MASKS = "masks.gpkg"
SKIPPED_NOTE = "find_missed.off.json"  # what a shard or merge writes when the pipeline switch is off


@dataclass
class EverythingRequest:
    """Everything ``crownsam segment-everything`` takes, as plain values (paths or gs:// URIs)."""

    ortho: str
    out: str
    params: EverythingParams = field(default_factory=EverythingParams)
    sam2: Sam2Params = field(default_factory=Sam2Params)
    shard: tuple[int, int] | None = None
    summary: str | None = None
    resume_dir: str | None = None  # None: OUT + ".parts"; "": no resuming (a temporary folder)
    cache_dir: str | None = None
    progress: bool = True
    loop: WindowLoopParams = field(default_factory=WindowLoopParams)


def summary_path(out: str, summary: str | None = None) -> str:
    """Where a merged run's summary goes: ``summary`` or ``OUT`` with ``.summary.json``."""
    return summary or str(out).removesuffix(".gpkg") + ".summary.json"


@dataclass
class Prepared:
    """A validated request: the raster, its stretch, the tile grid and this run's tiles."""

    ortho: str  # local path
    info: RasterInfo
    stretch: Stretch
    grid: TileGrid
    tiles: list[Tile]


def shard_tiles(grid: TileGrid, index: int, count: int) -> list[Tile]:
    """Tile ``index`` of ``count`` shards: ``tiling.plan.split_windows`` on the tiles (each costs one)."""
    if count < 1 or not 0 <= index < count:
        raise InputError(None, f"--shard {index}/{count}: need 0 <= I < N")
    keys = {w.key for w in split_windows([t.task() for t in grid.tiles], count)[index]}
    return [t for t in grid.tiles if t.key in keys]


def prepare(req: EverythingRequest) -> Prepared:
    """Validate every input before any model is loaded."""
    out = str(req.out)
    if req.shard is None and not out.lower().endswith(".gpkg"):
        raise InputError(out, "output must be a GeoPackage (.gpkg)")
    if req.shard is not None and out.lower().endswith(".gpkg"):
        raise InputError(
            out, "with --shard the output is a folder of tiles for merge-everything, not a .gpkg"
        )
    if req.shard is None:
        check_output_file(out, "--out")
    else:
        check_output_folder(out, "--out")
    if req.resume_dir:
        check_output_folder(req.resume_dir, "--resume-dir")
    ortho = str(storage.fetch(req.ortho, req.cache_dir, what="raster"))
    info = raster_info(ortho)
    bands = check_rgb_bands(info, req.params.rgb_bands)
    stretch = compute_stretch(ortho, bands)
    grid = tile_grid(info.width, info.height, req.params.tile, req.params.padding)
    tiles = list(grid.tiles) if req.shard is None else shard_tiles(grid, *req.shard)
    return Prepared(ortho, info, stretch, grid, tiles)


def build_generator(req: EverythingRequest) -> tuple[MaskGenerator, dict]:
    """SAM2 (checkpoint or, asked for explicitly, untrained) inside SAM2's automatic mask generator."""
    from crownsam.pseudolabel.sam2_model import build_sam2_model

    s = req.sam2
    device = resolve_device(s.device)
    net = build_sam2_model(
        s.model, s.checkpoint, untrained=s.untrained, device=device, cache_dir=req.cache_dir
    )
    gen = AmgGenerator.from_model(net, req.params, name=s.model, untrained=s.untrained)
    return gen, {"device": str(device), "checkpoint": s.checkpoint}


def base_summary(req: EverythingRequest, prep: Prepared, generator: MaskGenerator, key: str) -> dict:
    """What every summary of this run says: inputs, model, parameters, grid."""
    g = prep.grid
    summary = {
        "ortho": req.ortho,
        "model": generator.name,
        "untrained": bool(generator.untrained),
        "run_key": key,
        "params": req.params.as_dict(),
        "raster": {
            "width": prep.info.width,
            "height": prep.info.height,
            "crs": prep.info.crs,
            "transform": list(prep.info.transform),
        },
        "grid": {"tile": g.tile, "padding": g.padding, "rows": g.rows, "cols": g.cols, "tiles": len(g.tiles)},
    }
    if generator.untrained:
        from crownsam.pseudolabel.sam2_model import UNTRAINED_WARNING

        summary["WARNING"] = UNTRAINED_WARNING
    return summary


def run_segment_everything(req: EverythingRequest, generator: MaskGenerator | None = None) -> dict:
    """Validate, build SAM2 (unless a generator is given), run the tiles, then merge (or write the shard).

    Finished tiles are kept under ``OUT.parts`` (or ``resume_dir``) while the run is in progress, so a
    retried run skips them; they are removed once the outputs are written.
    """
    prep = prepare(req)
    extra: dict = {}
    start_workers(req.loop.settings())  # they start while SAM2 loads
    if generator is None:
        generator, extra = build_generator(req)
    key = run_key(
        prep.info, prep.stretch, req.params, generator.name, req.sam2.checkpoint, generator.untrained
    )
    temporary = req.resume_dir == ""
    parts = (
        tempfile.mkdtemp(prefix="crownsam-everything-")
        if temporary
        else (req.resume_dir or str(req.out).rstrip("/").removesuffix(".gpkg") + ".parts")
    )
    store = TileStore(storage.join(parts, key), key)
    try:
        run = segment_tiles(
            prep.ortho,
            prep.grid,
            prep.tiles,
            generator,
            req.params,
            prep.stretch,
            store,
            progress=req.progress,
            loop=req.loop,
        )
        summary = base_summary(req, prep, generator, key) | extra
        summary |= {
            "tiles_planned": len(prep.tiles),
            "tiles_processed": run.processed,
            "tiles_resumed": run.resumed,
            "seconds_total": round(run.seconds_total, 3),
            "seconds_in_model": round(run.seconds_in_model, 3),
        }
        if req.shard is not None:
            summary |= {"shard": list(req.shard), "tiles": run.tiles}
            write_shard_folder(str(req.out), store, [t["key"] for t in run.tiles], summary)
            summary = summary | tiles_block(run.tiles)
        else:
            summary = write_outputs(
                req.out,
                summary_path(req.out, req.summary),
                summary,
                prep.grid,
                store.get,
                run.tiles,
                req.cache_dir,
            )
    finally:
        if temporary:
            shutil.rmtree(parts, ignore_errors=True)
    if not temporary:
        storage.delete_prefix(parts)
    return summary


def write_outputs(
    out: str,
    summary_uri: str,
    summary: dict,
    grid: TileGrid,
    source: TileSource,
    tiles: list[dict],
    cache_dir: str | None,
) -> dict:
    """Merge ``source``'s tiles into ``out`` (GeoPackage) and write the summary beside it, atomically."""
    t0 = time.perf_counter()
    raster = summary["raster"]
    with (
        storage.local_output(out, cache_dir) as out_local,
        storage.local_output(summary_uri, cache_dir) as summary_local,
        atomic_paths(out_local, summary_local) as (gpkg_tmp, summary_tmp),
    ):
        n, stats = write_merged(
            grid,
            source,
            gpkg_tmp,
            transform=Affine(*raster["transform"][:6]),
            crs=raster["crs"] or "",
            model=summary["model"],
            untrained=summary["untrained"],
        )
        summary = summary | tiles_block(tiles)
        summary |= {
            "objects": n,
            "merge": {
                "seams": stats.seams,
                "seam_candidates": stats.candidates,
                "pairs_merged": stats.pairs_merged,
                "objects_from_several_tiles": stats.groups_merged,
                "multipart_kept_largest": stats.multipart_kept_largest,
                "orphans_extended": stats.extended,
                "orphans_extended_px": stats.extended_px,
                "seconds": round(time.perf_counter() - t0, 3),
            },
        }
        summary_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return summary


SUMMED = ("tiles_planned", "tiles_processed", "tiles_resumed")


def merge_everything(
    inputs: list[str], out: str, summary: str | None = None, cache_dir: str | None = None
) -> dict:
    """Merge finished shard folders (one run, every shard once) into ``out`` and its summary."""
    if not str(out).lower().endswith(".gpkg"):
        raise InputError(out, "output must be a GeoPackage (.gpkg)")
    check_output_file(out, "--out")
    if not inputs:
        raise InputError(out, "no shard folders to merge")
    shards = [read_shard_summary(f) for f in inputs]
    if len({s.get("run_key") for s in shards}) != 1:
        raise InputError(inputs[0], "shards come from different runs (raster, model or settings differ)")
    counts = {int(s["shard"][1]) if s.get("shard") else None for s in shards}
    if None in counts or len(counts) != 1:
        raise InputError(inputs[0], "not the shard folders of one sharded run (shard counts differ)")
    n = int(next(iter(counts)) or 0)
    got = sorted(int(s["shard"][0]) for s in shards)
    if got != list(range(n)):
        missing = sorted(set(range(n)) - set(got))
        dup = sorted(i for i, c in Counter(got).items() if c > 1)
        raise InputError(inputs[0], f"shards of {n}: missing {missing or 'none'}, duplicated {dup or 'none'}")
    first = shards[0]
    grid = tile_grid(
        first["raster"]["width"], first["raster"]["height"], first["grid"]["tile"], first["grid"]["padding"]
    )
    folders: dict[str, str] = {}
    tiles: list[dict] = []
    for folder, s in zip(inputs, shards, strict=True):
        for t in s["tiles"]:
            folders[t["key"]] = folder
            tiles.append(t)
    lacking = sorted({t.key for t in grid.tiles} - set(folders))
    if lacking:
        raise InputError(inputs[0], f"the shards lack {len(lacking)} tile(s), e.g. {lacking[0]}")
    merged = {k: v for k, v in first.items() if k not in (*SUMMED, "shard", "tiles")}
    merged |= {k: sum(int(s.get(k) or 0) for s in shards) for k in SUMMED}
    merged |= {
        "shards": len(shards),
        "seconds_total": round(sum(s["seconds_total"] for s in shards), 3),
        "seconds_in_model": round(sum(s["seconds_in_model"] for s in shards), 3),
        "seconds_total_max_shard": round(max(s["seconds_total"] for s in shards), 3),
    }
    source = shard_source(folders, first["run_key"])
    return write_outputs(out, summary_path(out, summary), merged, grid, source, tiles, cache_dir)


def segment_everything_shard_artifact(
    ortho_uri: str,
    out_dir: str,
    out_uri: str,
    shard: int,
    shards: int,
    sam2: Sam2Params,
    params: EverythingParams,
    switch: PipelineFindMissed,
    loop: WindowLoopParams | None = None,
) -> dict:
    """The KFP shard step: shard ``shard`` of ``shards`` into the folder ``out_dir``; finished tiles are kept
    under ``<out_uri>.parts`` (the artifact's URI, stable across retries of the task). With the switch off:
    only a note, no model loaded."""
    if not switch.find_missed:
        return write_skipped(out_dir)
    req = EverythingRequest(
        ortho=ortho_uri,
        out=out_dir,
        params=params,
        sam2=sam2,
        shard=(shard, shards),
        progress=False,
        resume_dir=str(out_uri).rstrip("/") + ".parts",
        loop=loop or WindowLoopParams(),
    )
    return run_segment_everything(req)


def shard_numbers(shards: int, switch: PipelineFindMissed) -> list[int]:
    """The pipeline's shard loop: ``0 .. shards-1``, or ``[0]`` (one no-op shard) with the switch off."""
    if shards < 1:
        raise InputError("shards", f"must be at least 1, got {shards}")
    return list(range(shards)) if switch.find_missed else [0]


def write_skipped(out_dir: str) -> dict:
    """The artifact of a step the switch turned off: a folder holding one note saying so."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    note = {"find_missed": False, "note": "segment-everything is off (pipeline parameter find_missed)"}
    (Path(out_dir) / SKIPPED_NOTE).write_text(json.dumps(note) + "\n", encoding="utf-8")
    return {}


def merge_everything_artifacts(
    parts: list[str], out_dir: str, switch: PipelineFindMissed
) -> dict[str, float]:
    """The KFP merge step: shard folders into ``out_dir/masks.gpkg`` + summary; returns KFP metrics. With
    the switch off: only a note."""
    if not switch.find_missed:
        return write_skipped(out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    s = merge_everything(parts, str(Path(out_dir) / ARTIFACT_MASKS))
    metrics = {"objects": float(s["objects"]), "coverage": float(s["coverage"] or 0.0)}
    for i, c in enumerate(s["coverage_per_pass"], start=1):
        metrics[f"coverage_pass_{i}"] = float(c)
    return metrics
