"""Mask R-CNN training and tiled-inference speed and memory on the synthetic scene.

Prints training images/s (optimiser steps of ``--batch-size`` chips of ``--chip`` px, the first step
excluded as warm-up), inference windows/s (``predict_ortho`` over the whole scene in windows of ``--chip``
px with ``--overlap``, after one warm-up forward pass; 9 windows for the default 2048-px scene) and the
peak RSS of each phase. Every phase runs in its own child process, so
each peak RSS is that phase's own. Random weights (no downloads): the same compute as trained weights,
except that an untrained model's detections are random (``--score-threshold`` limits how many masks are
pasted and vectorised).

Default run on 2 CPU cores: a 2048-px scene exported as 1024-px chips, 3 training steps, 9 windows, about
5 minutes. ``--device cuda`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _report import report  # benchmarks/_report.py (scripts run from this folder)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_train(a: argparse.Namespace) -> dict:
    import torch

    from crownsam.common.device import resolve_device
    from crownsam.training import train as T
    from crownsam.training.config import TrainConfig

    out = Path(a.work) / "run"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = TrainConfig(
        coco_dir=str(Path(a.work) / "coco"),
        out_dir=str(out),
        label_source="bench",
        max_iters=a.steps,
        batch_size=a.batch_size,
        device=a.device,
        tracking=False,
        progress=False,
        evaluate_test=False,
        num_workers=0,
    )
    cfg.validate()
    prep = T.prepare(cfg)
    device = resolve_device(cfg.device)
    trainer = T._Trainer(cfg, prep, None, T.Dist(), device)
    t0 = time.perf_counter()
    trainer.build()
    t_build = time.perf_counter() - t0
    times: list[float] = []

    class Bar:  # the training loop's progress hook: one call per step
        t = time.perf_counter()

        def update(self, n: int) -> None:
            now = time.perf_counter()
            times.append(now - Bar.t)
            Bar.t = now

        def set_postfix(self, **_: object) -> None:
            pass

    Bar.t = time.perf_counter()
    stats = trainer.train_epoch(Bar())
    while len(times) < a.steps and trainer.state.iteration < trainer.total:  # more steps than one epoch
        trainer.state.epoch += 1
        trainer.state.step_in_epoch = 0
        Bar.t = time.perf_counter()
        trainer.train_epoch(Bar())
    measured = times[1:] or times
    return {
        "train_device": str(device),
        "train_torch_threads": torch.get_num_threads(),
        "train_chip_px": prep.chip,
        "train_batch_size": a.batch_size,
        "train_steps_timed": len(measured),
        "train_seconds_first_step": round(times[0], 2),
        "train_seconds_per_step": round(sum(measured) / len(measured), 2),
        "train_images_per_s": round(a.batch_size * len(measured) / sum(measured), 4),
        "train_final_loss": round(stats.get("loss", float("nan")), 4),
        "train_model_build_seconds": round(t_build, 2),
        "train_peak_rss_mib": round(peak_rss_mib(), 1),
    }


def phase_predict(a: argparse.Namespace) -> dict:
    import torch

    from crownsam.common.device import resolve_device
    from crownsam.common.raster import compute_stretch
    from crownsam.training.model import build_model
    from crownsam.training.predict import predict_ortho

    ortho = str(Path(a.work) / "scene" / "ortho.tif")
    device = resolve_device(a.device)
    torch.manual_seed(0)
    model = build_model("v1", 3, chip=a.chip).eval().to(device)
    bands = (3, 2, 1)
    stretch = compute_stretch(ortho, bands)
    kw = {"window": a.chip, "overlap": a.overlap, "score_threshold": a.score_threshold, "device": device}
    with torch.inference_mode():  # warm-up: one window-size forward pass
        model([torch.rand(3, a.chip, a.chip, device=device)])
    t0 = time.perf_counter()
    _, summary = predict_ortho(model, ortho, bands, stretch, **kw)
    wall = time.perf_counter() - t0
    return {
        "predict_device": str(device),
        "predict_window_px": a.chip,
        "predict_overlap": a.overlap,
        "predict_windows": summary["windows"],
        "predict_seconds": round(wall, 2),
        "predict_windows_per_s": round(summary["windows"] / wall, 4),
        "predict_share_in_model": round(summary["seconds_in_model"] / wall, 3),
        "predict_instances": summary["instances"],
        "predict_crowns": summary["crowns"],
        "predict_peak_rss_mib": round(peak_rss_mib(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="synthetic scene size in px (default 2048)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chip", type=int, default=1024, help="chip and window size (default 1024)")
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=3, help="training steps, the first one is warm-up (3)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--score-threshold", type=float, default=0.5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", default="out/bench-training")
    ap.add_argument("--phase", choices=("all", "train", "predict"), default="all", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)

    if a.phase != "all":
        figures = phase_train(a) if a.phase == "train" else phase_predict(a)
        print("BENCH " + json.dumps(figures))
        return 0

    work = Path(a.work)
    scene, coco = work / "scene", work / "coco"
    crownsam = [sys.executable, "-m", "crownsam.cli"]
    t = time.perf_counter()
    subprocess.run([*crownsam, "demo-data", str(scene), f"--size={a.size}", f"--seed={a.seed}"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    export = [
        *crownsam, "export-coco", "--ortho", str(scene / "ortho.tif"), "--labels", str(scene / "coarse.gpkg"),
        "--out", str(coco), "--chip", str(a.chip), "--val-fraction", "0",
    ]  # fmt: skip
    subprocess.run(export, check=True, stdout=subprocess.DEVNULL)
    print(f"data: {a.size}-px scene and {a.chip}-px COCO export in {time.perf_counter() - t:.1f} s")
    figures: dict = {"scene": f"{a.size} px, seed {a.seed}", "weights": "random (untrained)"}
    for phase in ("train", "predict"):
        argv_child = [
            a_ for a_ in (argv if argv is not None else sys.argv[1:]) if not a_.startswith("--json")
        ]
        proc = subprocess.run(
            [sys.executable, __file__, *argv_child, "--phase", phase, "--work", str(work)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            return proc.returncode
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH "))
        figures |= json.loads(line.removeprefix("BENCH "))
    report(figures, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
