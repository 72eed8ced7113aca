"""The retraining pipeline on Kubeflow Pipelines: compiled IR, one run (`retrain --submit-to`), the
recurring run (`schedule`), and the pipeline on KFP's local runner.

No Kubeflow Pipelines API server can run here, so for submit and schedule a recorder with
``kfp.Client``'s method signatures stands in for the client; everything up to that call is real: the
ConfigMap read from k8s/base/recurring-run.yaml, cron checks, parameter checks, the compiled package.
"""

from __future__ import annotations

import json
from pathlib import Path

import kfp
import pytest
import yaml
from flight_helpers import make_scene, upload_flight
from kfp_stand_in import RecordingClient

from crownsam import cli
from crownsam.common.errors import CrownsamError, InputError
from crownsam.flights.catalog import FlightMeta
from crownsam.pipelines.retrain import (
    CLUSTER_TRACKING_URI,
    PIPELINE_NAME,
    SCHEDULE_DEFAULTS,
    check_cron,
    compile_retraining,
    read_schedule_configmap,
    schedule_retraining,
    submit_retraining,
)

CONFIGMAP = Path(__file__).parents[2] / "k8s" / "base" / "recurring-run.yaml"
# ---------------------------------------------------------------------------------------- compiled IR


@pytest.fixture(scope="module")
def ir(tmp_path_factory) -> dict:
    return yaml.safe_load(compile_retraining(tmp_path_factory.mktemp("ir") / "retraining.yaml").read_text())


def test_scan_runs_first_uncached_and_gates_the_gpu_retraining(ir: dict) -> None:
    assert ir["pipelineInfo"]["name"] == PIPELINE_NAME
    tasks = ir["root"]["dag"]["tasks"]
    scan = tasks["scan-flights-op"]
    assert scan["cachingOptions"] == {}  # caching off: it must see the catalog and MLflow as they are now
    (cond_name,) = [n for n in tasks if n != "scan-flights-op"]
    cond = tasks[cond_name]
    assert cond["dependentTasks"] == ["scan-flights-op"]
    assert "scan-flights-op-Output'] == 'retrain'" in cond["triggerPolicy"]["condition"]
    inner = ir["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    retrain = inner["retrain-op"]
    assert retrain["cachingOptions"] == {}
    flights_in = retrain["inputs"]["artifacts"]["flights"]
    assert "scan-flights-op" in json.dumps(flights_in)  # the retraining consumes the scan's artifact
    execs = ir["deploymentSpec"]["executors"]
    gpu = execs["exec-retrain-op"]["container"]
    assert "gpu" in gpu["image"] and gpu["resources"]["accelerator"]["resourceCount"] == "1"
    assert gpu["resources"]["resourceMemoryLimit"] == "32G"
    assert "cpu" in execs["exec-scan-flights-op"]["container"]["image"]
    assert all("pip install" not in " ".join(e["container"].get("command", [])) for e in execs.values())
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert (
        "defaultValue" not in params["root"]
        and params["tracking_uri"]["defaultValue"] == CLUSTER_TRACKING_URI
    )


# ------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("0 3 * * *", "has 5 fields; KFP's cron has six, seconds first: did you mean '0 0 3 * * *'"),
        ("0 0 3 * * * *", "has 7 fields"),
        ("* 0 3 * * *", "first field is the second of the minute"),
        ("*/10 0 3 * * *", "first field is the second of the minute"),
        ("0 0 3 * * $", "'$' is not a cron field"),
    ],
)
def test_cron_needs_six_fields_seconds_first(expr: str, problem: str) -> None:
    with pytest.raises(CrownsamError, match=problem.replace("*", r"\*").replace("$", r"\$")):
        check_cron(expr)


def test_good_cron_expressions_pass() -> None:
    for expr in ("0 0 3 * * *", "0 30 2 * * MON-FRI", "15 0 */6 * * ?", "0 0 3 1,15 * *"):
        assert check_cron(f"  {expr} ") == expr


def test_configmap_values_are_typed() -> None:
    s = read_schedule_configmap(CONFIGMAP)
    assert s["cron_expression"] == "0 0 3 * * *" and s["max_concurrency"] == 1 and s["no_catchup"] is True
    assert s["enable_caching"] is False and s["enabled"] is True and s["params"] == {}
    assert s["pipeline_name"] == PIPELINE_NAME and s["service_account"] == "crownsam-pipeline"


