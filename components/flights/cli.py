"""``crownsam flights scan | retrain | schedule``: the flight catalog and its scheduled retraining."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from crownsam.common.cli_util import bands_arg, named_path_arg
from crownsam.common.errors import CrownsamError


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_scan(args: argparse.Namespace) -> int:
    from crownsam.flights.retrain import scan

    plan = scan(
        args.root,
        work_uri=args.work,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment or "crownsam-flights",
        bands=args.bands,
    )
    rows = [s.row() for s in plan.flights]
    if args.json:
        print(json.dumps({"action": plan.action, "new": plan.new_ids, "flights": rows}, indent=2))
        return 0
    cols = ("flight_id", "status", "date", "manual", "reason")
    width = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in cols[:-1]}
    print("  ".join(c.ljust(width[c]) for c in cols[:-1]) + "  reason")
    for r in rows:
        print("  ".join(r[c].ljust(width[c]) for c in cols[:-1]) + "  " + r["reason"])
    counts = {
        st: sum(r["status"] == st for r in rows) for st in ("new", "processed", "incomplete", "invalid")
    }
    print(
        f"crownsam: {len(rows)} flight folder(s): "
        + ", ".join(f"{n} {st}" for st, n in counts.items())
        + f"; next retraining: {plan.action}"
    )
    return 0


def _pipeline_params(args: argparse.Namespace, tracking_default: str) -> dict[str, Any]:
    """The retraining pipeline's parameters from the command line (only those given, plus root)."""
    params: dict[str, Any] = {"root": args.root}
    given = {
        "work_uri": args.work,
        "tracking_uri": args.tracking_uri or tracking_default,
        "experiment": args.experiment,
        "registered_model_name": args.registered_model_name,
        "sam2_model": args.model,
        "sam2_checkpoint": args.checkpoint,
        "untrained": True if args.untrained else None,
        "rgb_bands": ",".join(map(str, args.bands)) if args.bands else None,
        "chip": args.chip,
        "chip_overlap": args.overlap,
        "val_fraction": args.val_fraction,
        "val_block": args.val_block,
        "holdout_buffer_m": args.buffer,
        "epochs": args.epochs,
        "max_iters": args.max_iters,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "model_version": args.model_version,
    }
    params |= {k: v for k, v in given.items() if v is not None}
    params |= {k: _parse_value(v) for k, v in (getattr(args, "param", None) or [])}
    return params


