"""Every command line printed in README.md and in the step READMEs runs here, so documentation and code
cannot drift apart. ``DOCUMENTED`` is the one list: each printed command (as printed, spaces normalised)
with the concrete command that runs it on a small synthetic flight (placeholders filled in, plus the
flags that keep it fast), or the test or CI target that runs it when it cannot run inside this suite.

* ``test_every_printed_command_is_listed`` fails when a README gains, changes or loses a command line
  that this list does not know about (then add or update its entry).
* Each entry then runs for real: the ``crownsam`` command in this process, against real files, a real
  GCS emulator for ``gs://`` URIs, SQLite MLflow stores, untrained SAM2 weights (uploaded to the emulator
  where a command names a ``gs://`` checkpoint). Stand-ins only where a cluster is needed: the Kubeflow
  Pipelines API (``crownsam submit``, ``flights retrain --submit-to``, ``flights schedule``) is
  ``kfp_stand_in.RecordingClient``, which checks each call against ``kfp.Client``'s signature.
"""

from __future__ import annotations

import contextlib
import glob
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import kfp
import pytest
import yaml
from kfp_stand_in import RecordingClient

from crownsam import cli
from crownsam.flights.catalog import FlightMeta, dump_meta
from crownsam.synthetic import ScenePaths, generate_scene

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    "README.md",
    *sorted(str(Path(p).relative_to(ROOT)) for p in glob.glob(str(ROOT / "components/*/README.md"))),
]
STARTS = ("crownsam ", "make ", "kubectl ", "source ", "torchrun ", "mlflow ")


def printed_commands() -> dict[str, str]:
    """Command lines in the READMEs' shell code blocks: normalised text -> the README it is in. A line
    ending in ``\\`` or followed by indented lines continues; ``# comments`` are dropped."""
    out: dict[str, str] = {}
    for doc in DOCS:
        fence, lines = None, (ROOT / doc).read_text().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("```"):
                fence = None if fence is not None else line[3:].strip()
                i += 1
                continue
            if fence in ("sh", "bash") and line.strip().startswith(STARTS):
                parts = [line]
                while parts[-1].rstrip().endswith("\\") or (
                    i + 1 < len(lines)
                    and lines[i + 1].startswith("    ")
                    and not lines[i + 1].lstrip().startswith("#")
                ):
                    i += 1
                    parts.append(lines[i])
                text = " ".join(p.split(" #")[0].strip().rstrip("\\").strip() for p in parts)
                out[" ".join(text.split())] = doc
            i += 1
    return out


# ------------------------------------------------------------------------------------------ workspace


@dataclass
class Workspace:
    """A small flight (1024 px, one SAM2 window) and the outputs of the commands run so far."""

    root: Path
    scene: ScenePaths
    done: dict[str, object]

    def path(self, name: str) -> Path:
        return self.root / name

    def once(self, key: str, make: Callable[[], object]) -> object:
        if key not in self.done:
            self.done[key] = make()
        return self.done[key]


def crownsam(*argv: object) -> None:
    """Run one ``crownsam`` command in this process; it must succeed."""
    assert cli.main([str(a) for a in argv]) == 0, argv


FAST_TRAIN = ["--max-iters", "1", "--epochs", "1", "--batch-size", "1", "--device", "cpu"]
FAST_EXPORT = ["--chip", "256", "--overlap", "0", "--val-block", "1", "--buffer", "0.5"]


def plan(ws: Workspace) -> Path:
    return ws.once(
        "plan",
        lambda: (
            crownsam(
                "tile",
                "--ortho",
                ws.scene.ortho,
                "--segments",
                ws.scene.coarse,
                "--out",
                ws.path("plan.json"),
                "--shards",
                "1",
            ),
            ws.path("plan.json"),
        )[1],
    )


def pseudo(ws: Workspace) -> Path:
    def make() -> Path:
        crownsam(
            "pseudolabel",
            "--ortho",
            ws.scene.ortho,
            "--segments",
            ws.scene.coarse,
            "--out",
            ws.path("shard0.gpkg"),
            "--plan",
            plan(ws),
            "--shard",
            "0/1",
            "--untrained",
            "--device",
            "cpu",
            "--no-progress",
        )
        crownsam("merge-labels", "--inputs", ws.path("shard0.gpkg"), "--out", ws.path("pseudo.gpkg"))
        return ws.path("pseudo.gpkg")

    return ws.once("pseudo", make)  # type: ignore[return-value]


def coco(ws: Workspace, source: str = "coarse") -> Path:
    labels = ws.scene.coarse if source == "coarse" else pseudo(ws)

    def make() -> Path:
        crownsam(
            "export-coco",
            "--ortho",
            ws.scene.ortho,
            "--labels",
            labels,
            "--out",
            ws.path(f"coco-{source}"),
            "--holdout",
            ws.scene.test_area,
            "--manual",
            ws.scene.manual,
            *FAST_EXPORT,
        )
        return ws.path(f"coco-{source}")

    return ws.once(f"coco-{source}", make)  # type: ignore[return-value]


