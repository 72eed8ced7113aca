"""File-level entry point for pseudolabeling, shared by the CLI and the KFP component.

Inputs and outputs may be local paths or ``gs://`` URIs: remote inputs are fetched once into the cache
(``$CROWNSAM_CACHE``), remote outputs are written locally and uploaded when complete.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from crownsam.common import storage
from crownsam.common.atomic import atomic_paths, check_output_folder
from crownsam.common.errors import InputError
from crownsam.common.vector import read_segments
from crownsam.pseudolabel.params import PseudolabelParams, Sam2Params
from crownsam.pseudolabel.predictor import BoxPredictor
from crownsam.pseudolabel.resume import WindowStore, run_key
from crownsam.pseudolabel.run import pseudolabel_plan, summarize
from crownsam.tiling.params import TileParams
from crownsam.tiling.plan import Plan, check_plan_matches, effective_shards, plan_from_files, shard_plan

log = logging.getLogger(__name__)

LAYER = "pseudolabels"


@dataclass
class PseudolabelRequest:
    """One pseudolabel run: where things are (paths or gs:// URIs), which SAM2, and how to label."""

    ortho: str
    segments: str
    out: str
    plan: str | None = None
    shard: tuple[int, int] | None = None
    summary: str | None = None
    cache_dir: str | None = None
    progress: bool = True
    resume_dir: str | None = None  # None: OUT + ".parts"; "" disables resuming
    sam2: Sam2Params = field(default_factory=Sam2Params)
    params: PseudolabelParams = field(default_factory=PseudolabelParams)


def summary_path(req: PseudolabelRequest) -> str:
    """Where the run summary goes: ``--summary`` or ``OUT`` with ``.summary.json``."""
    return req.summary or str(req.out).removesuffix(".gpkg") + ".summary.json"


def resume_uri(req: PseudolabelRequest) -> str | None:
    """Where finished windows are kept until the run completes (None: no resuming)."""
    if req.resume_dir == "":
        return None
    return req.resume_dir or str(req.out).removesuffix(".gpkg") + ".parts"


def prepare(req: PseudolabelRequest) -> tuple[Plan, object, str]:
    """Validate every input (before any model is loaded); return the plan to run, the segments and the
    local orthophoto path."""
    if not str(req.out).lower().endswith(".gpkg"):
        raise InputError(req.out, "output must be a GeoPackage (.gpkg)")
    parts = resume_uri(req)
    if parts:
        check_output_folder(parts, "--resume-dir")
    ortho = str(storage.fetch(req.ortho, req.cache_dir, what="raster"))
    segments = str(storage.fetch(req.segments, req.cache_dir, what="segments file"))
    if req.plan:
        plan_local = str(storage.fetch(req.plan, req.cache_dir, what="window plan"))
        plan = Plan.load(plan_local)
        check_plan_matches(plan, req.plan, ortho, segments)
        bands = req.params.rgb_bands
        if bands is not None and tuple(bands) != tuple(plan.rgb_bands):
            raise InputError(
                req.plan,
                f"plan was made for --rgb-bands {','.join(map(str, plan.rgb_bands))}; re-run tile for "
                f"{','.join(map(str, bands))}",
            )
        gdf, report = read_segments(segments, plan.crs, fix_geometries=req.params.fix_geometries)
    else:
        tile = TileParams(
            rgb_bands=req.params.rgb_bands or (3, 2, 1), fix_geometries=req.params.fix_geometries
        )
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
    return plan, gdf, ortho


def run_pseudolabel(req: PseudolabelRequest, predictor: BoxPredictor | None = None) -> dict:
    """Validate inputs, build SAM2 (unless a predictor is given), pseudolabel, write GPKG + summary.

    Finished windows are kept under :func:`resume_uri` while the run is in progress, so a retried run
    skips them; they are removed once both outputs are written.
    """
    plan, segments, ortho = prepare(req)
    extra: dict = {"rgb_bands": list(plan.rgb_bands), "plan": req.plan}
    if predictor is None:
        from crownsam.pseudolabel.sam2_model import sam2_box_predictor

        predictor = sam2_box_predictor(req.sam2, req.cache_dir)
        extra |= {"device": str(getattr(predictor, "device", "")), "checkpoint": req.sam2.checkpoint}
    parts = resume_uri(req)
    key = run_key(plan, predictor.name, req.sam2.checkpoint, predictor.untrained, req.params.batch_size)
    store = WindowStore(storage.join(parts, key), key) if parts else None
    result = pseudolabel_plan(
        plan,
        segments,
        predictor,
        ortho_path=ortho,
        batch_size=req.params.batch_size,
        progress=req.progress,
        store=store,
    )
    summary = summarize(plan, result, predictor, extra | {"run_key": key})
    with (
        storage.local_output(req.out, req.cache_dir) as out_local,
        storage.local_output(summary_path(req), req.cache_dir) as summary_local,
        atomic_paths(out_local, summary_local) as (gpkg_tmp, summary_tmp),
    ):
        result.labels.to_file(gpkg_tmp, layer=LAYER, driver="GPKG")
        summary_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
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
) -> dict:
    """The KFP step: one shard into the folder ``out_dir`` (pseudolabels.gpkg + summary); finished windows
    are kept under ``<out_uri>.parts`` (the artifact's URI, stable across retries of the task)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    shards = effective_shards(shards, len(Plan.load(plan).windows))  # as the tile step counted them
    req = PseudolabelRequest(
        ortho=ortho_uri,
        segments=segments,
        out=str(Path(out_dir) / ARTIFACT_LABELS),
        plan=plan,
        shard=(shard, shards),
        progress=False,
        resume_dir=str(out_uri).rstrip("/") + ".parts",
        sam2=sam2,
        params=params,
    )
    return run_pseudolabel(req)
