"""``crownsam segment-chm``."""

from __future__ import annotations

import argparse
import logging

from crownsam.chm.segment import ChmParams
from crownsam.common.atomic import write_json
from crownsam.common.params import add_options

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    from crownsam.chm.blocks import segment_chm_file

    s = segment_chm_file(args.chm, args.out, ChmParams.from_args(args))
    if args.summary:
        write_json(args.summary, s)
    dropped = ", ".join(f"{n} {reason}" for reason, n in s["dropped"].items())
    print(
        f"crownsam: {s['crowns']} crowns from {s['treetops']} treetops -> {args.out} (dropped {dropped}; "
        f"{s['blocks']} blocks; {s['seconds']:.1f} s)"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("segment-chm", help="coarse crowns from a CHM: treetops + marker-controlled watershed")
    c.add_argument("--chm", required=True, help="canopy height model GeoTIFF, metres (path or gs:// URI)")
    c.add_argument("--out", required=True, help="crown polygons GeoPackage to write (path or gs:// URI)")
    add_options(c, ChmParams, only=("min_height", "smooth"))
    add_options(c.add_mutually_exclusive_group(), ChmParams, only=("min_distance", "window_from_height"))
    add_options(c, ChmParams, only=("min_prominence", "block", "overlap"))
    c.add_argument("--summary", metavar="JSON", help="also write the run summary JSON here")
    c.set_defaults(func=run)