def model(ws: Workspace, source: str = "coarse") -> Path:
    def make() -> Path:
        crownsam(
            "train",
            "--coco",
            coco(ws, source),
            "--out",
            ws.path(f"run-{source}"),
            "--label-source",
            source,
            *FAST_TRAIN,
            "--tracking-uri",
            f"sqlite:///{ws.path('mlflow.db')}",
            "--no-progress",
        )
        return ws.path(f"run-{source}")

    return ws.once(f"model-{source}", make)  # type: ignore[return-value]


def model_eval(ws: Workspace, source: str = "coarse") -> Path:
    def make() -> Path:
        crownsam(
            "evaluate-model",
            "--model",
            model(ws, source),
            "--coco",
            coco(ws, source),
            "--out",
            ws.path(f"eval-{source}"),
            "--manual",
            ws.scene.manual,
            "--area",
            ws.scene.test_area,
            "--ortho",
            ws.scene.ortho,
            "--window",
            "512",
            "--device",
            "cpu",
            "--no-progress",
            "--tracking-uri",
            f"sqlite:///{ws.path('mlflow.db')}",
        )
        return ws.path(f"eval-{source}")

    return ws.once(f"eval-{source}", make)  # type: ignore[return-value]


def label_eval(ws: Workspace) -> Path:
    def make() -> Path:
        crownsam(
            "evaluate",
            "--manual",
            ws.scene.manual,
            "--labels",
            f"coarse={ws.scene.coarse}",
            "--labels",
            f"pseudo={pseudo(ws)}",
            "--area",
            ws.scene.test_area,
            "--ortho",
            ws.scene.ortho,
            "--out",
            ws.path("label-eval"),
            "--n-boot",
            "200",
        )
        return ws.path("label-eval")

    return ws.once("label-eval", make)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------- what each one runs


def run_demo_data(ws: Workspace) -> None:
    crownsam("demo-data", ws.path("demo"), "--size", "512", "--seed", "3")
    assert {p.name for p in ws.path("demo").iterdir()} >= {
        "ortho.tif",
        "chm.tif",
        "coarse.gpkg",
        "manual.gpkg",
    }


def run_segment_chm(ws: Workspace) -> None:
    crownsam("segment-chm", "--chm", ws.scene.chm, "--out", ws.path("chm-crowns.gpkg"))
    assert len(gpd.read_file(ws.path("chm-crowns.gpkg"))) > 10


def run_segment_chm_options(ws: Workspace) -> None:
    crownsam(
        "segment-chm",
        "--chm",
        ws.scene.chm,
        "--out",
        ws.path("chm-opts.gpkg"),
        "--min-height",
        "2",
        "--smooth",
        "1",
        "--window-from-height",
        "0.2,0.03",
        "--min-prominence",
        "0.1",
        "--block",
        "256",
        "--overlap",
        "64",
        "--summary",
        ws.path("chm-opts.json"),
    )
    assert json.loads(ws.path("chm-opts.json").read_text())["crowns"] == len(
        gpd.read_file(ws.path("chm-opts.gpkg"))
    )


def run_tile(ws: Workspace) -> None:
    assert plan(ws).is_file()


def run_pseudolabel(ws: Workspace) -> None:
    labels = gpd.read_file(pseudo(ws))
    assert len(labels) > 0 and labels["untrained"].all()


def run_pseudolabel_options(ws: Workspace) -> None:
    """The pseudolabel synopsis with its closed-canopy options (untrained SAM2, one window)."""
    run_pseudolabel(ws)
    out = ws.path("pseudo-options.gpkg")
    crownsam(
        "pseudolabel", "--ortho", ws.scene.ortho, "--segments", ws.scene.coarse, "--out", out,
        "--min-ndvi", "0.3", "--red-band", "3", "--nir-band", "4", "--prompt", "box+point",
        "--chm", ws.scene.chm, "--negative-calibration", "--fallback-min-area-ratio", "0.2",
        "--fallback-max-area-ratio", "8", "--fallback-min-iou", "0.1", "--fallback-min-score", "0.5",
        "--untrained", "--device", "cpu", "--no-progress", "--workers", "1", "--window-batch", "1",
    )  # fmt: skip
    summary = json.loads(ws.path("pseudo-options.summary.json").read_text())
    assert summary["window_loop"] == {"workers": 1, "window_batch": 1}
    assert summary["treetop_sources"] == {"chm": summary["segments_prompted"]}
    assert summary["overlap_in_output"]["pairs"] == 0


def run_evaluate(ws: Workspace) -> None:
    out = label_eval(ws)
    assert {"per_tree.csv", "metrics.json", "report.html"} <= {p.name for p in out.iterdir()}


def run_export_coco(ws: Workspace) -> None:
    assert json.loads((coco(ws) / "export.json").read_text())["splits"]["train"]["chips"] > 0


def classed(ws: Workspace) -> Path:
    """The coarse crowns in pseudo-classes (spectral features, K by silhouette over 2..4)."""

    def make() -> Path:
        out = ws.path("classed.gpkg")
        crownsam("pseudo-classes", "--ortho", ws.scene.ortho, "--labels", ws.scene.coarse, "--out", out)
        return out

    return ws.once("classed", make)  # type: ignore[return-value]


