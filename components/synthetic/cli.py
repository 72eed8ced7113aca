"""``crownsam demo-data``."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from crownsam.synthetic import generate_scene

    paths = generate_scene(args.out_dir, size=args.size, seed=args.seed, n_manual=args.n_manual)
    print(f"crownsam: demo scene ({args.size} px, seed {args.seed}) written to {paths.root}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo-data", help="write the synthetic forest scene (demo and test data)")
    d.add_argument("out_dir")
    d.add_argument("--size", type=int, default=4096, help="scene width and height in pixels (default 4096)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--n-manual", type=int, default=25, help="trees in the manual test area (default 25)")
    d.set_defaults(func=run)