def test_defaults_are_the_configmaps() -> None:
    """Without --from-configmap the schedule gets the same settings as k8s/base/recurring-run.yaml."""
    cm = read_schedule_configmap(CONFIGMAP)
    for key, value in SCHEDULE_DEFAULTS.items():
        if key != "pipeline_root":  # the ConfigMap's is a placeholder for overlays to set
            assert cm[key] == value, key
    assert check_cron(cm["cron_expression"]) == cm["cron_expression"]


def test_schedule_from_the_configmap_creates_one_recurring_run(monkeypatch, capfd) -> None:
    """The exact command of components/flights/README.md, with the recorder as kfp.Client."""
    made: list[RecordingClient] = []
    monkeypatch.setattr(kfp, "Client", lambda *a, **k: made.append(RecordingClient(*a, **k)) or made[-1])
    argv = [
        "flights", "schedule", "--host", "https://kfp.example.com/pipeline", "--root", "gs://my-flights",
        "--from-configmap", str(CONFIGMAP), "--pipeline-root", "gs://my-bucket/kfp-root",
        "--checkpoint", "gs://my-bucket/models/sam2.1_hiera_tiny.pt",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    out = capfd.readouterr().out
    assert "recurring run rr-new created" in out and "'0 0 3 * * *'" in out
    (client,) = made
    assert client.init == {"host": "https://kfp.example.com/pipeline"}
    assert client.only("create_experiment")["name"] == "crownsam-scheduled-retraining"
    call = client.only("create_recurring_run")
    assert call["cron_expression"] == "0 0 3 * * *"
    assert call["max_concurrency"] == 1 and call["no_catchup"] is True
    assert call["enable_caching"] is False and call["enabled"] is True
    assert call["experiment_id"] == "exp-1" and call["job_name"] == "crownsam-scheduled-retraining"
    assert (
        call["service_account"] == "crownsam-pipeline" and call["pipeline_root"] == "gs://my-bucket/kfp-root"
    )
    assert call["params"] == {
        "root": "gs://my-flights",
        "tracking_uri": CLUSTER_TRACKING_URI,
        "sam2_checkpoint": "gs://my-bucket/models/sam2.1_hiera_tiny.pt",
    }
    assert call["package"]["pipelineInfo"]["name"] == PIPELINE_NAME


def test_schedule_refuses_placeholders_duplicates_and_other_concurrency(tmp_path: Path) -> None:
    base = read_schedule_configmap(CONFIGMAP)  # pipeline_root gs://BUCKET/kfp-root: a placeholder
    params = {"root": "gs://f", "untrained": True}
    with pytest.raises(CrownsamError, match="'BUCKET' is not a GCS bucket name"):
        schedule_retraining("h", params, settings=base, client=RecordingClient())
    ok = base | {"pipeline_root": "gs://my-bucket/kfp"}
    client = RecordingClient(existing=["crownsam-scheduled-retraining"])
    client.experiments["crownsam-scheduled-retraining"] = "exp-9"
    with pytest.raises(CrownsamError, match=r"already exists.*--replace"):
        schedule_retraining("h", params, settings=ok, client=client)
    assert not [n for n, _ in client.calls if n == "create_recurring_run"]
    schedule_retraining("h", params, settings=ok, client=client, replace=True)
    assert client.only("delete_recurring_run") == {"recurring_run_id": "rr-0"}
    assert client.only("create_recurring_run")["experiment_id"] == "exp-9"
    with pytest.raises(CrownsamError, match="max_concurrency=1 and no_catchup=true"):
        schedule_retraining("h", params, settings=ok | {"max_concurrency": 2}, client=RecordingClient())
    with pytest.raises(CrownsamError, match="max_concurrency=1 and no_catchup=true"):
        schedule_retraining("h", params, settings=ok | {"no_catchup": False}, client=RecordingClient())
    with pytest.raises(InputError, match="unknown pipeline parameter"):
        schedule_retraining("h", params | {"shards": 2}, settings=ok, client=RecordingClient())
    with pytest.raises(InputError, match="sam2_checkpoint"):
        schedule_retraining("h", {"root": "gs://f"}, settings=ok, client=RecordingClient())
    bad = tmp_path / "cm.yaml"
    bad.write_text(CONFIGMAP.read_text().replace('"1"', '"one"'))
    with pytest.raises(InputError, match="max_concurrency must be an integer"):
        read_schedule_configmap(bad)


def test_cli_schedule_errors_are_one_line(capfd) -> None:
    argv = ["flights", "schedule", "--host", "http://127.0.0.1:9", "--root", "gs://f", "--untrained"]
    assert cli.main([*argv, "--cron", "0 3 * * *"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean '0 0 3 * * *'" in err[0]


# ---------------------------------------------------------------------------------------------- submit


def test_retrain_submit_to_sends_one_run_of_the_retraining_pipeline(monkeypatch, capfd) -> None:
    made: list[RecordingClient] = []
    monkeypatch.setattr(kfp, "Client", lambda *a, **k: made.append(RecordingClient(*a, **k)) or made[-1])
    argv = ["flights", "retrain", "--root", "gs://f", "--submit-to", "https://kfp", "--untrained",
            "--max-iters", "5", "--chip", "512", "--param", "lr=0.01"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "submitted retraining run run-123" in capfd.readouterr().out
    call = made[0].only("create_run_from_pipeline_package")
    assert call["arguments"] == {
        "root": "gs://f", "tracking_uri": CLUSTER_TRACKING_URI, "untrained": True, "chip": 512,
        "max_iters": 5, "lr": 0.01,
    }  # fmt: skip
    assert call["enable_caching"] is False and call["experiment_name"] == "crownsam-scheduled-retraining"
    assert call["service_account"] == "crownsam-pipeline"
    assert call["package"]["pipelineInfo"]["name"] == PIPELINE_NAME
    with pytest.raises(InputError, match=r"missing pipeline parameter\(s\) root"):
        submit_retraining("h", {"untrained": True}, client=RecordingClient())
    with pytest.raises(InputError, match="needs root"):
        submit_retraining("h", {"root": "", "untrained": True}, client=RecordingClient())
    client = RecordingClient()  # values are sent as the pipeline's declared types
    call = submit_retraining(
        "h", {"root": "gs://f", "untrained": "true", "chip": "512", "lr": 1}, client=client
    )
    sent = client.only("create_run_from_pipeline_package")["arguments"]
    assert sent == {"root": "gs://f", "untrained": True, "chip": 512, "lr": 1.0} and call.run_id == "run-123"


# --------------------------------------------------------------------------------------- local runner


@pytest.mark.filterwarnings("ignore::UserWarning:kfp.*", "ignore::RuntimeWarning:kfp.*")
def test_pipeline_on_the_local_runner_skips_or_runs_the_retraining(tmp_path: Path, monkeypatch) -> None:
    """Real subprocess tasks. An empty catalog: the scan says no-flights and the retraining is skipped.
    A flight whose flight.yaml names another CRS than its orthophoto: the scan says retrain (the CRS is
    checked when the flight is processed), the retraining runs and refuses the flight with the reason (in
    its summary and metrics; bad data does not fail the task, whose retries are for preempted nodes)."""
    from kfp import local

    from crownsam.pipelines.retrain import retraining_pipeline

    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "catalog"
    (root / "flights").mkdir(parents=True)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp"),
        workspace_root=str(tmp_path / "ws"),  # else a /tmp/kfp-workspace-* that only a pipeline run removes
    )
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the tasks' temporary folders go with it
    retraining_pipeline(root=str(root), tracking_uri=tracking, untrained=True)
    (run_dir,) = (tmp_path / "kfp").iterdir()
    scan = json.loads(next(run_dir.rglob("scan-flights-op/flights")).read_text())
    assert scan == {"action": "no-flights", "new": [], "flights": []}
    assert not list(run_dir.rglob("retrain-op"))

    scene = make_scene(tmp_path / "scene", seed=21)
    wrong = FlightMeta("2024-06-01", "EPSG:3035", ("b", "g", "r", "n", "re", "t"), "x")
    upload_flight(scene, str(root / "flights" / "F1"), files=("ortho.tif", "coarse.gpkg"), meta=wrong)
    retraining_pipeline(root=str(root), tracking_uri=tracking, untrained=True)  # does not raise
    run_dir = max((tmp_path / "kfp").iterdir(), key=lambda p: p.stat().st_mtime)
    scan = json.loads(next(run_dir.rglob("scan-flights-op/flights")).read_text())
    assert scan["action"] == "retrain" and scan["new"] == ["F1"]
    summary = json.loads(next(run_dir.rglob("retrain-op/summary")).read_text())
    assert summary["status"] == "failed"
    assert "crs EPSG:3035 differs from the orthophoto's EPSG:3067" in summary["failed"]["F1"]