def run_pseudo_classes(ws: Workspace) -> None:
    frame = gpd.read_file(classed(ws))
    assert len(set(frame["pseudo_class"]) - {-1}) >= 2
    assert ws.path("classed.centres.json").is_file() and ws.path("classed.report.html").is_file()


def run_pseudo_classes_options(ws: Workspace) -> None:
    """Every option but SAM2's features (those run in tests/classes), then the fit's centres assign the
    manual crowns (``--centres FILE``)."""
    out = ws.path("classed-opts.gpkg")
    crownsam(
        "pseudo-classes",
        "--ortho",
        ws.scene.ortho,
        "--labels",
        ws.scene.coarse,
        "--out",
        out,
        "--k",
        "3",
        "--features",
        "spectral",
        "--band-names",
        "blue,green,red,nir,red_edge,thermal",
        "--indices",
        "ndvi,ndre,gndvi,gcc",
        "--percentiles",
        "10,90",
        "--texture-px",
        "5",
        "--min-pixels",
        "16",
        "--seed",
        "0",
        "--restarts",
        "3",
        "--batch-size",
        "1024",
        "--silhouette-sample",
        "5000",
        "--model",
        "sam2.1_hiera_t",
        "--rgb-bands",
        "3,2,1",
        "--device",
        "cpu",
        "--cache-dir",
        ws.path("cache"),
    )
    assert set(gpd.read_file(out)["pseudo_class"]) - {-1} == {0, 1, 2}
    assigned = ws.path("manual-classed.gpkg")
    centres = ws.path("classed-opts.centres.json")
    crownsam(
        "pseudo-classes",
        "--ortho",
        ws.scene.ortho,
        "--labels",
        ws.scene.manual,
        "--out",
        assigned,
        "--centres",
        centres,
    )
    assert set(gpd.read_file(assigned)["pseudo_class"]) <= {-1, 0, 1, 2}


def run_export_coco_classes(ws: Workspace) -> None:
    out = ws.path("coco-classed")
    crownsam(
        "export-coco",
        "--ortho",
        ws.scene.ortho,
        "--labels",
        classed(ws),
        "--out",
        out,
        "--holdout",
        ws.scene.test_area,
        "--manual",
        ws.scene.manual,
        *FAST_EXPORT,
        "--class-column",
        "pseudo_class",
    )
    names = [c["name"] for c in json.loads((out / "export.json").read_text())["categories"]]
    assert len(names) >= 2 and names[0] == "class_0"


def run_train(ws: Workspace) -> None:
    assert (model(ws) / "checkpoints" / "last.pt").is_file()


def run_predict(ws: Workspace) -> None:
    crownsam(
        "predict",
        "--model",
        model(ws),
        "--ortho",
        ws.scene.ortho,
        "--out",
        ws.path("pred.gpkg"),
        "--area",
        ws.scene.test_area,
        "--window",
        "512",
        "--device",
        "cpu",
        "--workers",
        "1",
        "--no-progress",
    )
    assert ws.path("pred.gpkg").is_file()


def run_evaluate_model(ws: Workspace) -> None:
    assert "segm_AP" in json.loads((model_eval(ws) / "metrics.json").read_text())["metrics"]


def run_compare(ws: Workspace) -> None:
    crownsam(
        "compare",
        "--labels-eval",
        label_eval(ws),
        "--model",
        f"coarse={model_eval(ws, 'coarse')}",
        "--model",
        f"pseudo={model_eval(ws, 'pseudo')}",
        "--out",
        ws.path("compare"),
        "--register",
        "doc-commands",
        "--tracking-uri",
        f"sqlite:///{ws.path('mlflow.db')}",
    )
    result = json.loads((ws.path("compare") / "comparison.json").read_text())
    assert set(result["registry"]["versions"]) == {"coarse", "pseudo"}


def run_compile_run_submit(ws: Workspace) -> None:
    crownsam("compile", "--out", ws.path("pipeline.yaml"))
    assert yaml.safe_load(ws.path("pipeline.yaml").read_text())["pipelineInfo"]["name"] == "crownsam"
    run_pipeline(ws, ws.scene.root)
    submit(
        [
            "--param",
            "flight_id=f1",
            "--param",
            "ortho_uri=gs://b/o.tif",
            "--param",
            "manual_uri=gs://b/m.gpkg",
            "--param",
            "test_area_uri=gs://b/t.gpkg",
        ]
    )


FAST_PIPELINE = [
    "shards=1",
    "chip=256",
    "chip_overlap=0",
    "val_block=1",
    "holdout_buffer_m=0.5",
    "max_iters=1",
    "epochs=1",
    "batch_size=1",
]


def run_pipeline(ws: Workspace, flight: Path | str, *extra: str) -> Path:
    """``crownsam run`` on a flight folder (untrained SAM2 unless ``extra`` names a checkpoint)."""
    out = ws.path(f"pipeline-{len(ws.done)}")
    weights = [] if "--checkpoint" in extra else ["--untrained"]
    crownsam(
        "run",
        "--flight",
        flight,
        "--out",
        out,
        *weights,
        *extra,
        *(x for p in FAST_PIPELINE for x in ("--param", p)),
    )
    ws.done[str(out)] = out
    return out


