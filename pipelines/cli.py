"""``crownsam compile``, ``crownsam run`` (local), ``crownsam submit`` (a KFP endpoint)."""

from __future__ import annotations

import argparse
import sys

from crownsam.common.cli_util import named_path_arg, parse_value


def run_compile(args: argparse.Namespace) -> int:
    from crownsam.pipelines.compile import compile_pipeline

    compile_pipeline(args.out)
    print(f"crownsam: pipeline compiled to {args.out}")
    return 0


def run_local_cmd(args: argparse.Namespace) -> int:
    from crownsam.pipelines.local import flight_arguments, run_local

    arguments = flight_arguments(args.flight) | {
        "flight_id": args.flight_id or args.flight.rstrip("/").split("/")[-1]
    }
    arguments |= {k: parse_value(v) for k, v in (args.param or [])}
    if args.checkpoint:
        arguments["sam2_checkpoint"] = args.checkpoint
    elif args.untrained:
        arguments["untrained"] = True
    run = run_local(arguments, args.out)
    print(f"crownsam: pipeline finished; run folder {run.run_dir}")
    for key, path in run.artifacts.items():
        print(f"crownsam:   {key:<20} {path}")
    print(f"crownsam: MLflow store {run.tracking_uri}")
    if run.tracking_uri.startswith("sqlite:///"):
        print(f"crownsam:   browse it with: mlflow ui --backend-store-uri {run.tracking_uri}")
    if arguments.get("untrained"):
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
