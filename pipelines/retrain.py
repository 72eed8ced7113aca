"""The retraining pipeline, and the two ways to start it on Kubeflow Pipelines: one run now, or a recurring
run (KFP's own scheduler).

scan the flight catalog (CPU, never cached) -> only when there is work: pseudolabel the new flights and
retrain on all of them, evaluate, promote (one GPU task: :func:`crownsam.flights.retrain.retrain`).

The retrain task asks MLflow again what is processed just before processing each flight, so a flight
already processed by an earlier or a manually started run is not processed again. Submission and
scheduling stay thin: compile, check the parameters and the cron expression, one ``kfp.Client`` call.
"""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Dict

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Output

from crownsam.common.errors import CrownsamError, InputError
from crownsam.common.images import CPU_IMAGE, GPU_IMAGE
from crownsam.pipelines.pseudolabel import cpu_task, gpu_task

PIPELINE_NAME = "crownsam-retraining"
# The MLflow service inside the cluster (k8s/base/mlflow.yaml); pipeline pods reach it by this name.
CLUSTER_TRACKING_URI = "http://mlflow.crownsam.svc.cluster.local:5000"
# The retraining's settings as pipeline parameters (RetrainSettings.pipeline_defaults() names them).
RETRAIN_PARAMETERS = (
    "work_uri", "tracking_uri", "experiment", "registered_model_name", "sam2_model", "sam2_checkpoint",
    "untrained", "rgb_bands", "chip", "chip_overlap", "val_fraction", "val_block", "holdout_buffer_m",
    "epochs", "max_iters", "lr", "batch_size", "model_version",
)  # fmt: skip


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def scan_flights_op(
    root: str, work_uri: str, tracking_uri: str, experiment: str, rgb_bands: str, flights: Output[Artifact]
) -> str:
    """The catalog's flights with their status (``flights``: JSON with ``new``, the new flight ids, and
    one row per folder); returns ``retrain`` when there is work (new flights, or processed flights no model
    was trained on yet), else ``up-to-date``, ``no-evaluation-set`` or ``no-flights``. One return value,
    not a NamedTuple: KFP's local runner resolves only ``Output`` in ``dsl.If`` conditions."""
    import json

    from crownsam.flights.plan import scan_summary
    from crownsam.flights.retrain import scan
    from crownsam.flights.settings import RetrainSettings

    settings = RetrainSettings.from_pipeline(
        work_uri=work_uri, tracking_uri=tracking_uri, experiment=experiment, rgb_bands=rgb_bands
    )
    result = scan_summary(scan(root, settings))
    with open(flights.path, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    flights.metadata["new"] = ",".join(result["new"])
    return result["action"]


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def retrain_op(
    root: str,
    work_uri: str,
    tracking_uri: str,
    experiment: str,
    registered_model_name: str,
    sam2_model: str,
    sam2_checkpoint: str,
    untrained: bool,
    rgb_bands: str,
    chip: int,
    chip_overlap: float,
    val_fraction: float,
    val_block: int,
    holdout_buffer_m: float,
    epochs: int,
    max_iters: int,
    lr: float,
    batch_size: int,
    model_version: str,
    flights: Input[Artifact],
    summary: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Pseudolabel the new flights, retrain on all, evaluate, promote (parameters: ``RetrainSettings``);
    returns the status."""
    import json

    from crownsam.flights.retrain import note_catalog_change, retrain
    from crownsam.flights.settings import RetrainSettings

    settings = RetrainSettings.from_pipeline(
        work_uri=work_uri,
        tracking_uri=tracking_uri,
        experiment=experiment,
        registered_model_name=registered_model_name,
        sam2_model=sam2_model,
        sam2_checkpoint=sam2_checkpoint,
        untrained=untrained,
        rgb_bands=rgb_bands,
        chip=chip,
        chip_overlap=chip_overlap,
        val_fraction=val_fraction,
        val_block=val_block,
        holdout_buffer_m=holdout_buffer_m,
        epochs=epochs,
        max_iters=max_iters,
        lr=lr,
        batch_size=batch_size,
        model_version=model_version,
    )
    result = retrain(root, settings)
    with open(flights.path) as f:
        note_catalog_change(result, json.load(f).get("new", []))
    with open(summary.path, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True, default=str)
    if isinstance(result.get("metric"), float):
        metrics.log_metric(result["metric_name"], result["metric"])
    metrics.log_metric("pseudolabeled_flights", len(result.get("pseudolabeled", [])))
    # Flights with bad data do not fail the task (its retries are for preempted nodes; bad data stays
    # bad): they are counted here, listed in the summary and marked FAILED in MLflow with the reason.
    metrics.log_metric("failed_flights", len(result.get("failed", {})))
    return result["status"]


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Pseudolabel new flights with SAM2, retrain Mask R-CNN on all flights, promote if better",
)
def retraining_pipeline(
    root: str,
    work_uri: str = "",
    tracking_uri: str = CLUSTER_TRACKING_URI,
    experiment: str = "crownsam-flights",
    registered_model_name: str = "crownsam-maskrcnn",
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
    rgb_bands: str = "3,2,1",
    chip: int = 1024,
    chip_overlap: float = 0.25,
    val_fraction: float = 0.15,
    val_block: int = 4,
    holdout_buffer_m: float = 10.0,
    epochs: int = 20,
    max_iters: int = 0,
    lr: float = 0.005,
    batch_size: int = 2,
    model_version: str = "v2",
):
    """Parameters: ``root`` and ``RetrainSettings`` (defaults checked against it by the tests)."""
    scan = cpu_task(
        scan_flights_op(
            root=root,
            work_uri=work_uri,
            tracking_uri=tracking_uri,
            experiment=experiment,
            rgb_bands=rgb_bands,
        ).set_display_name("scan flight catalog"),
        memory="2G",
    )
    scan.set_caching_options(False)  # must see the catalog and MLflow as they are now
    settings = {k: v for k, v in locals().items() if k in RETRAIN_PARAMETERS}
    with dsl.If(scan.outputs["Output"] == "retrain", name="new-work"):
        task = gpu_task(
            retrain_op(root=root, flights=scan.outputs["flights"], **settings).set_display_name(
                "pseudolabel new flights, retrain, promote"
            ),
            memory="32G",
            cpu="8",
        )
        task.set_caching_options(False)  # the catalog, MLflow and the registry change between runs


# ---------------------------------------------------------------------------------------- KFP requests


def compile_retraining(out: Any) -> Path:
    """Write the compiled retraining pipeline (atomically)."""
    from crownsam.pipelines.compile import compile_pipeline

    return compile_pipeline(out, retraining_pipeline)


def check_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """Refuse unknown pipeline parameters, a missing ``root`` and a SAM2 without weights before anything
    is sent; return the parameters as the pipeline's declared types."""
    from crownsam.pipelines.submit import check_arguments

    params = check_arguments(params, retraining_pipeline)
    if not params.get("root"):
        raise InputError(None, "the retraining pipeline needs root (the flight catalog, e.g. gs://bucket)")
    if bool(params.get("sam2_checkpoint")) == bool(params.get("untrained")):
        raise InputError(
            None, "the retraining pipeline needs either sam2_checkpoint (--checkpoint) or untrained, not both"
        )
    return params


_CRON_TOKEN = re.compile(r"^(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?$")


def check_cron(expr: str) -> str:
    """A KFP (robfig/cron) expression: six fields, **seconds first** (``0 0 3 * * *`` = daily 03:00:00).

    Refused: five fields (a crontab line: the minute would be read as seconds), a seconds field that
    is not fixed numbers (``*`` or a step would start the pipeline many times a minute), tokens that
    are not cron syntax.
    """
    fields = str(expr).split()
    if len(fields) == 5:
        raise CrownsamError(
            None,
            f"cron {expr!r} has 5 fields; KFP's cron has six, seconds first: did you mean '0 {expr}'?",
        )
    if len(fields) != 6:
        raise CrownsamError(
            None, f"cron {expr!r} has {len(fields)} fields; KFP's cron has six, seconds first (0 0 3 * * *)"
        )
    for f in fields:
        if not all(_CRON_TOKEN.match(t) for t in f.split(",")):
            raise CrownsamError(None, f"cron {expr!r}: {f!r} is not a cron field")
    seconds = fields[0].split(",")
    if not all(t.isdigit() and 0 <= int(t) <= 59 for t in seconds):
        raise CrownsamError(
            None,
            f"cron {expr!r}: the first field is the second of the minute and must be fixed (e.g. 0); "
            f"{fields[0]!r} would start the pipeline several times a minute",
        )
    return " ".join(fields)


# Defaults of a recurring run: the same values as k8s/base/recurring-run.yaml.
SCHEDULE_DEFAULTS: Dict[str, Any] = {
    "job_name": "crownsam-scheduled-retraining",
    "description": (
        "Retrain Mask R-CNN on the newest flights' SAM2 pseudolabels and compare against manual labels."
    ),
    "cron_expression": "0 0 3 * * *",
    "enabled": True,
    "enable_caching": False,
    "service_account": "crownsam-pipeline",
    "pipeline_root": None,
    "experiment_name": "crownsam-scheduled-retraining",
}
_BOOL = {"true": True, "false": False}


def read_schedule_configmap(path: Any, name: str = "crownsam-recurring-run") -> Dict[str, Any]:
    """The recurring run's settings from the ConfigMap ``name`` in a manifest file (see
    ``k8s/base/recurring-run.yaml``): typed values (booleans, integers, ``params`` from ``params.json``)."""
    import yaml

    try:
        docs = list(yaml.safe_load_all(Path(path).read_text()))
    except FileNotFoundError as exc:
        raise InputError(path, "manifest not found") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"not readable YAML ({type(exc).__name__})") from exc
    found = [
        d
        for d in docs
        if isinstance(d, dict)
        and d.get("kind") == "ConfigMap"
        and (d.get("metadata") or {}).get("name") == name
    ]
    if not found:
        raise InputError(path, f"no ConfigMap named {name}")
    data = dict(found[0].get("data") or {})
    out: Dict[str, Any] = {}
    for key, value in data.items():
        text = str(value)
        if key == "params.json":
            try:
                out["params"] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(path, f"params.json is not JSON ({exc.msg})") from exc
            if not isinstance(out["params"], dict):
                raise InputError(path, "params.json must be a JSON object")
        elif key in ("enabled", "enable_caching", "no_catchup"):
            if text.lower() not in _BOOL:
                raise InputError(path, f"{key} must be true or false, got {text!r}")
            out[key] = _BOOL[text.lower()]
        elif key == "max_concurrency":
            if not text.isdigit():
                raise InputError(path, f"max_concurrency must be an integer, got {text!r}")
            out[key] = int(text)
        else:
            out[key] = text
    return out


def _check_pipeline_root(root: str | None) -> None:
    if root and root.startswith("gs://"):
        bucket = root[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket):
            raise CrownsamError(
                None,
                f"pipeline root {root}: {bucket!r} is not a GCS bucket name (a placeholder?); "
                "set --pipeline-root gs://your-bucket/kfp-root",
            )


def schedule_retraining(
    host: str | None,
    params: Dict[str, Any],
    *,
    settings: Dict[str, Any] | None = None,
    namespace: str | None = None,
    replace: bool = False,
    client: Any = None,
) -> Any:
    """Create the recurring run of the retraining pipeline with ``kfp.Client.create_recurring_run``;
    return what KFP returns.

    ``settings`` override :data:`SCHEDULE_DEFAULTS` (the ConfigMap's keys: ``cron_expression``,
    ``job_name``, ``experiment_name``, ``pipeline_root``, ...). Always ``max_concurrency=1`` and
    ``no_catchup=True`` (settings asking otherwise are refused). The experiment is created when missing.
    A recurring run of the same name in the experiment is refused unless ``replace`` (it is deleted).
    """
    s = dict(SCHEDULE_DEFAULTS) | {k: v for k, v in (settings or {}).items() if v is not None}
    if int(s.get("max_concurrency", 1)) != 1 or not s.get("no_catchup", True):
        raise CrownsamError(
            None, "the retraining schedule runs with max_concurrency=1 and no_catchup=true; settings differ"
        )
    if s.get("pipeline_name", PIPELINE_NAME) != PIPELINE_NAME:
        raise CrownsamError(
            None, f"pipeline_name {s['pipeline_name']!r}: this command schedules {PIPELINE_NAME}"
        )
    cron = check_cron(s["cron_expression"])
    _check_pipeline_root(s.get("pipeline_root"))
    params = check_params(dict(s.get("params") or {}) | params)
    if client is None:
        from kfp import Client

        client = Client(host=host, namespace=namespace) if namespace else Client(host=host)
    try:
        experiment = client.get_experiment(experiment_name=s["experiment_name"], namespace=namespace)
    except ValueError:  # kfp: "No experiment is found with name ..."
        experiment = client.create_experiment(s["experiment_name"], namespace=namespace)
    existing = client.list_recurring_runs(
        experiment_id=experiment.experiment_id, page_size=100, namespace=namespace
    )
    same = [r for r in (existing.recurring_runs or []) if r.display_name == s["job_name"]]
    if same and not replace:
        raise CrownsamError(
            None,
            f"a recurring run named {s['job_name']} already exists in experiment {s['experiment_name']} "
            f"({same[0].recurring_run_id}); pass --replace to replace it",
        )
    for r in same:
        client.delete_recurring_run(r.recurring_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_retraining(Path(tmp) / "retraining.yaml")
        return client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=s["job_name"],
            description=s.get("description"),
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=params,
            pipeline_package_path=str(package),
            enabled=bool(s.get("enabled", True)),
            pipeline_root=s.get("pipeline_root"),
            enable_caching=bool(s.get("enable_caching", False)),
            service_account=s.get("service_account"),
        )


def submit_retraining(
    host: str | None,
    params: Dict[str, Any],
    *,
    experiment: str = "crownsam-scheduled-retraining",
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = "crownsam-pipeline",
    namespace: str | None = None,
    client: Any = None,
) -> Any:
    """Compile and submit one run of the retraining pipeline (caching off); returns kfp's result."""
    params = check_params(params)
    _check_pipeline_root(pipeline_root)
    if client is None:
        from kfp import Client

        client = Client(host=host, namespace=namespace) if namespace else Client(host=host)
    from crownsam.pipelines.submit import send

    return send(
        client,
        retraining_pipeline,
        params,
        run_name=run_name,
        experiment=experiment,
        namespace=namespace,
        pipeline_root=pipeline_root,
        enable_caching=False,
        service_account=service_account,
    )