def submit(
    argv: list[str], command: tuple[str, ...] = ("submit", "--host", "https://kfp.example.com/pipeline")
) -> RecordingClient:
    """A command that talks to Kubeflow Pipelines, with the recorder as ``kfp.Client``."""
    made: list[RecordingClient] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kfp, "Client", lambda *a, **k: made.append(RecordingClient(*a, **k)) or made[-1])
        crownsam(*command, *argv)
    (client,) = made
    return client


def run_submit_full(ws: Workspace) -> None:
    bucket = "gs://BUCKET/flights/f1"
    client = submit([
        "--pipeline-root", "gs://BUCKET/kfp", "--param", "flight_id=f1", "--param", f"ortho_uri={bucket}/ortho.tif",
        "--param", f"coarse_uri={bucket}/coarse.gpkg", "--param", f"manual_uri={bucket}/manual.gpkg",
        "--param", f"test_area_uri={bucket}/test_area.gpkg",
        "--param", "sam2_checkpoint=gs://BUCKET/models/sam2.1_hiera_large.pt", "--param", "sam2_model=sam2.1_hiera_l",
        "--param", "mlflow_tracking_uri=http://mlflow.crownsam.svc.cluster.local:5000",
    ])  # fmt: skip
    args = client.only("create_run_from_pipeline_package")["arguments"]
    assert args["sam2_model"] == "sam2.1_hiera_l" and args["flight_id"] == "f1"


def run_images_env_compile(ws: Workspace) -> None:
    """What docker/build.sh writes to build/images/images.env, then the printed command."""
    env = ws.path("images.env")
    env.write_text(
        "CROWNSAM_CPU_IMAGE=reg.example/crownsam-cpu:t1\nCROWNSAM_GPU_IMAGE=reg.example/crownsam-gpu:t1\n"
    )
    out = ws.path("crownsam.yaml")
    exe = Path(sys.executable).with_name("crownsam")
    subprocess.run(["bash", "-c", f"set -a; source {env}; set +a; {exe} compile --out {out}"], check=True)
    text = out.read_text()
    assert "reg.example/crownsam-cpu:t1" in text and "reg.example/crownsam-gpu:t1" in text


def everything(ws: Workspace) -> Path:
    """Untrained SAM2's automatic masks, few points and passes (plumbing), one shard then the merge."""

    def make() -> Path:
        crownsam(
            "segment-everything",
            "--ortho",
            ws.scene.ortho,
            "--out",
            ws.path("amg-shard0"),
            "--shard",
            "0/1",
            "--untrained",
            "--device",
            "cpu",
            "--points-per-side",
            "4",
            "--passes",
            "2",
            "--pred-iou-start",
            "0",
            "--pred-iou-floor",
            "0",
            "--stability-start",
            "0",
            "--stability-floor",
            "0",
            "--no-progress",
        )
        crownsam("merge-everything", "--inputs", ws.path("amg-shard0"), "--out", ws.path("masks.gpkg"))
        return ws.path("masks.gpkg")

    return ws.once("masks", make)  # type: ignore[return-value]


def run_segment_everything(ws: Workspace) -> None:
    assert gpd.read_file(everything(ws))["untrained"].all()


def run_add_missed(ws: Workspace) -> None:
    crownsam(
        "add-missed",
        "--labels",
        pseudo(ws),
        "--masks",
        everything(ws),
        "--ortho",
        ws.scene.ortho,
        "--out",
        ws.path("completed.gpkg"),
        "--chm",
        ws.scene.chm,
    )
    assert len(gpd.read_file(ws.path("completed.gpkg"))) >= len(gpd.read_file(pseudo(ws)))


def run_refine(ws: Workspace) -> None:
    """Both methods (untrained SAM2; the coarse segments stand in for predictions), then SESSRS tuned on the
    manual crowns with the choice logged to an MLflow run."""
    ws.once("refine", lambda: _refine_all(ws))


def _refine_all(ws: Workspace) -> None:
    from mlflow.tracking import MlflowClient

    base = ["refine", "--ortho", ws.scene.ortho, "--predictions", ws.scene.coarse, "--no-progress"]
    box = ["--method", "box", "--untrained", "--device", "cpu", "--workers", "1"]
    crownsam(*base, "--out", ws.path("refined-box.gpkg"), *box)
    masks = ["--masks", everything(ws)]
    crownsam(*base, "--out", ws.path("refined-sessrs.gpkg"), "--method", "sessrs", *masks, "--t1", "0.5")
    uri = f"sqlite:///{ws.path('refine-mlflow.db')}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("refine"))
    tune = ["--tune", "--tune-truth", ws.scene.manual, "--tune-area", ws.scene.test_area]
    mlflow = ["--tracking-uri", uri, "--run-id", run.info.run_id]
    crownsam(*base, "--out", ws.path("refined-tuned.gpkg"), "--method", "sessrs", *masks, *tune, *mlflow)
    assert "refine_t1" in client.get_run(run.info.run_id).data.metrics
    assert gpd.read_file(ws.path("refined-box.gpkg"))["untrained"].all()


def run_flights_scan(ws: Workspace, *extra: str) -> None:
    crownsam("flights", "scan", "--root", "gs://my-flights", *extra)


