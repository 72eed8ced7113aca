"""Where the pipeline's Mask R-CNN steps spend their time: one training step (``train_op``'s library call)
and one model evaluation (``evaluate_model_op``'s), as ``crownsam run`` runs them, profiled.

Prints, for each step, its wall and CPU seconds and the cumulative CPU seconds of its phases (model
build, training iterations, validation, checkpoints, test prediction, COCO statistics, pictures, MLflow
run and model logging, tiled prediction over the test area, Jaccard), from ``cProfile`` with a CPU-time
clock (so that other work on a shared machine does not inflate them), plus the top functions by
cumulative CPU time (``--top``).

Input: a COCO export folder (``crownsam export-coco``; e.g. ``out/demo/run/kfp/<run>/export-coco-op/coco``
after ``make run``), or, without ``--coco``, one made here from a synthetic scene. Runs in a fresh MLflow
sqlite store under ``--work``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from _report import report  # benchmarks/_report.py (scripts run from this folder)

# Phases: a label and the functions whose cumulative time makes it (module path suffix, function name).
PHASES = {
    "model build": [("training/model.py", "build_model")],
    "training iterations": [("training/train.py", "train_epoch")],
    "validation (predict + COCOeval)": [("training/train.py", "validate")],
    "checkpoints": [("training/train.py", "checkpoint"), ("training/train.py", "after_validation")],
    "predict chips": [("training/evaluate.py", "predict_split")],
    "COCO statistics": [("training/evaluate.py", "coco_metrics")],
    "prediction pictures": [("training/evaluate.py", "plot_predictions")],
    "MLflow run start/params": [("training/tracking.py", "training_run")],
    "MLflow epoch metrics": [("training/tracking.py", "log_epoch")],
    "MLflow model logging": [("training/tracking.py", "log_model")],
    "MLflow result (metrics, picture)": [("training/tracking.py", "log_result")],
    "model load": [("training/tracking.py", "load_model")],
    "tiled prediction over the test area": [("training/predict.py", "predict_ortho")],
    "Jaccard of predicted crowns": [("evaluation/api.py", "evaluate_label_sets")],
    "MLflow eval metrics": [("training/tracking.py", "log_metrics_to_run")],
}


def phase_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative CPU seconds per phase (the largest matching entry; nested calls are not double counted
    within one phase because cumulative time already includes callees)."""
    out = {}
    raw = stats.stats  # type: ignore[attr-defined]
    for label, funcs in PHASES.items():
        total = 0.0
        for suffix, name in funcs:
            for (path, _line, fn), (_cc, _nc, _tt, ct, _callers) in raw.items():
                if fn == name and path.endswith(suffix):
                    total += ct
        if total:
            out[label] = round(total, 1)
    return out


def profiled(fn, *args, **kwargs) -> tuple[object, dict[str, float], pstats.Stats]:
    prof = cProfile.Profile(time.process_time)
    w0, c0 = time.perf_counter(), time.process_time()
    prof.enable()
    try:
        result = fn(*args, **kwargs)
    finally:
        prof.disable()
    figures = {"wall_s": round(time.perf_counter() - w0, 1), "cpu_s": round(time.process_time() - c0, 1)}
    return result, figures, pstats.Stats(prof)


def make_coco(work: Path, size: int, chip: int) -> tuple[Path, Path]:
    from crownsam.coco.export import export_coco
    from crownsam.coco.params import ExportParams
    from crownsam.synthetic import generate_scene

    scene = generate_scene(work / "scene", size=size, seed=0)
    coco = work / "coco"
    export_coco(
        str(scene.ortho),
        str(scene.coarse),
        str(coco),
        holdout=str(scene.test_area),
        manual=str(scene.manual),
        params=ExportParams(chip=chip, val_block=2, buffer_m=2.0),
    )
    return coco, scene.root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coco", help="a COCO export folder (default: export one from a synthetic scene)")
    p.add_argument("--flight", help="the flight folder of --coco (ortho.tif, manual.gpkg, test_area.gpkg)")
    p.add_argument("--size", type=int, default=2048, help="synthetic scene size without --coco")
    p.add_argument("--chip", type=int, default=512)
    p.add_argument("--max-iters", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--top", type=int, default=25, help="functions to list by cumulative CPU time")
    p.add_argument("--json", help="also save the figures here")
    p.add_argument(
        "--evaluate-test",
        action="store_true",
        help="also evaluate the test split at the end of training (the CLI's default; train_op leaves it to "
        "evaluate_model_op)",
    )
    a = p.parse_args()

    import torch

    from crownsam.training.api import evaluate_model
    from crownsam.training.config import TrainConfig
    from crownsam.training.train import train

    work = Path(a.work or tempfile.mkdtemp(prefix="crownsam-prof-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.coco:
        coco, flight = Path(a.coco), Path(a.flight) if a.flight else None
    else:
        coco, flight = make_coco(work, a.size, a.chip)
    uri = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    figures: dict[str, object] = {"torch_threads": torch.get_num_threads(), "evaluate_test": a.evaluate_test}

    cfg = TrainConfig(
        coco_dir=str(coco),
        out_dir=str(work / "model"),
        label_source="pseudo",
        epochs=1,
        max_iters=a.max_iters,
        batch_size=a.batch_size,
        tracking_uri=uri,
        progress=False,
        evaluate_test=a.evaluate_test,
    )
    _, fig, stats = profiled(train, cfg)
    figures |= {f"train/{k}": v for k, v in fig.items()}
    figures |= {f"train/{k}": v for k, v in phase_seconds(stats).items()}
    train_stats = stats

    kw = {}
    if flight is not None:
        kw = {
            "manual": str(flight / "manual.gpkg"),
            "area": str(flight / "test_area.gpkg"),
            "ortho": str(flight / "ortho.tif"),
        }
    _, fig, stats = profiled(
        evaluate_model,
        str(work / "model"),
        str(coco),
        str(work / "eval"),
        tracking_uri=uri,
        progress=False,
        **kw,
    )
    figures |= {f"evaluate/{k}": v for k, v in fig.items()}
    figures |= {f"evaluate/{k}": v for k, v in phase_seconds(stats).items()}
    report(figures, a.json)
    for name, st in (("train", train_stats), ("evaluate", stats)):
        print(f"\n--- {name}: top {a.top} functions by cumulative CPU seconds", file=sys.stderr)
        st.sort_stats("cumulative").print_stats(a.top)


if __name__ == "__main__":
    main()
