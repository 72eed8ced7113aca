"""``crownsam compile``, ``crownsam run`` (local), ``crownsam submit`` (a KFP endpoint)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crownsam.common.cli_util import named_path_arg, parse_value


def run_compile(args: argparse.Namespace) -> int:
    from crownsam.pipelines.compile import compile_pipeline

    compile_pipeline(args.out)
    print(f"crownsam: pipeline compiled to {args.out}")
    return 0


def run_local_cmd(args: argparse.Namespace) -> int:
    from crownsam.pipelines.console import duration
    from crownsam.pipelines.local import StepFailed, flight_arguments, run_local
    from crownsam.pipelines.run_report import collect, summary_lines, write_index

    arguments = flight_arguments(args.flight) | {
        "flight_id": args.flight_id or args.flight.rstrip("/").split("/")[-1]
    }
    arguments |= {k: parse_value(v) for k, v in (args.param or [])}
    if args.checkpoint:
        arguments["sam2_checkpoint"] = args.checkpoint
    elif args.untrained:
        arguments["untrained"] = True
    untrained = bool(arguments.get("untrained"))
    log = Path(args.out) / "run.log"
    print(f"crownsam: running the pipeline on {args.flight}; what the steps print goes to {log}")
    try:
        run = run_local(arguments, args.out, verbose=args.verbose or args.live)
    except StepFailed as exc:
        print(f"crownsam: error: {exc}", file=sys.stderr)
        return 2 if exc.step.bad_input else 1
    if run.run_dir is None:
        print("crownsam: error: the local runner made no run folder", file=sys.stderr)
        return 1
    results = collect(run.run_dir)
    index = write_index(
        run.out, results, untrained=untrained, tracking_uri=run.tracking_uri, log=run.log, seconds=run.seconds
    )
    print(f"crownsam: pipeline finished in {duration(run.seconds)}")
    for line in summary_lines(results):
        print(f"  {line}")
    print(f"  reports: {index}")
    if run.tracking_uri.startswith("sqlite:///"):
        print(f"  MLflow: mlflow ui --backend-store-uri {run.tracking_uri}")
    if untrained:
        msg = "UNTRAINED SAM2 was used: the pseudolabels and everything downstream say nothing about SAM2"
        print(f"crownsam: WARNING: {msg}", file=sys.stderr)
    return 0


def run_submit(args: argparse.Namespace) -> int:
    from crownsam.pipelines.submit import submit

    arguments = {k: parse_value(v) for k, v in (args.param or [])}
    result = submit(
        args.host,
        arguments,
        experiment=args.experiment,
        run_name=args.run_name,
        pipeline_root=args.pipeline_root,
        service_account=args.service_account,
        namespace=args.namespace,
    )
    print(f"crownsam: submitted run {result.run_id} to {args.host}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compile", help="compile the Kubeflow pipeline to a YAML package")
    c.add_argument("--out", default="pipeline.yaml", help="pipeline package to write (default pipeline.yaml)")
    c.set_defaults(func=run_compile)

    r = sub.add_parser("run", help="run the whole pipeline locally (KFP local runner, local MLflow store)")
    r.add_argument(
        "--flight",
        required=True,
        help="flight folder: ortho.tif, coarse.gpkg or chm.tif, manual.gpkg, test_area.gpkg (path or gs://)",
    )
    r.add_argument("--out", default="out/run", help="where the local run keeps everything (default out/run)")
    r.add_argument("--flight-id", help="flight id for tags (default: the folder name)")
    w = r.add_mutually_exclusive_group()
    w.add_argument("--checkpoint", help="SAM2 checkpoint URI (path, gs://, https://)")
    w.add_argument("--untrained", action="store_true", help="untrained SAM2 (plumbing only; said everywhere)")
    r.add_argument("--param", type=named_path_arg, action="append", help="NAME=VALUE pipeline parameter")
    r.add_argument(
        "--verbose",
        dest="live",
        action="store_true",
        help="show everything the steps print, live (it always goes to OUT/run.log)",
    )
    r.set_defaults(func=run_local_cmd)

    s = sub.add_parser("submit", help="submit a run of the pipeline to a Kubeflow Pipelines endpoint")
    s.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.com/pipeline")
    s.add_argument("--param", type=named_path_arg, action="append", help="NAME=VALUE pipeline parameter")
    s.add_argument("--experiment", default="crownsam")
    s.add_argument("--run-name")
    s.add_argument("--pipeline-root", help="gs://bucket/prefix for artifacts")
    s.add_argument("--service-account", default="crownsam-pipeline")
    s.add_argument("--namespace", default="kubeflow")
    s.set_defaults(func=run_submit)
