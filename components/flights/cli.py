"""``crownsam flights scan | retrain | schedule``: the flight catalog and its scheduled retraining."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from crownsam.coco.params import ExportParams
from crownsam.common.cli_util import named_path_arg, parse_value
from crownsam.common.errors import CrownsamError
from crownsam.common.params import add_options
from crownsam.flights.settings import (
    RetrainSettings,
    add_catalog_options,
    add_retrain_options,
    given_pipeline_values,
)


def run_scan(args: argparse.Namespace) -> int:
    from crownsam.flights.retrain import scan

    plan = scan(args.root, RetrainSettings.from_args(args))
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
    """The retraining pipeline's parameters: ``root``, the tracking URI (``tracking_default`` unless
    given), the options given on the command line (by their pipeline names) and ``--param NAME=VALUE``."""
    params: dict[str, Any] = {"root": args.root, "tracking_uri": tracking_default}
    params |= given_pipeline_values(args)
    params |= {k: parse_value(v) for k, v in (getattr(args, "param", None) or [])}
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

    settings = RetrainSettings.from_args(args, progress=sys.stderr.isatty())
    if not settings.sam2.untrained and not settings.sam2.checkpoint:
        raise CrownsamError(None, "--local runs SAM2 here: pass --checkpoint URI or --untrained")
    summary = retrain(args.root, settings, dry_run=args.dry_run, force=args.force)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    else:
        if summary["pseudolabeled"]:
            print(f"crownsam: pseudolabeled {', '.join(summary['pseudolabeled'])}")
        print(f"crownsam: {summary['message']}")
    if summary.get("failed"):
        for fid, why in summary["failed"].items():
            print(f"crownsam: flight {fid} failed: {why}", file=sys.stderr)
    if settings.sam2.untrained:
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
    given = getattr(args, "tracking_uri", None)
    if args.from_configmap and not given and "tracking_uri" in settings.get("params", {}):
        params.pop("tracking_uri")  # the ConfigMap's params.json says where MLflow is
    result = schedule_retraining(
        args.host, params, settings=settings, namespace=args.namespace, replace=args.replace
    )
    rid = getattr(result, "recurring_run_id", None) or "?"
    cron = settings.get("cron_expression", "0 0 3 * * *")
    print(f"crownsam: recurring run {rid} created on {args.host}: cron '{cron}' (UTC), max_concurrency=1")
    return 0


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
    add_catalog_options(s)
    add_options(s, ExportParams, only=("bands",))
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=run_scan)

    r = fsub.add_parser(
        "retrain",
        help="pseudolabel new flights, retrain on all flights, promote the model if it is better",
    )
    add_catalog_options(r)
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="run here, in this process")
    where.add_argument("--submit-to", metavar="KFP_HOST", help="submit one run of the retraining pipeline")
    add_retrain_options(r)
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
    add_catalog_options(c)
    c.add_argument(
        "--from-configmap", metavar="MANIFEST", help="read the settings from k8s/base/recurring-run.yaml"
    )
    c.add_argument("--cron", help="KFP cron, six fields, seconds first, UTC (default '0 0 3 * * *')")
    c.add_argument("--job-name", help="name of the recurring run (default crownsam-scheduled-retraining)")
    c.add_argument("--replace", action="store_true", help="replace a recurring run of the same name")
    add_retrain_options(c, sam2_device=False)
    _add_kfp(c)
    c.set_defaults(func=run_schedule)