def run_flights_retrain_local(ws: Workspace, *extra: str) -> None:
    crownsam(
        "flights",
        "retrain",
        "--root",
        "gs://my-flights",
        "--local",
        "--checkpoint",
        "gs://my-bucket/models/sam2.1_hiera_tiny.pt",
        *extra,
        *FAST_EXPORT[:2],
        "--val-block",
        "1",
        "--buffer",
        "0.5",
        "--max-iters",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "1",
        "--device",
        "cpu",
    )


def run_flights_submit(ws: Workspace, *extra: str) -> None:
    client = submit(
        ["--root", "gs://my-flights", "--submit-to", "https://kfp.example.com/pipeline", *extra],
        command=("flights", "retrain"),
    )
    assert client.only("create_run_from_pipeline_package")["arguments"]["root"] == "gs://my-flights"


def run_flights_schedule(ws: Workspace) -> None:
    client = submit(
        [
            "--host",
            "https://kfp.example.com/pipeline",
            "--root",
            "gs://my-flights",
            "--from-configmap",
            str(ROOT / "k8s/base/recurring-run.yaml"),
            "--pipeline-root",
            "gs://my-bucket/kfp-root",
            "--checkpoint",
            "gs://my-bucket/models/sam2.1_hiera_tiny.pt",
        ],
        command=("flights", "schedule"),
    )
    assert client.only("create_recurring_run")["cron_expression"] == "0 0 3 * * *"


def run_gs_flight(ws: Workspace) -> None:
    """The README's real-data example: a flight in a bucket and a checkpoint behind an https:// URL. Here
    the bucket is the emulator's and the URL a local server's (no internet), serving untrained hiera tiny
    weights (hiera large untrained on CPU would only cost minutes; the loading path is the same)."""
    url = ws.done["weights_url"]
    run_pipeline(
        ws,
        "gs://my-bucket/flights/f2026-06-01",
        "--checkpoint",
        str(url),
        "--param",
        "sam2_model=sam2.1_hiera_t",
    )


# --------------------------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class Entry:
    """How a printed command is checked: ``run`` here, or ``covered_by`` another test or CI target."""

    run: Callable[[Workspace], None] | None = None
    covered_by: str = ""
    slow: bool = False


