"""``crownsam pseudo-classes``."""

from __future__ import annotations

import argparse
import json

from crownsam.common.errors import CrownsamError


def run(args: argparse.Namespace) -> int:
    from crownsam.classes.api import pseudo_classes
    from crownsam.classes.params import FEATURE_FIELDS, ClassesParams
    from crownsam.pseudolabel.params import Sam2Params

    if args.centres:
        fixed = [
            ClassesParams.field(f).flag for f in sorted(set(ClassesParams.given(args)) & set(FEATURE_FIELDS))
        ]
        fixed += [Sam2Params.field(f).flag for f in Sam2Params.given(args) if f == "model"]
        if fixed:
            raise CrownsamError(
                None, f"{', '.join(fixed)}: fixed by --centres (the fit's own options are used)"
            )
    s = pseudo_classes(
        args.ortho,
        args.labels,
        args.out,
        ClassesParams.from_args(args),
        sam2=Sam2Params.from_args(args),
        centres=args.centres,
        cache_dir=args.cache_dir,
    )
    how = f"assigned to {args.centres}" if args.centres else f"K = {s['k']}"
    print(
        f"crownsam: {s['classified']} of {s['crowns']} crowns in {s['k']} pseudo-classes ({how}; counts "
        f"{s['counts']}; features {s['features']}) -> {args.out} (report {s['outputs']['report']}"
        + (f", centres {s['outputs']['centres']}" if "centres" in s["outputs"] else "")
        + f"); without a class {json.dumps(s['skipped_by_reason'])}"
        + ("; UNTRAINED SAM2: these classes are meaningless" if s["untrained"] else "")
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from crownsam.classes.params import ClassesParams
    from crownsam.common.params import add_options
    from crownsam.pseudolabel.cli import add_sam2_options

    p = sub.add_parser(
        "pseudo-classes",
        help="cluster crowns by their spectral (and SAM2) features into pseudo-classes, without labels",
    )
    p.add_argument("--ortho", required=True, help="orthophoto GeoTIFF (path or gs:// URI)")
    p.add_argument("--labels", required=True, help="crown polygons (GeoPackage or any vector file)")
    p.add_argument(
        "--out",
        required=True,
        help="GeoPackage to write: the crowns with pseudo_class etc.; OUT.centres.json and "
        "OUT.report.html are written beside it",
    )
    how = p.add_mutually_exclusive_group()
    add_options(how, ClassesParams, only=["k", "k_range"])
    how.add_argument("--centres", metavar="FILE", help="assign to the centres of an earlier fit, no refit")
    add_options(p, ClassesParams, skip=["k", "k_range"])
    add_sam2_options(p)  # SAM2 for --features sam2|both
    p.add_argument("--cache-dir", help="download cache (default $CROWNSAM_CACHE or ~/.cache/crownsam)")
    p.set_defaults(func=run)
