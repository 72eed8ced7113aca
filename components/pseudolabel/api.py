"""File-level entry point for pseudolabeling, shared by the CLI and the KFP component."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from crownsam.common.atomic import atomic_paths
from crownsam.common.errors import InputError
from crownsam.common.vector import read_segments
from crownsam.pseudolabel.predictor import BoxPredictor
from crownsam.pseudolabel.run import pseudolabel_plan, summarize
from crownsam.tiling.plan import Plan, check_plan_matches, plan_from_files, shard_plan

log = logging.getLogger(__name__)

LAYER = "pseudolabels"


@dataclass
class PseudolabelRequest:
    """Everything ``crownsam pseudolabel`` takes, as plain values."""

    ortho: str
    segments: str
    out: str
    plan: str | None = None
    shard: tuple[int, int] | None = None
    model: str = "sam2.1_hiera_t"
    checkpoint: str | None = None
    untrained: bool = False
    rgb_bands: tuple[int, ...] | None = None  # None: the plan's, or 3,2,1
    device: str = "auto"
    batch_size: int = 16
    summary: str | None = None
    fix_geometries: bool = False
    cache_dir: str | None = None
    progress: bool = True


def summary_path(req: PseudolabelRequest) -> Path:
    """Where the run summary goes: ``--summary`` or ``OUT`` with ``.summary.json``."""
    return Path(req.summary) if req.summary else Path(req.out).with_suffix(".summary.json")


def prepare(req: PseudolabelRequest) -> tuple[Plan, object]:
    """Validate every input (before any model is loaded) and return the plan to run and the segments."""
    if Path(req.out).suffix.lower() != ".gpkg":
        raise InputError(req.out, "output must be a GeoPackage (.gpkg)")
    if req.batch_size < 1:
        raise InputError(None, f"--batch-size must be >= 1, got {req.batch_size}")
    if req.plan:
        plan = Plan.load(req.plan)
        check_plan_matches(plan, req.plan, req.ortho, req.segments)
        if req.rgb_bands is not None and tuple(req.rgb_bands) != tuple(plan.rgb_bands):
            raise InputError(
                req.plan,
                f"plan was made for --rgb-bands {','.join(map(str, plan.rgb_bands))}; re-run tile for "
                f"{','.join(map(str, req.rgb_bands))}",
            )
        segments, report = read_segments(req.segments, plan.crs, fix_geometries=req.fix_geometries)
    else:
        plan, segments, report = plan_from_files(
            req.ortho, req.segments, rgb_bands=req.rgb_bands or (3, 2, 1), fix_geometries=req.fix_geometries
        )
    for note in report.notes:
        log.warning(note)
    if req.shard:
        index, count = req.shard
        try:
            plan = shard_plan(plan, index, count)
        except ValueError as exc:
            raise InputError(req.plan, str(exc)) from exc
    return plan, segments


def run_pseudolabel(req: PseudolabelRequest, predictor: BoxPredictor | None = None) -> dict:
    """Validate inputs, build SAM2 (unless a predictor is given), pseudolabel, write GPKG + summary."""
    plan, segments = prepare(req)
    extra: dict = {"rgb_bands": list(plan.rgb_bands)}
    if predictor is None:
        from crownsam.pseudolabel.sam2_model import Sam2BoxPredictor, build_sam2_model, resolve_device

        device = resolve_device(req.device)
        net = build_sam2_model(
            req.model, req.checkpoint, untrained=req.untrained, device=device, cache_dir=req.cache_dir
        )
        predictor = Sam2BoxPredictor(net, name=req.model, untrained=req.untrained)
        extra |= {"device": str(device), "checkpoint": req.checkpoint}
    result = pseudolabel_plan(
        plan, segments, predictor, ortho_path=req.ortho, batch_size=req.batch_size, progress=req.progress
    )
    summary = summarize(plan, result, predictor, extra)
    with atomic_paths(req.out, summary_path(req)) as (gpkg_tmp, summary_tmp):
        result.labels.to_file(gpkg_tmp, layer=LAYER, driver="GPKG")
        summary_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return summary
