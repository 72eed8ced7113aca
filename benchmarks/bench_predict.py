"""Tiled ``crownsam predict``: windows/s of the sequential loop (``--workers 0``) and the window pipeline
(``--workers N``, default the task's CPUs) side by side, one right after the other, on the demo scene.

``--simulate-model-ms E`` (repeatable; default 25 and 10): the Mask R-CNN is replaced by
:class:`SimulatedMaskRCNN`, which holds for E ms per window (``time.sleep`` releases the GIL as a wait for
CUDA does) and returns ``--instances`` fixed elliptical masks per window as float mask probabilities of
the window's full size, as torchvision's Mask R-CNN pastes them. It prints the model-busy share (time the
stand-in holds / time of the window loop: reading, model, instances) and windows/s of the window loop,
the wall time of the whole ``predict_ortho`` (merging and polygons included, the same for both loops),
and whether both loops gave identical crowns. ``--real``: also an untrained torchvision Mask R-CNN (v1,
random weights; its outlines mean nothing) on ``--real-window`` px windows, where the model dominates on
a CPU.

Keep runs short on a shared machine: the defaults (a 3072 px scene, 1024 px windows: 16 windows) take a
few seconds per loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely
import torch
from _report import report  # benchmarks/_report.py (scripts run from this folder)

from crownsam.common.raster import compute_stretch
from crownsam.common.window_pipeline import WindowLoopParams, task_cpus
from crownsam.synthetic import generate_scene
from crownsam.training.predict import predict_ortho

BANDS = (1, 2, 3)


class SimulatedMaskRCNN(torch.nn.Module):
    """Holds ``ms`` per window (``time.sleep``) and returns ``instances`` fixed ellipses (seeded) as
    (K, 1, window, window) float mask probabilities, scores in [0.6, 1)."""

    def __init__(self, ms: float, window: int, instances: int, seed: int = 0) -> None:
        super().__init__()
        self.seconds = ms / 1000.0
        self.held = 0.0
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:window, :window]
        masks = np.zeros((instances, 1, window, window), np.float32)
        for k in range(instances):
            cy, cx = rng.integers(0, window, 2)
            a, b = rng.integers(15, 70, 2)
            masks[k, 0] = (((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1).astype(np.float32)
        self.out = {
            "masks": torch.from_numpy(masks),
            "scores": torch.from_numpy(rng.uniform(0.6, 1.0, instances).astype(np.float32)),
            "labels": torch.ones(instances, dtype=torch.int64),
        }

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        t = time.perf_counter()
        time.sleep(self.seconds * len(images))
        self.held += time.perf_counter() - t
        return [self.out for _ in images]


def same(a, b) -> bool:
    return (
        len(a) == len(b)
        and a.drop(columns="geometry").equals(b.drop(columns="geometry"))
        and bool(shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0.0).all())
    )


def run_pair(model: torch.nn.Module, ortho: str, stretch, a: argparse.Namespace, window: int) -> dict:
    figures: dict = {}
    outs = {}
    for workers in (0, a.workers):
        held0 = getattr(model, "held", 0.0)
        t = time.perf_counter()
        gdf, s = predict_ortho(
            model, ortho, BANDS, stretch, window=window, overlap=a.overlap, score_threshold=0.5,
            loop=WindowLoopParams(workers=workers),
        )  # fmt: skip
        wall = time.perf_counter() - t
        outs[workers] = gdf
        loop = s["seconds_in_window_loop"]
        name = "sequential" if workers == 0 else f"pipeline_{workers}w"
        figures[f"{name}_windows_per_s"] = round(s["windows"] / loop, 2)
        if hasattr(model, "held"):
            figures[f"{name}_model_busy_share"] = round((model.held - held0) / loop, 3)
        figures[f"{name}_window_loop_s"] = round(loop, 2)
        figures[f"{name}_wall_s"] = round(wall, 2)
    figures["windows"] = s["windows"]
    figures["crowns"] = len(outs[0])
    figures["identical_crowns"] = same(outs[0], outs[a.workers])
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=3072, help="demo scene size in px (default 3072)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=task_cpus(), help="pipeline workers (default task CPUs)")
    p.add_argument("--simulate-model-ms", type=float, action="append", help="E ms per window (repeatable)")
    p.add_argument("--instances", type=int, default=40, help="instances per window of the stand-in")
    p.add_argument("--real", action="store_true", help="also an untrained Mask R-CNN v1 (CPU: slow)")
    p.add_argument("--real-window", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, task_cpus()))
    figures: dict = {"workers": a.workers, "scene_px": a.size, "window": a.window, "overlap": a.overlap}
    with tempfile.TemporaryDirectory(prefix="crownsam-bench-predict-") as tmp:
        scene = generate_scene(Path(tmp) / "scene", size=a.size, seed=a.seed)
        ortho = str(scene.ortho)
        stretch = compute_stretch(ortho, BANDS)
        for ms in a.simulate_model_ms or [25.0, 10.0]:
            model = SimulatedMaskRCNN(ms, a.window, a.instances)
            for k, v in run_pair(model, ortho, stretch, a, a.window).items():
                figures[f"sim{ms:g}ms_{k}"] = v
        if a.real:
            from crownsam.training.model import build_model

            torch.manual_seed(0)
            model = build_model("v1", len(BANDS), chip=a.real_window).to(a.device)
            for k, v in run_pair(model, ortho, stretch, a, a.real_window).items():
                figures[f"real_v1_untrained_{a.real_window}px_{k}"] = v
    report(figures, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
