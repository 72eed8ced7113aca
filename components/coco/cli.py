"""``crownsam export-coco``."""

from __future__ import annotations

import argparse

from crownsam.coco.params import ExportParams
from crownsam.common.params import add_options


def run(args: argparse.Namespace) -> int:
    from crownsam.coco.export import export_coco

    s = export_coco(
        args.ortho,
        args.labels,
        args.out,
        holdout=args.holdout,
        manual=args.manual,
        params=ExportParams.from_args(args),
        cache_dir=args.cache_dir,
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
    e.add_argument("--ortho", required=True, help="orthophoto GeoTIFF (path or gs://)")
    e.add_argument("--labels", required=True, help="crown polygons for training (segment_id or tree_id)")
    e.add_argument("--out", required=True, help="output folder (replaced as a whole on success)")
    e.add_argument("--holdout", help="test area polygons: excluded from train/val, exported as test split")
    e.add_argument("--manual", help="manual crowns: ground truth of the test split (needs --holdout)")
    add_options(e, ExportParams)
    e.add_argument("--cache-dir", help="download cache for gs:// and https:// inputs")
    e.set_defaults(func=run)