def run_retrain(args: argparse.Namespace) -> int:
    if args.submit_to:
        local_only = [o for o, v in (("--dry-run", args.dry_run), ("--force", args.force)) if v]
        if local_only:
            raise CrownsamError(None, f"{', '.join(local_only)}: only with --local")
        from crownsam.pipelines.retrain import CLUSTER_TRACKING_URI, submit_retraining

        result = submit_retraining(
            args.submit_to,
            _pipeline_params(args, CLUSTER_TRACKING_URI),
            experiment=args.kfp_experiment,
            run_name=args.run_name,
            pipeline_root=args.pipeline_root,
            service_account=args.service_account,
            namespace=args.namespace,
        )
        print(f"crownsam: submitted retraining run {result.run_id} to {args.submit_to}")
        return 0
    from crownsam.flights.retrain import retrain

    if not args.untrained and not args.checkpoint:
        raise CrownsamError(None, "--local runs SAM2 here: pass --checkpoint URI or --untrained")
    defaults = {
        "chip": 1024,
        "overlap": 0.25,
        "val_fraction": 0.15,
        "val_block": 4,
        "buffer": 10.0,
        "epochs": 20,
        "lr": 0.005,
        "batch_size": 2,
    }
    opt = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in defaults.items()}
    summary = retrain(
        args.root,
        work_uri=args.work,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment or "crownsam-flights",
        registered_model_name=args.registered_model_name or "crownsam-maskrcnn",
        sam2_model=args.model or "sam2.1_hiera_t",
        checkpoint=args.checkpoint,
        untrained=args.untrained,
        device=args.device,
        bands=args.bands or (3, 2, 1),
        chip=opt["chip"],
        overlap=opt["overlap"],
        val_fraction=opt["val_fraction"],
        val_block=opt["val_block"],
        buffer_m=opt["buffer"],
        epochs=opt["epochs"],
        max_iters=args.max_iters or None,
        lr=opt["lr"],
        batch_size=opt["batch_size"],
        model_version=args.model_version or "v2",
        dry_run=args.dry_run,
        force=args.force,
        progress=sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        if summary["pseudolabeled"]:
            print(f"crownsam: pseudolabeled {', '.join(summary['pseudolabeled'])}")
        print(f"crownsam: {summary['message']}")
    if summary.get("failed"):
        for fid, why in summary["failed"].items():
            print(f"crownsam: flight {fid} failed: {why}", file=sys.stderr)
    if args.untrained:
        print("crownsam: WARNING: UNTRAINED SAM2 was used: the pseudolabels mean nothing", file=sys.stderr)
    return 1 if summary["status"] == "failed" else 0


def run_schedule(args: argparse.Namespace) -> int:
    from crownsam.pipelines.retrain import CLUSTER_TRACKING_URI, read_schedule_configmap, schedule_retraining

    settings: dict[str, Any] = read_schedule_configmap(args.from_configmap) if args.from_configmap else {}
    overrides = {
        "cron_expression": args.cron,
        "job_name": args.job_name,
        "experiment_name": args.kfp_experiment,
        "pipeline_root": args.pipeline_root,
        "service_account": args.service_account,
    }
    settings |= {k: v for k, v in overrides.items() if v is not None}
    params = _pipeline_params(args, CLUSTER_TRACKING_URI)
    if args.from_configmap and not args.tracking_uri and "tracking_uri" in settings.get("params", {}):
        params.pop("tracking_uri")  # the ConfigMap's params.json says where MLflow is
    result = schedule_retraining(
        args.host, params, settings=settings, namespace=args.namespace, replace=args.replace
    )
    rid = getattr(result, "recurring_run_id", None) or "?"
    cron = settings.get("cron_expression", "0 0 3 * * *")
    print(f"crownsam: recurring run {rid} created on {args.host}: cron '{cron}' (UTC), max_concurrency=1")
    return 0


def _add_catalog(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="catalog root holding flights/<flight_id>/ (path or gs://)")
    p.add_argument("--work", help="work area for the flights' outputs (default ROOT/work)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", help="MLflow experiment of flight and retraining runs (crownsam-flights)")


def _add_retrain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registered-model-name", help="MLflow registered model (default crownsam-maskrcnn)")
    p.add_argument("--model", help="SAM2 model: sam2.1_hiera_t|s|b+|l (default sam2.1_hiera_t)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--checkpoint", help="SAM2 checkpoint URI (path, gs://, https://)")
    w.add_argument("--untrained", action="store_true", help="untrained SAM2 (plumbing only)")
    p.add_argument("--bands", type=bands_arg, help="bands for SAM2 (R,G,B) and the chips (default 3,2,1)")
    p.add_argument("--chip", type=int, help="chip size in px (default 1024)")
    p.add_argument("--overlap", type=float, help="chip overlap (default 0.25)")
    p.add_argument("--val-fraction", type=float, help="validation fraction (default 0.15)")
    p.add_argument("--val-block", type=int, help="validation block in chips (default 4)")
    p.add_argument("--buffer", type=float, help="test-area buffer in metres (default 10)")
    p.add_argument("--epochs", type=int, help="training epochs (default 20)")
    p.add_argument("--max-iters", type=int, help="stop training after this many steps (default: epochs)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.005)")
    p.add_argument("--batch-size", type=int, help="training batch size (default 2)")
    p.add_argument("--model-version", choices=("v1", "v2"), help="Mask R-CNN version (default v2)")


def _add_kfp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kfp-experiment", help="KFP experiment (default crownsam-scheduled-retraining)")
    p.add_argument("--pipeline-root", help="gs://bucket/prefix for the runs' artifacts")
    p.add_argument("--service-account", help="the runs' Kubernetes service account (crownsam-pipeline)")
    p.add_argument("--namespace", help="KFP namespace (multi-user Kubeflow: the profile namespace)")
    p.add_argument("--param", type=named_path_arg, action="append", help="NAME=VALUE pipeline parameter")


def add_parser(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "flights", help="the flight catalog and its scheduled retraining (scan, retrain, schedule)"
    )
    fsub = f.add_subparsers(dest="flights_command", required=True, metavar="COMMAND")

    s = fsub.add_parser("scan", help="list the catalog's flights: incomplete, invalid, processed or new")
    _add_catalog(s)
    s.add_argument("--bands", type=bands_arg, default=(3, 2, 1), help="bands the retraining uses (3,2,1)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=run_scan)

    r = fsub.add_parser(
        "retrain",
        help="pseudolabel new flights, retrain on all flights, promote the model if it is better",
    )
    _add_catalog(r)
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="run here, in this process")
    where.add_argument("--submit-to", metavar="KFP_HOST", help="submit one run of the retraining pipeline")
    _add_retrain_options(r)
    r.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (--local)")
    r.add_argument("--dry-run", action="store_true", help="only say what would be done (--local)")
    r.add_argument("--force", action="store_true", help="retrain even when up-to-date (--local)")
    r.add_argument("--json", action="store_true", help="print the whole summary as JSON (--local)")
    r.add_argument("--run-name", help="KFP run name (--submit-to)")
    _add_kfp(r)
    r.set_defaults(
        func=run_retrain, kfp_experiment="crownsam-scheduled-retraining", service_account="crownsam-pipeline"
    )

    c = fsub.add_parser("schedule", help="create the KFP recurring run of the retraining pipeline")
    c.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.com/pipeline")
    _add_catalog(c)
    c.add_argument(
        "--from-configmap", metavar="MANIFEST", help="read the settings from k8s/base/recurring-run.yaml"
    )
    c.add_argument("--cron", help="KFP cron, six fields, seconds first, UTC (default '0 0 3 * * *')")
    c.add_argument("--job-name", help="name of the recurring run (default crownsam-scheduled-retraining)")
    c.add_argument("--replace", action="store_true", help="replace a recurring run of the same name")
    _add_retrain_options(c)
    _add_kfp(c)
    c.set_defaults(func=run_schedule)
