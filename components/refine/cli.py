"""``crownsam refine``."""

from __future__ import annotations

import argparse
import json

from crownsam.common.params import add_options
from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.everything.params import EverythingParams
from crownsam.pseudolabel.cli import add_sam2_options
from crownsam.pseudolabel.params import PseudolabelParams, Sam2Params
from crownsam.refine.params import RefineParams

# The pseudolabel settings the box method takes from the command line (the rest are fixed: box_prompting).
BOX_OPTIONS = (
    "batch_size",
    "fallback_min_area_ratio",
    "fallback_max_area_ratio",
    "fallback_min_iou",
    "fallback_min_score",
)


def run(args: argparse.Namespace) -> int:
    from crownsam.refine.api import RefineRequest, RefineSetup, run_refine, summary_path

    setup = RefineSetup(
        params=RefineParams.from_args(args),
        sam2=Sam2Params.from_args(args),
        prompting=PseudolabelParams.from_args(args),
        everything=EverythingParams.from_args(args),
        loop=WindowLoopParams.from_args(args),
        masks=args.masks,
        tune_truth=args.tune_truth,
        tune_area=args.tune_area,
        tune_coco=args.tune_coco,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    req = RefineRequest(
        ortho=args.ortho,
        predictions=args.predictions,
        out=args.out,
        setup=setup,
        summary=args.summary,
        run_id=args.run_id,
        tracking_uri=args.tracking_uri,
    )
    s = run_refine(req)
    tuned = s.get("tune")
    print(
        f"crownsam: {s['method']}: {s['crowns_out']} of {s['crowns_in']} crowns -> {args.out} "
        f"(summary {summary_path(args.out, args.summary)}); refined_by {json.dumps(s['refined_by'])}"
        + (f"; tuned t1 {tuned['t1']:g}, t2 {tuned['t2']:g}" if tuned else "")
        + ("; UNTRAINED SAM2: these outlines are meaningless" if s["untrained"] else "")
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "refine",
        help="sharpen predicted crowns with SAM2: box re-prompting or SESSRS object voting",
        description="Refines predicted crowns (e.g. from `crownsam predict`): box re-prompts SAM2 with each "
        "crown's box and keeps the mask unless it fails the fallback checks; sessrs replaces each crown by "
        "the SAM objects that support it (thresholds t1, t2; --tune picks them on validation crowns). "
        "Rules: components/refine/README.md.",
    )
    r.add_argument("--ortho", required=True, help="orthophoto GeoTIFF (path or gs:// URI)")
    r.add_argument(
        "--predictions", required=True, help="predicted crowns, any OGR polygon file (path or gs://)"
    )
    r.add_argument("--out", required=True, help="refined crowns GeoPackage (path or gs://)")
    add_options(r, RefineParams)
    r.add_argument(
        "--masks",
        help="sessrs: SAM objects from `crownsam segment-everything` (default: made over the crowns)",
    )
    r.add_argument("--tune-truth", help="--tune: validation crowns (manual crowns, path or gs://)")
    r.add_argument("--tune-area", help="--tune: the area the validation crowns cover (default their extent)")
    r.add_argument("--tune-coco", help="--tune: a `crownsam export-coco` folder; its val labels validate")
    add_sam2_options(r)
    add_options(r, WindowLoopParams, only=("workers",))
    box = r.add_argument_group("box method (SAM2 prompting and fallback)")
    add_options(box, PseudolabelParams, only=BOX_OPTIONS)
    amg = r.add_argument_group("sessrs without --masks (SAM objects made over the crowns)")
    add_options(amg, EverythingParams, skip=("rgb_bands",))
    r.add_argument("--summary", help="run summary JSON (default OUT with .summary.json)")
    r.add_argument(
        "--run-id", help="--tune: MLflow run to record the choice in (default: from predict's summary)"
    )
    r.add_argument("--tracking-uri", help="--tune: MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    r.add_argument("--cache-dir", help="checkpoint cache (default $CROWNSAM_CACHE or ~/.cache/crownsam)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=run)
