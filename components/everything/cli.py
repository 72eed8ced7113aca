"""``crownsam segment-everything``, ``crownsam merge-everything`` and ``crownsam add-missed``."""

from __future__ import annotations

import argparse
import json

from crownsam.common.cli_util import shard_arg
from crownsam.common.params import add_options
from crownsam.everything.params import AddMissedParams, EverythingParams
from crownsam.pseudolabel.cli import add_sam2_options
from crownsam.pseudolabel.params import Sam2Params


def run_segment(args: argparse.Namespace) -> int:
    from crownsam.everything.api import EverythingRequest, run_segment_everything, summary_path

    req = EverythingRequest(
        ortho=args.ortho,
        out=args.out,
        params=EverythingParams.from_args(args),
        sam2=Sam2Params.from_args(args),
        shard=args.shard,
        summary=args.summary,
        resume_dir=args.resume_dir,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    s = run_segment_everything(req)
    per_pass = ", ".join(f"{c:.3f}" for c in s["coverage_per_pass"])
    where = (
        f"shard {args.shard[0]}/{args.shard[1]} -> {args.out} (merge with merge-everything)"
        if args.shard
        else f"{s['objects']} objects -> {args.out} (summary {summary_path(args.out, args.summary)})"
    )
    print(
        f"crownsam: {s['tiles_planned']} tiles, coverage per pass [{per_pass}]; {where}"
        + ("; UNTRAINED SAM2: these masks are meaningless" if s["untrained"] else "")
    )
    return 0


def add_segment_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "segment-everything",
        help="multi-pass SAM2 automatic masks over a whole orthophoto, tile seams merged",
        description="Tiles the orthophoto, runs SAM2's automatic mask generator several times per tile "
        "(accepted masks painted black, thresholds relaxed when a pass stalls) and merges objects cut by "
        "tile edges. Rules: components/everything/README.md.",
    )
    s.add_argument("--ortho", required=True, help="orthophoto GeoTIFF (path or gs:// URI)")
    s.add_argument(
        "--out",
        required=True,
        help="objects GeoPackage (path or gs://); with --shard, a folder of tiles for merge-everything",
    )
    add_options(s, EverythingParams)
    add_sam2_options(s)
    s.add_argument("--shard", type=shard_arg, help="process only shard I of N of the tiles, e.g. 0/4")
    s.add_argument("--summary", help="run summary JSON (default OUT with .summary.json)")
    s.add_argument(
        "--resume-dir",
        help="keep finished tiles here (folder or gs:// prefix) so a retried run skips them; removed on "
        "success (default OUT.parts; '' disables)",
    )
    s.add_argument("--cache-dir", help="checkpoint cache (default $CROWNSAM_CACHE or ~/.cache/crownsam)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run_segment)


def run_merge(args: argparse.Namespace) -> int:
    from crownsam.everything.api import merge_everything, summary_path

    s = merge_everything(args.inputs, args.out, args.summary, args.cache_dir)
    print(
        f"crownsam: merged {s['shards']} shard(s): {s['objects']} objects -> {args.out} "
        f"(summary {summary_path(args.out, args.summary)})"
        + ("; UNTRAINED SAM2: these masks are meaningless" if s["untrained"] else "")
    )
    return 0


def add_merge_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("merge-everything", help="merge segment-everything shard folders into one GeoPackage")
    m.add_argument("--inputs", nargs="+", required=True, help="shard folders (every shard of one run, once)")
    m.add_argument("--out", required=True, help="objects GeoPackage (path or gs://)")
    m.add_argument("--summary", help="summary JSON (default OUT with .summary.json)")
    m.add_argument("--cache-dir", help="staging folder for gs:// outputs")
    m.set_defaults(func=run_merge)


def run_add_missed(args: argparse.Namespace) -> int:
    from crownsam.everything.add_missed import add_missed_files

    s = add_missed_files(
        args.labels,
        args.masks,
        args.ortho,
        args.out,
        chm=args.chm,
        params=AddMissedParams.from_args(args),
        summary=args.summary,
        cache_dir=args.cache_dir,
    )
    dropped = json.dumps({k: v for k, v in s["dropped"].items() if v})
    print(f"crownsam: added {s['added']} of {s['objects']} objects -> {args.out}; dropped {dropped}")
    return 0


def add_missed_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "add-missed",
        help="add segment-everything objects that no label covers and that look like crowns",
        description="Objects that overlap no existing label and look like a crown (area, compactness, NDVI, "
        "CHM height) become new labels with label_source=amg. Rules: components/everything/README.md.",
    )
    a.add_argument("--labels", required=True, help="existing labels, e.g. pseudolabels (path or gs://)")
    a.add_argument("--masks", required=True, help="segment-everything objects (path or gs://)")
    a.add_argument("--ortho", required=True, help="orthophoto GeoTIFF, for NDVI (path or gs://)")
    a.add_argument("--out", required=True, help="completed labels GeoPackage (path or gs://)")
    a.add_argument("--chm", help="canopy height model GeoTIFF (optional; enables the height rule)")
    add_options(a, AddMissedParams)
    a.add_argument("--summary", help="summary JSON (default OUT with .summary.json)")
    a.add_argument("--cache-dir", help="download cache for gs:// inputs")
    a.set_defaults(func=run_add_missed)


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_segment_parser(sub)
    add_merge_parser(sub)
    add_missed_parser(sub)
