"""File-level entry point for pseudolabeling, shared by the CLI and the KFP component.

Inputs and outputs may be local paths or ``gs://`` URIs: remote inputs are fetched once into the cache
(``$CROWNSAM_CACHE``), remote outputs are written locally and uploaded when complete.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
from rasterio import Affine

from crownsam.common import storage
from crownsam.common.atomic import atomic_paths, check_output_file, check_output_folder
from crownsam.common.errors import InputError
from crownsam.common.raster import open_raster, raster_info
from crownsam.common.vector import ID_COLUMN, ReadReport, read_segments
from crownsam.common.window_pipeline import WindowLoopParams, start_workers
from crownsam.pseudolabel.exclusive import CLAIMS_SUFFIX
from crownsam.pseudolabel.params import PseudolabelParams, Sam2Params
from crownsam.pseudolabel.predictor import PromptPredictor
from crownsam.pseudolabel.resume import WindowStore, run_key
from crownsam.pseudolabel.run import NDVI, TREETOP_X, TREETOP_Y, pseudolabel_plan, resolve_run, summarize
from crownsam.pseudolabel.treetops import find_treetops
from crownsam.pseudolabel.vegetation import NIR_NAMES, RED_NAMES, find_band, median_ndvi, ndvi_bands
from crownsam.tiling.params import TileParams
from crownsam.tiling.plan import (
    Plan,
    check_plan_matches,
    effective_shards,
    pixel_geometries,
    plan_from_files,
    shard_plan,
)

log = logging.getLogger(__name__)

LAYER = "pseudolabels"


@dataclass
class PseudolabelRequest:
    """One pseudolabel run: where things are (paths or gs:// URIs), which SAM2, and how to label."""

    ortho: str
    segments: str
    out: str
    plan: str | None = None
    chm: str | None = None  # canopy height model: treetops of segments given without treetop columns
    shard: tuple[int, int] | None = None
    summary: str | None = None
    cache_dir: str | None = None
    progress: bool = True
    resume_dir: str | None = None  # None: OUT + ".parts"; "" disables resuming
    sam2: Sam2Params = field(default_factory=Sam2Params)
    params: PseudolabelParams = field(default_factory=PseudolabelParams)
    loop: WindowLoopParams = field(default_factory=WindowLoopParams)


def summary_path(req: PseudolabelRequest) -> str:
    """Where the run summary goes: ``--summary`` or ``OUT`` with ``.summary.json``."""
    return req.summary or str(req.out).removesuffix(".gpkg") + ".summary.json"


def claims_path(out: str) -> str:
    """Where a sharded run keeps its labels' logits for the cross-window exclusive step (merge-labels)."""
    return str(out).removesuffix(".gpkg") + CLAIMS_SUFFIX


def resume_uri(req: PseudolabelRequest) -> str | None:
    """Where finished windows are kept until the run completes (None: no resuming)."""
    if req.resume_dir == "":
        return None
    return req.resume_dir or str(req.out).removesuffix(".gpkg") + ".parts"


@dataclass
class Prepared:
    """What :func:`prepare` found: the plan to run, the segments (raster CRS, with treetop and NDVI
    columns where asked for), the local orthophoto path, and summary entries."""

    plan: Plan
    segments: gpd.GeoDataFrame
    ortho: str
    summary: dict = field(default_factory=dict)


def prepare(req: PseudolabelRequest) -> Prepared:
    """Validate every input (before any model is loaded), apply the vegetation filter and find the
    treetops; return what the run needs."""
    if not str(req.out).lower().endswith(".gpkg"):
        raise InputError(req.out, "output must be a GeoPackage (.gpkg)")
    check_output_file(req.out, "--out")
    parts = resume_uri(req)
    if parts:
        check_output_folder(parts, "--resume-dir")
    p = req.params
    ortho = str(storage.fetch(req.ortho, req.cache_dir, what="raster"))
    segments = str(storage.fetch(req.segments, req.cache_dir, what="segments file"))
    use_chm = bool(req.chm) and p.needs_treetops
    chm = str(storage.fetch(req.chm, req.cache_dir, what="CHM")) if use_chm and req.chm else None
    if req.plan:
        plan_local = str(storage.fetch(req.plan, req.cache_dir, what="window plan"))
        plan = Plan.load(plan_local)
        check_plan_matches(plan, req.plan, ortho, segments)
        bands = p.rgb_bands
        if bands is not None and tuple(bands) != tuple(plan.rgb_bands):
            raise InputError(
                req.plan,
                f"plan was made for --rgb-bands {','.join(map(str, plan.rgb_bands))}; re-run tile for "
                f"{','.join(map(str, bands))}",
            )
        gdf, report = read_segments(segments, plan.crs, fix_geometries=p.fix_geometries)
    else:
        tile = TileParams(rgb_bands=p.rgb_bands or (3, 2, 1), fix_geometries=p.fix_geometries)
        plan, gdf, report = plan_from_files(ortho, segments, tile)
        plan.segments = req.segments
    plan.ortho = req.ortho
    for note in report.notes:
        log.warning(note)
    if req.shard:
        index, count = req.shard
        try:
            plan = shard_plan(plan, index, count)
        except ValueError as exc:
            raise InputError(req.plan, str(exc)) from exc
    info = raster_info(ortho)
    out = Prepared(plan, gdf, ortho)
    for given, names, flag, what in (
        (p.red_band, RED_NAMES, "--red-band", "red"),
        (p.nir_band, NIR_NAMES, "--nir-band", "NIR"),
    ):
        if given is not None:
            find_band(info, given, names, flag, what)  # a band out of range is an error even when unused
    if p.min_ndvi is not None:
        out.summary["vegetation"] = vegetation_filter(out, ortho, p)
    if p.needs_treetops:
        out.summary["treetop_sources"] = add_treetops(
            out, req.segments, segments, report, chm, info.transform
        )
    elif req.chm:
        log.info(
            "%s: --chm is only used for treetops (--prompt point or box+point, or "
            "--negative-calibration); ignored",
            req.chm,
        )
    return out


def vegetation_filter(prep: Prepared, ortho: str, p: PseudolabelParams) -> dict:
    """Drop the planned segments whose median NDVI is below ``p.min_ndvi`` (reason ``low_ndvi``, with
    their NDVI); windows left without segments are dropped too. Reads the red and NIR bands by windows."""
    info = raster_info(ortho)
    red, nir = ndvi_bands(info, p.red_band, p.nir_band)
    plan, gdf = prep.plan, prep.segments
    by_id = gdf.set_index(ID_COLUMN, drop=False)
    transform = Affine(*plan.transform[:6])
    values: dict[int, float] = {}
    with open_raster(ortho) as src:
        for w in plan.windows:
            pix = pixel_geometries(by_id.loc[w.segment_ids], transform)
            for sid, v in zip(w.segment_ids, median_ndvi(src, pix, red, nir), strict=True):
                values[int(sid)] = float(v)
    threshold = p.min_ndvi if p.min_ndvi is not None else -np.inf
    low = {sid for sid, v in values.items() if v < threshold}  # NaN (no valid pixel) is kept
    before = len(plan.windows)
    for w in plan.windows:
        w.segment_ids = [s for s in w.segment_ids if s not in low]
    plan.windows = [w for w in plan.windows if w.segment_ids]
    plan.skipped = list(plan.skipped) + [
        {"segment_id": sid, "reason": "low_ndvi", "ndvi": round(values[sid], 4)} for sid in sorted(low)
    ]
    prep.segments = gdf.assign(**{NDVI: gdf[ID_COLUMN].map(values).astype(float)})
    log.info("vegetation filter: %d of %d segments below NDVI %g", len(low), len(values), p.min_ndvi)
    return {
        "min_ndvi": p.min_ndvi,
        "red_band": red,
        "nir_band": nir,
        "dropped": len(low),
        "kept": len(values) - len(low),
        "windows_emptied": before - len(plan.windows),
    }


def add_treetops(
    prep: Prepared, source: str, segments_local: str, report: ReadReport, chm: str | None, transform: tuple
) -> dict[str, int]:
    """Treetop columns for the planned segments (see :mod:`crownsam.pseudolabel.treetops`); returns how
    many segments used each source."""
    import pyogrio

    gdf = prep.segments
    planned = [sid for w in prep.plan.windows for sid in w.segment_ids]
    pos = {int(s): i for i, s in enumerate(gdf[ID_COLUMN])}
    idx = np.asarray([pos[int(s)] for s in planned], dtype=np.int64)
    sub = gdf.iloc[idx]
    file_crs = pyproj.CRS.from_user_input(gdf.crs)
    if report.reprojected_from:
        file_crs = pyproj.CRS.from_user_input(pyogrio.read_info(segments_local)["crs"])
    groups, start = [], 0
    for w in prep.plan.windows:
        groups.append(np.arange(start, start + len(w.segment_ids)))
        start += len(w.segment_ids)
    pixel_size = float(np.sqrt(abs(Affine(*transform[:6]).determinant)))
    tops = find_treetops(sub, source=source, file_crs=file_crs, pixel_size=pixel_size, chm=chm, groups=groups)
    xy = np.full((len(gdf), 2), np.nan)
    xy[idx] = tops.xy
    prep.segments = gdf.assign(**{TREETOP_X: xy[:, 0], TREETOP_Y: xy[:, 1]})
    return tops.counts()


def run_pseudolabel(req: PseudolabelRequest, predictor: PromptPredictor | None = None) -> dict:
    """Validate inputs, build SAM2 (unless a predictor is given), pseudolabel, write GPKG + summary.

    Finished windows are kept under :func:`resume_uri` while the run is in progress, so a retried run
    skips them; they are removed once both outputs are written. With ``exclusive``, an unsharded run
    resolves pixels contested across windows itself; a shard writes its labels' claims beside its output
    (:func:`claims_path`) for ``merge-labels`` to do it.
    """
    prep = prepare(req)
    plan = prep.plan
    extra: dict = {"rgb_bands": list(plan.rgb_bands), "plan": req.plan, "chm": req.chm} | prep.summary
    extra["settings"] = req.params.as_dict()
    extra["window_loop"] = {"workers": req.loop.settings().workers, "window_batch": req.loop.window_batch}
    start_workers(req.loop.settings())  # they start while SAM2 loads
    if predictor is None:
        from crownsam.pseudolabel.sam2_model import sam2_box_predictor

        predictor = sam2_box_predictor(req.sam2, req.cache_dir)
        extra |= {"device": str(getattr(predictor, "device", "")), "checkpoint": req.sam2.checkpoint}
    parts = resume_uri(req)
    settings = req.params.as_dict() | {"chm": req.chm}
    key = run_key(
        plan, predictor.name, req.sam2.checkpoint, predictor.untrained, req.params.batch_size, settings
    )
    store = WindowStore(storage.join(parts, key), key) if parts else None
    result = pseudolabel_plan(
        plan,
        prep.segments,
        predictor,
        params=req.params,
        ortho_path=prep.ortho,
        progress=req.progress,
        store=store,
        loop=req.loop,
    )
    pending = req.params.exclusive and plan.shard is not None
    if req.params.exclusive and not pending:
        resolve_run(result, plan)
    result.exclusive_pending = pending
    summary = summarize(plan, result, predictor, extra | {"run_key": key})
    outs = [req.out, summary_path(req)] + ([claims_path(req.out)] if pending else [])
    with ExitStack() as stack:
        locals_ = [stack.enter_context(storage.local_output(u, req.cache_dir)) for u in outs]
        tmps = stack.enter_context(atomic_paths(*locals_))
        result.labels.to_file(tmps[0], layer=LAYER, driver="GPKG")
        tmps[1].write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
        if pending:
            claims = [c.to_dict() for _, c in sorted(result.claims.in_file_order(), key=lambda p: p[0])]
            tmps[2].write_text(json.dumps({"run_key": key, "claims": claims}) + "\n")
    if parts:
        storage.delete_prefix(parts)
    return summary


ARTIFACT_LABELS = "pseudolabels.gpkg"


def pseudolabel_shard_artifact(
    ortho_uri: str,
    segments: str,
    plan: str,
    out_dir: str,
    out_uri: str,
    shard: int,
    shards: int,
    sam2: Sam2Params,
    params: PseudolabelParams,
    chm: str | None = None,
    loop: WindowLoopParams | None = None,
) -> dict:
    """The KFP step: one shard into the folder ``out_dir`` (pseudolabels.gpkg + summary, and the claims
    for the cross-window exclusive step); finished windows are kept under ``<out_uri>.parts`` (the
    artifact's URI, stable across retries of the task)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    shards = effective_shards(shards, len(Plan.load(plan).windows))  # as the tile step counted them
    req = PseudolabelRequest(
        ortho=ortho_uri,
        segments=segments,
        out=str(Path(out_dir) / ARTIFACT_LABELS),
        plan=plan,
        chm=chm or None,
        shard=(shard, shards),
        progress=False,
        resume_dir=str(out_uri).rstrip("/") + ".parts",
        sam2=sam2,
        params=params,
        loop=loop or WindowLoopParams(),
    )
    return run_pseudolabel(req)
