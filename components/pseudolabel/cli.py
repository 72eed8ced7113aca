"""``crownsam pseudolabel``."""

from __future__ import annotations

import argparse
import json

from crownsam.common.cli_util import shard_arg
from crownsam.common.params import add_options
from crownsam.pseudolabel.params import PseudolabelParams, Sam2Params


def add_sam2_options(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    """``--model``, ``--checkpoint`` | ``--untrained`` (mutually exclusive) and ``--device``."""
    add_options(p, Sam2Params, only=("model",))
    add_options(p.add_mutually_exclusive_group(), Sam2Params, only=("checkpoint", "untrained"))
    if device:
        add_options(p, Sam2Params, only=("device",))


def run(args: argparse.Namespace) -> int:
    from crownsam.pseudolabel.api import PseudolabelRequest, run_pseudolabel, summary_path

    req = PseudolabelRequest(
        ortho=args.ortho,
        segments=args.segments,
        out=args.out,
        plan=args.plan,
        chm=args.chm,
        shard=args.shard,
        summary=args.summary,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        resume_dir=args.resume_dir,
        sam2=Sam2Params.from_args(args),
        params=PseudolabelParams.from_args(args),
    )
    s = run_pseudolabel(req)
    print(
        f"crownsam: {s['segments_labeled']} pseudolabels from {s['segments_prompted']} prompts in "
        f"{s['windows_processed']} windows -> {args.out} (summary {summary_path(req)}); "
        f"skipped {json.dumps(s['skipped_by_reason'])}; fallbacks {json.dumps(s['fallbacks_by_reason'])}; "
        f"overlapping pairs {s['overlap_in_output']['pairs']}"
        + (" (resolved by merge-labels)" if s["exclusive"]["pending"] else "")
        + ("; UNTRAINED SAM2: these masks are meaningless" if s["untrained"] else "")
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_pseudolabel_parser(sub)
    add_merge_parser(sub)


def add_pseudolabel_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "pseudolabel", help="prompt SAM2 with each segment's box or treetop; write pseudolabel polygons"
    )
    s.add_argument("--ortho", required=True, help="orthophoto GeoTIFF (path or gs:// URI)")
    s.add_argument(
        "--segments", required=True, help="coarse segments, GeoPackage or any OGR format (path or gs://)"
    )
    s.add_argument("--out", required=True, help="pseudolabels GeoPackage to write (path or gs://)")
    s.add_argument("--plan", help="window plan from `crownsam tile` (made here if omitted)")
    s.add_argument("--shard", type=shard_arg, help="process only shard I of N of the plan, e.g. 0/4")
    s.add_argument(
        "--chm", help="canopy height model: treetops of segments given without treetop_x/treetop_y columns"
    )
    add_sam2_options(s)
    add_options(s, PseudolabelParams)
    s.add_argument("--summary", help="run summary JSON (default OUT with .summary.json)")
    s.add_argument("--cache-dir", help="checkpoint cache (default $CROWNSAM_CACHE or ~/.cache/crownsam)")
    s.add_argument(
        "--resume-dir",
        help="keep finished windows here (folder or gs:// prefix) so a retried run skips them; removed on "
        "success (default OUT.parts; '' disables)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run)


def run_merge(args: argparse.Namespace) -> int:
    from crownsam.pseudolabel.merge import merge_shards, summary_of

    s = merge_shards(args.inputs, args.out, cache_dir=args.cache_dir)
    print(
        f"crownsam: merged {s['shards']} shard(s): {s['segments_labeled']} pseudolabels -> {args.out} "
        f"(summary {summary_of(args.out)})"
    )
    return 0


def add_merge_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "merge-labels",
        help="gather pseudolabel shard outputs into one GeoPackage + summary; exclusive labels: resolve "
        "pixels that labels of different windows both claim",
    )
    m.add_argument(
        "--inputs", nargs="+", required=True, help="shard GeoPackages (summaries and claims beside them)"
    )
    m.add_argument("--out", required=True, help="merged GeoPackage (path or gs://)")
    m.add_argument("--cache-dir", help="download cache for gs:// inputs")
    m.set_defaults(func=run_merge)
