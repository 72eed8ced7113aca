"""``crownsam segment-chm``."""

from __future__ import annotations

import argparse
import logging

from crownsam.common.atomic import write_json

log = logging.getLogger(__name__)


def window_arg(text: str) -> tuple[float, float]:
    """``a,b`` -> (a, b): the search radius ``a + b * h`` metres."""
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} must look like A,B (metres), e.g. 0.2,0.03") from exc
    return a, b


def run(args: argparse.Namespace) -> int:
    from crownsam.chm.blocks import segment_chm_file

    s = segment_chm_file(
        args.chm,
        args.out,
        min_height=args.min_height,
        smooth=args.smooth,
        min_distance=args.min_distance,
        window_from_height=args.window_from_height,
        min_prominence=args.min_prominence,
        block=args.block,
        overlap=args.overlap,
    )
    if args.summary:
        write_json(args.summary, s)
    dropped = ", ".join(f"{n} {reason}" for reason, n in s["dropped"].items())
    print(
        f"crownsam: {s['crowns']} crowns from {s['treetops']} treetops -> {args.out} (dropped {dropped}; "
        f"{s['blocks']} blocks; {s['seconds']:.1f} s)"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from crownsam.chm.segment import (
        DEFAULT_MIN_HEIGHT,
        DEFAULT_MIN_PROMINENCE,
        DEFAULT_SMOOTH,
        DEFAULT_WINDOW,
    )

    c = sub.add_parser("segment-chm", help="coarse crowns from a CHM: treetops + marker-controlled watershed")
    c.add_argument("--chm", required=True, help="canopy height model GeoTIFF, metres (path or gs:// URI)")
    c.add_argument("--out", required=True, help="crown polygons GeoPackage to write (path or gs:// URI)")
    c.add_argument(
        "--min-height",
        type=float,
        metavar="M",
        default=DEFAULT_MIN_HEIGHT,
        help=f"treetops and crown pixels at least this high, m (default {DEFAULT_MIN_HEIGHT:g})",
    )
    c.add_argument(
        "--smooth",
        type=float,
        metavar="SIGMA",
        default=DEFAULT_SMOOTH,
        help=f"Gaussian sigma in pixels before finding treetops, 0 = none (default {DEFAULT_SMOOTH:g})",
    )
    w = c.add_mutually_exclusive_group()
    w.add_argument("--min-distance", type=float, metavar="PX", help="fixed treetop search radius in pixels")
    w.add_argument(
        "--window-from-height",
        type=window_arg,
        metavar="A,B",
        help="treetop search radius A + B*h metres for height h (default "
        f"{DEFAULT_WINDOW[0]:g},{DEFAULT_WINDOW[1]:g})",
    )
    c.add_argument(
        "--min-prominence",
        type=float,
        metavar="M",
        default=DEFAULT_MIN_PROMINENCE,
        help="merge treetops that rise less than this above the pass to a higher one, m "
        f"(default {DEFAULT_MIN_PROMINENCE:g}; 0 = off)",
    )
    c.add_argument(
        "--block", type=int, default=2048, metavar="PX", help="block size in pixels (default 2048)"
    )
    c.add_argument(
        "--overlap", type=int, metavar="PX", help="block overlap in pixels (default: from the parameters)"
    )
    c.add_argument("--summary", metavar="JSON", help="also write the run summary JSON here")
    c.set_defaults(func=run)
