"""``crownsam evaluate``."""

from __future__ import annotations

import argparse
import math

from crownsam.common.cli_util import named_path_arg
from crownsam.common.params import add_options
from crownsam.evaluation.params import EvaluateParams


def run(args: argparse.Namespace) -> int:
    from crownsam.evaluation.api import OUTPUT_FILES, evaluate_files, pair_key

    labels = dict(args.labels)
    if len(labels) != len(args.labels):
        from crownsam.common.errors import InputError

        dup = next(n for i, (n, _) in enumerate(args.labels) if n in dict(args.labels[:i]))
        raise InputError(None, f"label set name {dup!r} given twice")
    ev = evaluate_files(
        args.manual,
        labels,
        args.out,
        area=args.area,
        ortho=args.ortho,
        banner=args.banner,
        params=EvaluateParams.from_args(args),
        cache_dir=args.cache_dir,
    )
    m = ev.metrics

    def f(v: float) -> str:
        return "nan" if not math.isfinite(v) else f"{v:.2f}"

    sets = "; ".join(
        f"{s} {f(m[f'jaccard_mean/{s}'])} [{f(m[f'jaccard_ci_low/{s}'])}, {f(m[f'jaccard_ci_high/{s}'])}] "
        f"F1 {f(m[f'f1/{s}'])} overlapping pairs {int(m[f'overlap_pairs/{s}'])}"
        for s in ev.label_sets
    )
    print(
        f"crownsam: evaluated {int(m['n_trees'])} manual crowns -> {args.out}/"
        f"{{{','.join(OUTPUT_FILES.values())}}}; mean Jaccard [95% CI], F1, overlapping label pairs: {sets}"
    )
    if ev.pairs:
        diffs = "; ".join(
            f"{k} {m[f'paired_diff_mean/{k}']:+.2f} [{m[f'paired_diff_ci_low/{k}']:+.2f}, "
            f"{m[f'paired_diff_ci_high/{k}']:+.2f}] (Wilcoxon p={m[f'wilcoxon_p/{k}']:.2g})"
            for k in (pair_key(e, la) for e, la in ev.pairs)
        )
        print(f"crownsam: paired difference in J (later minus earlier): {diffs}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate",
        help="Jaccard of label sets against manual crowns: per-tree CSV, metrics JSON, HTML report",
    )
    e.add_argument("--manual", required=True, help="manual crowns (GeoPackage; tree_id column if present)")
    e.add_argument(
        "--labels",
        required=True,
        action="append",
        type=named_path_arg,
        metavar="NAME=PATH",
        help="a label set to evaluate, e.g. coarse=coarse.gpkg (repeat; paired differences are later minus "
        "earlier)",
    )
    e.add_argument("--area", help="test area polygon(s): evaluate crowns whose centroid lies inside")
    e.add_argument("--ortho", help="orthophoto GeoTIFF drawn under the outlines in the report")
    e.add_argument("--out", required=True, help="output folder (per_tree.csv, metrics.json, report.html)")
    e.add_argument("--banner", help="a warning shown at the top of the report")
    add_options(e, EvaluateParams)
    e.add_argument("--cache-dir", help="download cache for gs:// inputs")
    e.set_defaults(func=run)
