"""``crownsam tile``."""

from __future__ import annotations

import argparse
import logging

from crownsam.common.atomic import check_output_file
from crownsam.common.params import add_options
from crownsam.tiling.params import TileParams

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from crownsam.tiling.plan import plan_from_files, split_windows

    tile = TileParams.from_args(args)
    check_output_file(args.out, "--out")
    plan, _, report = plan_from_files(args.ortho, args.segments, tile)
    for note in report.notes:
        log.warning(note)
    plan.save(args.out)
    print(
        f"crownsam: plan {args.out}: {len(plan.windows)} of {plan.windows_total} windows hold segments; "
        f"{plan.segments_planned} of {plan.segments_total} segments planned, {len(plan.skipped)} skipped"
    )
    if tile.shards > 1:
        loads = [sum(w.cost for w in s) for s in split_windows(plan.windows, tile.shards)]
        print(f"crownsam: {tile.shards} shards, relative work " + ", ".join(f"{x:.2f}" for x in loads))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tile", help="plan 1024-px windows (stride 512) and assign each segment to one")
    t.add_argument("--ortho", required=True, help="orthophoto GeoTIFF")
    t.add_argument("--segments", required=True, help="coarse segments (GeoPackage or any OGR format)")
    t.add_argument("--out", required=True, help="plan JSON to write")
    add_options(t, TileParams)
    t.set_defaults(func=run)
