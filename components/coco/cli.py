"""``crownsam export-coco``."""

from __future__ import annotations

import argparse

from crownsam.common.cli_util import bands_arg


def run(args: argparse.Namespace) -> int:
    from crownsam.coco.export import export_coco

    s = export_coco(
        args.ortho,
        args.labels,
        args.out,
        holdout=args.holdout,
        manual=args.manual,
        chip=args.chip,
        overlap=args.overlap,
        bands=args.bands,
        val_fraction=args.val_fraction,
        buffer_m=args.buffer,
        seed=args.seed,
        val_block=args.val_block,
        sliver_min_fraction=args.sliver_fraction,
        sliver_min_px=args.sliver_px,
    )
    parts = [f"{name} {v['chips']} chips / {v['annotations']} annotations" for name, v in s["splits"].items()]
    dropped = sum(v["dropped_slivers"] + v["dropped_tiny"] for v in s["splits"].values())
    skipped = sum(v["skipped_nodata"] for v in s["splits"].values())
    print(
        f"crownsam: COCO export {args.out}: {', '.join(parts)}; {dropped} slivers/tiny crowns dropped, "
        f"{skipped} nodata chips skipped, {s['grid']['excluded_near_test_area']} chips near the test area "
        f"and {s['grid']['excluded_val_gap']} in the train/val gap left out (details in export.json)"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export-coco", help="write image chips and COCO instance JSON (train/val/test) for Mask R-CNN"
    )
    e.add_argument("--ortho", required=True, help="orthophoto GeoTIFF")
    e.add_argument("--labels", required=True, help="crown polygons for training (segment_id or tree_id)")
    e.add_argument("--out", required=True, help="output folder (replaced as a whole on success)")
    e.add_argument("--holdout", help="test area polygons: excluded from train/val, exported as test split")
    e.add_argument("--manual", help="manual crowns: ground truth of the test split (needs --holdout)")
    e.add_argument("--chip", type=int, default=1024, help="chip size in px (default 1024)")
    e.add_argument("--overlap", type=float, default=0.25, help="chip overlap fraction (default 0.25)")
    e.add_argument("--bands", type=bands_arg, default=(3, 2, 1), help="1-based bands (default 3,2,1)")
    e.add_argument("--val-fraction", type=float, default=0.15, help="share of chips for val (default 0.15)")
    e.add_argument("--val-block", type=int, default=4, help="val block side in chips (default 4)")
    e.add_argument("--buffer", type=float, default=10.0, help="test-area buffer in CRS units (default 10 m)")
    e.add_argument("--seed", type=int, default=0, help="seed of the val block order (default 0)")
    e.add_argument(
        "--sliver-fraction", type=float, default=0.2, help="min kept share of a cut crown (default 0.2)"
    )
    e.add_argument("--sliver-px", type=int, default=64, help="min mask size in px (default 64)")
    e.set_defaults(func=run)
