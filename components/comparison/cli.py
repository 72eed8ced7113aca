"""``crownsam compare``."""

from __future__ import annotations

import argparse

from crownsam.common.cli_util import named_path_arg


def run(args: argparse.Namespace) -> int:
    from crownsam.comparison.api import compare_step

    r = compare_step(
        args.labels_eval,
        dict(args.model),
        args.out,
        manual_uri=args.manual or "",
        test_area_uri=args.area or "",
        register_name=args.register or "",
        tracking_uri=args.tracking_uri or "",
        tags=dict(args.tag or []),
        banner=args.banner,
    )
    print(f"crownsam: comparison -> {args.out}/comparison.html (+ .md, .json)")
    if r["registry"]:
        reg = r["registry"]
        print(f"crownsam: registered {reg['name']} versions {reg['versions']}; aliases {reg['aliases']}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compare", help="compare label sets and models; register models with champion/challenger"
    )
    c.add_argument("--labels-eval", required=True, help="output folder of `crownsam evaluate` (metrics.json)")
    c.add_argument(
        "--model", type=named_path_arg, action="append", required=True,
        help="SOURCE=DIR: output folder of `crownsam evaluate-model` for the model trained on SOURCE labels",
    )  # fmt: skip
    c.add_argument("--out", required=True, help="output folder (comparison.html, .md, .json)")
    c.add_argument("--manual", help="manual crowns, for the paired per-tree comparison of predicted crowns")
    c.add_argument("--area", help="test area")
    c.add_argument("--register", help="registered model name: register both models and set aliases")
    c.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    c.add_argument("--tag", type=named_path_arg, action="append", help="KEY=VALUE tag on registered versions")
    c.add_argument("--banner", help="a warning shown at the top of the report")
    c.set_defaults(func=run)
