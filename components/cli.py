"""The ``crownsam`` command: one subcommand per pipeline step. Errors print one line and exit 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from crownsam.common.errors import CrownsamError

log = logging.getLogger("crownsam")


def _bands(text: str) -> tuple[int, ...]:
    from crownsam.common.raster import parse_bands

    try:
        return parse_bands(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"shard {text!r} must look like I/N, e.g. 0/4") from exc
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= I < N")
    return i, n


def cmd_demo_data(args: argparse.Namespace) -> int:
    from crownsam.synthetic import generate_scene

    paths = generate_scene(args.out_dir, size=args.size, seed=args.seed, n_manual=args.n_manual)
    print(f"crownsam: demo scene ({args.size} px, seed {args.seed}) written to {paths.root}")
    return 0


def cmd_tile(args: argparse.Namespace) -> int:
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


def cmd_pseudolabel(args: argparse.Namespace) -> int:
    from crownsam.pseudolabel.api import PseudolabelRequest, run_pseudolabel, summary_path

    req = PseudolabelRequest(
        ortho=args.ortho,
        segments=args.segments,
        out=args.out,
        plan=args.plan,
        shard=args.shard,
        model=args.model,
        checkpoint=args.checkpoint,
        untrained=args.untrained,
        rgb_bands=args.rgb_bands,
        device=args.device,
        batch_size=args.batch_size,
        summary=args.summary,
        fix_geometries=args.fix_geometries,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    s = run_pseudolabel(req)
    print(
        f"crownsam: {s['segments_labeled']} pseudolabels from {s['segments_prompted']} prompts in "
        f"{s['windows_processed']} windows -> {args.out} (summary {summary_path(req)}); "
        f"skipped {json.dumps(s['skipped_by_reason'])}"
    )
    if s["untrained"]:
        print(f"crownsam: WARNING: {s['WARNING']}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from crownsam import __version__

    p = argparse.ArgumentParser(prog="crownsam", description=__doc__)
    p.add_argument("--version", action="version", version=f"crownsam {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo-data", help="write the synthetic forest scene (demo and test data)")
    d.add_argument("out_dir")
    d.add_argument("--size", type=int, default=4096, help="scene width and height in pixels (default 4096)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--n-manual", type=int, default=25, help="trees in the manual test area (default 25)")
    d.set_defaults(func=cmd_demo_data)

    t = sub.add_parser("tile", help="plan 1024-px windows (stride 512) and assign each segment to one")
    t.add_argument("--ortho", required=True, help="orthophoto GeoTIFF")
    t.add_argument("--segments", required=True, help="coarse segments (GeoPackage or any OGR format)")
    t.add_argument("--out", required=True, help="plan JSON to write")
    t.add_argument("--rgb-bands", type=_bands, default=(3, 2, 1), help="1-based R,G,B bands (default 3,2,1)")
    t.add_argument("--window", type=int, default=1024)
    t.add_argument("--stride", type=int, default=512)
    t.add_argument("--shards", type=int, default=1, help="print how N shards would split the work")
    t.add_argument("--fix-geometries", action="store_true", help="repair invalid and multi-part polygons")
    t.set_defaults(func=cmd_tile)

    s = sub.add_parser("pseudolabel", help="prompt SAM2 with each segment's box; write pseudolabel polygons")
    s.add_argument("--ortho", required=True, help="orthophoto GeoTIFF")
    s.add_argument("--segments", required=True, help="coarse segments (GeoPackage or any OGR format)")
    s.add_argument("--out", required=True, help="pseudolabels GeoPackage to write")
    s.add_argument("--plan", help="window plan from `crownsam tile` (made here if omitted)")
    s.add_argument("--shard", type=_shard, help="process only shard I of N of the plan, e.g. 0/4")
    s.add_argument("--model", default="sam2.1_hiera_t", help="sam2.1_hiera_t|s|b+|l (default t)")
    w = s.add_mutually_exclusive_group()
    w.add_argument("--checkpoint", help="SAM2 weights: local path, gs://bucket/key or https:// URL (cached)")
    w.add_argument("--untrained", action="store_true", help="random weights: plumbing and speed only")
    s.add_argument("--rgb-bands", type=_bands, default=(3, 2, 1), help="1-based R,G,B bands (default 3,2,1)")
    s.add_argument("--device", default="auto", help="auto|cpu|cuda (default auto)")
    s.add_argument("--batch-size", type=int, default=16, help="boxes per decoder call (default 16)")
    s.add_argument("--summary", help="run summary JSON (default OUT with .summary.json)")
    s.add_argument("--fix-geometries", action="store_true", help="repair invalid and multi-part polygons")
    s.add_argument("--cache-dir", help="checkpoint cache (default $CROWNSAM_CACHE or ~/.cache/crownsam)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_pseudolabel)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="crownsam: %(levelname)s: %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except CrownsamError as exc:
        print(f"crownsam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crownsam: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