DOCUMENTED: dict[str, Entry] = {
    "crownsam segment-everything --ortho ORTHO.tif --out MASKS.gpkg [--tile 1024] [--padding 128] [--passes 4] [--model sam2.1_hiera_t|s|b+|l] [--checkpoint URI | --untrained] [--device auto|cpu|cuda] [--rgb-bands 3,2,1] [--points-per-side 32] [--points-per-batch 64] [--pred-iou-start 0.93] ... [--shard I/N] [--resume-dir DIR] [--summary JSON]": Entry(
        run_segment_everything, slow=True
    ),
    "crownsam merge-everything --inputs SHARD_DIR0 SHARD_DIR1 ... --out MASKS.gpkg": Entry(
        run_segment_everything, slow=True
    ),
    "crownsam add-missed --labels PSEUDO.gpkg --masks MASKS.gpkg --ortho ORTHO.tif --out COMPLETED.gpkg [--chm CHM.tif] [--min-ndvi 0.6] [--min-height 2] [--max-overlap 0.2] [--min-area 1] [--max-area 60] ...": Entry(
        run_add_missed, slow=True
    ),
    "crownsam refine --ortho ORTHO.tif --predictions PRED.gpkg --out REFINED.gpkg --method box|sessrs [--masks MASKS.gpkg] [--t1 0.5] [--t2 0.5] [--checkpoint URI | --untrained] [--device auto|cpu|cuda] [--workers N]": Entry(
        run_refine, slow=True
    ),
    "crownsam refine --ortho ORTHO.tif --predictions PRED.gpkg --out REFINED.gpkg --method sessrs --masks MASKS.gpkg --tune --tune-truth VAL_CROWNS.gpkg [--tune-area VAL_AREA.gpkg] [--t1-grid 0.3,0.4,...] [--t2-grid 0.5,0.55,...] [--tracking-uri URI --run-id RUN_ID]": Entry(
        run_refine, slow=True
    ),
    "make run": Entry(run_compile_run_submit, slow=True),  # `make run` is `crownsam run` on the demo flight
    "make test": Entry(covered_by=".ci/run on a clean clone"),
    "make lint": Entry(covered_by=".ci/run on a clean clone"),
    "make test-slow": Entry(covered_by="the slow-marked tests (this file's included)"),
    "make test-images": Entry(covered_by="tests/docker/test_dockerfiles.py (images marker)"),
    "make bench": Entry(covered_by="benchmarks/ (figures in the closing notes)"),
    "make golden": Entry(covered_by="tests/pipelines/test_compile.py (compares the file it writes)"),
    "make images REGISTRY=europe-docker.pkg.dev/PROJECT/crownsam PUSH=1": Entry(
        covered_by="tests/docker/test_dockerfiles.py (build.sh with a recording engine; podman builds)"
    ),
    "kubectl apply -k k8s/overlays/example": Entry(
        covered_by="tests/k8s/test_manifests.py (kustomize build)"
    ),
    "torchrun --nproc-per-node 4 -m crownsam.cli train ...": Entry(
        covered_by="tests/training/test_slow.py (DDP)"
    ),
    "source build/images/images.env && crownsam compile --out crownsam.yaml": Entry(run_images_env_compile),
    "crownsam demo-data OUT_DIR [--size 4096] [--seed 0]": Entry(run_demo_data),
    "crownsam segment-chm --chm CHM.tif --out COARSE.gpkg": Entry(run_segment_chm),
    "crownsam segment-chm --chm CHM.tif --out COARSE.gpkg [--min-height M] [--smooth SIGMA] [--min-distance PX | "
    "--window-from-height A,B] [--min-prominence M] [--block PX] [--overlap PX] [--summary SUMMARY.json]": Entry(
        run_segment_chm_options
    ),
    "crownsam tile --ortho ORTHO.tif --segments COARSE.gpkg --out PLAN.json [--shards N]": Entry(run_tile),
    "crownsam pseudolabel --ortho ORTHO.tif --segments COARSE.gpkg --out PSEUDO.gpkg [--plan PLAN.json] "
    "[--shard I/N] [--model sam2.1_hiera_t|s|b+|l] [--checkpoint URI | --untrained] [--rgb-bands 3,2,1] "
    "[--device auto|cpu|cuda] [--batch-size 16] [--resume-dir DIR] [--fix-geometries] "
    "[--min-ndvi X [--red-band N] [--nir-band N]] [--prompt box|point|box+point] [--chm CHM.tif] "
    "[--negative-calibration] [--no-exclusive] [--no-fallback] [--fallback-min-area-ratio 0.2] "
    "[--fallback-max-area-ratio 8] [--fallback-min-iou 0.1] [--fallback-min-score 0.5] "
    "[--workers N] [--window-batch 1]": Entry(run_pseudolabel_options, slow=True),
    "crownsam pseudolabel --ortho ORTHO.tif --segments COARSE.gpkg --out PSEUDO.gpkg [--workers N] "
    "[--window-batch 1]": Entry(run_pseudolabel_options, slow=True),
    "crownsam merge-labels --inputs SHARD0.gpkg SHARD1.gpkg … --out PSEUDO.gpkg": Entry(run_pseudolabel),
    "crownsam evaluate --manual MANUAL.gpkg --labels coarse=COARSE.gpkg --labels pseudo=PSEUDO.gpkg "
    "[--area TEST_AREA.gpkg] [--ortho ORTHO.tif] --out DIR": Entry(run_evaluate),
    "crownsam evaluate --manual manual.gpkg --labels coarse=coarse.gpkg --labels pseudo=pseudolabels.gpkg "
    '[--area test_area.gpkg] [--ortho ortho.tif] [--rgb-bands 3,2,1] [--banner "UNTRAINED SAM2: these '
    'pseudolabels are meaningless"] [--title TEXT] [--n-boot 2000] [--seed 0] --out eval/': Entry(
        run_evaluate
    ),
    "crownsam export-coco --ortho ORTHO.tif --labels LABELS.gpkg --out DIR [--holdout TEST_AREA.gpkg "
    "--manual MANUAL.gpkg] [--class-column pseudo_class]": Entry(run_export_coco_classes),
    "crownsam pseudo-classes --ortho ORTHO.tif --labels PSEUDO.gpkg --out CLASSED.gpkg [--k K | --k-range 2..8 | "
    "--centres FILE] [--features spectral|sam2|both] [--checkpoint URI | --untrained]": Entry(
        run_pseudo_classes
    ),
    "crownsam pseudo-classes --ortho ORTHO.tif --labels LABELS.gpkg --out CLASSED.gpkg [--k K | --k-range 2..8 | "
    "--centres FILE] [--features spectral|sam2|both] [--checkpoint URI | --untrained] [--band-names NAMES] "
    "[--indices ndvi,ndre,gndvi,gcc] [--percentiles 10,90] [--texture-px 5] [--min-pixels 16] [--seed 0] "
    "[--restarts 10] [--batch-size 1024] [--silhouette-sample 5000] [--model sam2.1_hiera_t] [--rgb-bands 3,2,1] "
    "[--device auto] [--cache-dir DIR]": Entry(run_pseudo_classes_options),
    "crownsam export-coco --ortho ORTHO.tif --labels LABELS.gpkg --out DIR [--holdout TEST_AREA.gpkg "
    "[--manual MANUAL.gpkg]] [--chip 1024] [--overlap 0.25] [--bands 3,2,1] [--val-fraction 0.15] "
    "[--val-block 4] [--buffer 10] [--seed 0] [--sliver-fraction 0.2] [--sliver-px 64]": Entry(
        run_export_coco
    ),
    "crownsam train --coco DIR --out RUN_DIR [--label-source pseudo] [--epochs N] [--max-iters N] "
    "[--tracking-uri URI]": Entry(run_train, slow=True),
    "crownsam train --coco COCO_DIR --out RUN_DIR [--label-source coarse] [--epochs 20] [--max-iters N] "
    "[--lr 0.005] [--batch-size 2] [--bands auto|3,2,1,4] [--model v2|v1] [--weights URI] [--resume] "
    "[--patience 5] [--seed 0] [--device auto|cpu|cuda] [--tracking-uri URI] [--experiment crownsam] "
    "[--run-name NAME] [--register MODEL_NAME] [--tag KEY=VALUE] [--no-tracking]": Entry(
        run_train, slow=True
    ),
    "crownsam predict --model RUN_DIR|runs:/…|models:/NAME@champion --ortho ORTHO.tif --out PRED.gpkg "
    "[--area AREA.gpkg]": Entry(run_predict, slow=True),
    "crownsam predict --model MODEL --ortho ORTHO.tif --out PRED.gpkg [--area AREA.gpkg] [--window 1024] "
    "[--overlap 0.25] [--score-threshold 0.5] [--bands B,B,B] [--stretch model|scene] [--batch-size 1] "
    "[--workers N]": Entry(run_predict, slow=True),
    "crownsam evaluate-model --model … --coco DIR --out DIR [--manual MANUAL.gpkg --area AREA.gpkg "
    "--ortho ORTHO.tif]": Entry(run_evaluate_model, slow=True),
    "crownsam evaluate-model --model MODEL --coco COCO_DIR --out EVAL_DIR [--manual MANUAL.gpkg --ortho ORTHO.tif "
    "[--area AREA.gpkg]] [--split test] [--no-mlflow] [--workers N]": Entry(run_evaluate_model, slow=True),
    "crownsam compare --labels-eval DIR --model coarse=DIR --model pseudo=DIR --out DIR [--register NAME]": Entry(
        run_compare, slow=True
    ),
    "crownsam compile --out pipeline.yaml | crownsam run --flight DIR | crownsam submit --host URL "
    "--param K=V …": Entry(run_compile_run_submit, slow=True),
    "crownsam run --flight gs://my-bucket/flights/f2026-06-01 --out out/f1 --checkpoint "
    "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt --param "
    "sam2_model=sam2.1_hiera_l --param epochs=24": Entry(run_gs_flight, slow=True),
    "crownsam submit --host https://KFP_HOST/pipeline --pipeline-root gs://BUCKET/kfp --param flight_id=f1 "
    "--param ortho_uri=gs://BUCKET/flights/f1/ortho.tif --param coarse_uri=gs://BUCKET/flights/f1/coarse.gpkg "
    "--param manual_uri=gs://BUCKET/flights/f1/manual.gpkg --param test_area_uri=gs://BUCKET/flights/f1/"
    "test_area.gpkg --param sam2_checkpoint=gs://BUCKET/models/sam2.1_hiera_large.pt --param "
    "sam2_model=sam2.1_hiera_l --param mlflow_tracking_uri=http://mlflow.crownsam.svc.cluster.local:5000": Entry(
        run_submit_full
    ),
    "crownsam flights scan --root gs://my-flights": Entry(run_flights_scan),
    "crownsam flights scan --root gs://my-flights --tracking-uri http://localhost:5000": Entry(
        run_flights_scan
    ),
    "crownsam flights scan --root URI [--work URI] [--tracking-uri URI] [--experiment NAME] [--bands 3,2,1] "
    "[--json]": Entry(lambda ws: run_flights_scan(ws, "--bands", "3,2,1", "--json")),
    "crownsam flights retrain --root gs://my-flights --local --checkpoint gs://my-bucket/models/sam2.1_hiera_tiny.pt": (
        Entry(run_flights_retrain_local, slow=True)
    ),
    "crownsam flights retrain --root gs://my-flights --local --tracking-uri http://localhost:5000 --checkpoint "
    "gs://my-bucket/models/sam2.1_hiera_tiny.pt": Entry(run_flights_retrain_local, slow=True),
    "crownsam flights retrain --root gs://my-flights --submit-to https://kfp.example.com/pipeline": Entry(
        lambda ws: run_flights_submit(ws, "--untrained")
    ),
    "crownsam flights retrain --root gs://my-flights --submit-to https://kfp.example.com/pipeline --checkpoint "
    "gs://my-bucket/models/sam2.1_hiera_tiny.pt --pipeline-root gs://my-bucket/kfp-root": Entry(
        lambda ws: run_flights_submit(
            ws,
            "--checkpoint",
            "gs://my-bucket/models/sam2.1_hiera_tiny.pt",
            "--pipeline-root",
            "gs://my-bucket/kfp-root",
        )
    ),
    "crownsam flights retrain --root URI (--local | --submit-to KFP_HOST) [--work URI] [--tracking-uri URI] "
    "[--experiment NAME] [--registered-model-name NAME] [--model sam2.1_hiera_t] [--checkpoint URI | --untrained] "
    "[--bands 3,2,1] [--chip 1024] [--overlap 0.25] [--val-fraction 0.15] [--val-block 4] [--buffer 10] "
    "[--epochs 20] [--max-iters N] [--lr 0.005] [--batch-size 2] [--model-version v1|v2] --local: [--device auto] "
    "[--dry-run] [--force] [--json] --submit-to: [--run-name NAME] [--kfp-experiment NAME] [--pipeline-root "
    "gs://...] [--service-account SA] [--namespace NS] [--param NAME=VALUE]": Entry(
        lambda ws: run_flights_submit(ws, "--untrained", "--model-version", "v1", "--param", "lr=0.01")
    ),
    "crownsam flights schedule --host https://kfp.example.com/pipeline --root gs://my-flights --from-configmap "
    "k8s/base/recurring-run.yaml --pipeline-root gs://my-bucket/kfp-root --checkpoint "
    "gs://my-bucket/models/sam2.1_hiera_tiny.pt": Entry(run_flights_schedule),
    "crownsam flights schedule --host KFP_HOST --root URI [--from-configmap k8s/base/recurring-run.yaml] "
    '[--cron "0 0 3 * * *"] [--job-name NAME] [--replace] [--kfp-experiment NAME] [--pipeline-root gs://...] '
    "[--service-account SA] [--namespace NS] [--tracking-uri URI] [retrain options] [--param NAME=VALUE]": Entry(
        run_flights_schedule
    ),
}


