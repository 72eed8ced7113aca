"""``crownsam tile``."""

from __future__ import annotations

import argparse
import logging

from crownsam.common.cli_util import bands_arg

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from crownsam.tiling.plan import plan_from_files, split_windows

    plan, _, report = plan_from_files(
        args.ortho,
        args.segments,
        rgb_bands=args.rgb_bands,
        size=args.window,
        stride=args.stride,
        fix_geometries=args.fix_geometries,
    )
    for note in report.notes:
        log.warning(note)
    plan.save(args.out)
    print(
        f"crownsam: plan {args.out}: {len(plan.windows)} of {plan.windows_total} windows hold segments; "
        f"{plan.segments_planned} of {plan.segments_total} segments planned, {len(plan.skipped)} skipped"
    )
    if args.shards > 1:
        loads = [sum(w.cost for w in s) for s in split_windows(plan.windows, args.shards)]
        print(f"crownsam: {args.shards} shards, relative work " + ", ".join(f"{x:.2f}" for x in loads))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tile", help="plan 1024-px windows (stride 512) and assign each segment to one")
    t.add_argument("--ortho", required=True, help="orthophoto GeoTIFF")
    t.add_argument("--segments", required=True, help="coarse segments (GeoPackage or any OGR format)")
    t.add_argument("--out", required=True, help="plan JSON to write")
    t.add_argument(
        "--rgb-bands", type=bands_arg, default=(3, 2, 1), help="1-based R,G,B bands (default 3,2,1)"
    )
    t.add_argument("--window", type=int, default=1024)
    t.add_argument("--stride", type=int, default=512)
    t.add_argument("--shards", type=int, default=1, help="print how N shards would split the work")
    t.add_argument("--fix-geometries", action="store_true", help="repair invalid and multi-part polygons")
    t.set_defaults(func=run)