# ---------------------------------------------------------------------------------------------- tests


def test_every_printed_command_is_listed() -> None:
    printed = printed_commands()
    missing = sorted(set(printed) - set(DOCUMENTED))
    stale = sorted(set(DOCUMENTED) - set(printed))
    assert not missing, "printed but not in DOCUMENTED (add an entry):\n" + "\n".join(
        f"  {printed[m]}: {m!r}" for m in missing
    )
    assert not stale, "in DOCUMENTED but printed nowhere (remove or update):\n" + "\n".join(map(repr, stale))


def option_names(argv: list[str]) -> set[str]:
    """The options a ``crownsam`` subcommand accepts."""
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    sub = action.choices[argv[0]]  # type: ignore[index]
    if argv[0] == "flights":
        sub = next(a for a in sub._actions if a.dest == "flights_command").choices[argv[1]]  # type: ignore[index]
    return {o for a in sub._actions for o in a.option_strings}


@pytest.mark.parametrize(
    "text", [pytest.param(t, id=t[:70]) for t in DOCUMENTED if t.startswith("crownsam ")]
)
def test_printed_options_exist(text: str) -> None:
    """Every ``--option`` a printed ``crownsam`` command shows is one its parser accepts."""
    for one in text.split(" | "):
        words = one.split()
        if words[0] != "crownsam":
            continue
        known = option_names(words[1:3])
        shown = set(re.findall(r"(--[a-z][a-z0-9-]*)", one)) - {"--local:", "--submit-to:"}
        assert shown <= known, sorted(shown - known)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """The flight, and the same flight in an emulated bucket (gs://my-bucket/flights/f2026-06-01 and a
    catalog at gs://my-flights) with untrained hiera tiny weights at gs://my-bucket/models/."""
    from common.gcs_emulator import gcs_emulator
    from google.cloud import storage as gcs

    from crownsam.common import storage
    from crownsam.pseudolabel.sam2_model import build_sam2_model

    root = tmp_path_factory.mktemp("documented")
    scene = generate_scene(root / "flight", size=1024, seed=8, n_manual=6)
    w = Workspace(root, scene, {})
    with gcs_emulator(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROWNSAM_CACHE", str(root / "cache"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'flights-mlflow.db'}")
        client = gcs.Client.create_anonymous_client()
        for bucket in ("my-bucket", "my-flights"):
            client.create_bucket(bucket)
        names = ("ortho.tif", "chm.tif", "coarse.gpkg", "manual.gpkg", "test_area.gpkg")
        for name in names:
            storage.upload(Path(scene.root) / name, f"gs://my-bucket/flights/f2026-06-01/{name}")
            storage.upload(Path(scene.root) / name, f"gs://my-flights/flights/F1/{name}")
        meta = FlightMeta(
            "2024-06-01", "EPSG:3067", ("blue", "green", "red", "nir", "rededge", "thermal"), "synthetic"
        )
        storage.write_bytes("gs://my-flights/flights/F1/flight.yaml", dump_meta(meta).encode())
        import torch

        weights = root / "sam2.1_hiera_tiny.pt"
        net = build_sam2_model("sam2.1_hiera_t", None, untrained=True, device=torch.device("cpu"))
        torch.save({"model": net.state_dict()}, weights)
        storage.upload(weights, "gs://my-bucket/models/sam2.1_hiera_tiny.pt")
        with serve(root) as url:
            w.done["weights_url"] = f"{url}/sam2.1_hiera_tiny.pt"
            yield w
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A local HTTP server for ``folder`` (stands in for a download site; no internet here)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(t, marks=[pytest.mark.slow] if e.slow else [], id=t[:70])
        for t, e in DOCUMENTED.items()
        if e.run
    ],
)
def test_printed_command_runs(text: str, ws: Workspace) -> None:
    entry = DOCUMENTED[text]
    assert entry.run is not None
    entry.run(ws)


def test_covered_elsewhere_names_a_real_place() -> None:
    for text, entry in DOCUMENTED.items():
        if entry.run is None:
            target = entry.covered_by.split(" ")[0]
            assert (target and (ROOT / target).exists()) or target in (".ci/run", "the"), (text, target)
