"""segment-everything speed and memory on a demo scene: SAM2's automatic mask generator, multi-pass, merge.

Prints tiles/s, SAM2 masks/s, the share of wall time inside SAM2's generator (image encoder, mask decoder
and its own filtering), peak RSS and coverage after each pass.

Untrained SAM2 by default: the same compute as trained weights, but its masks (and so the coverage figures
and the number of passes a tile needs) are meaningless: PLUMBING ONLY. No label quality here.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from _report import report  # benchmarks/_report.py (scripts run from this folder)

from crownsam.everything.api import EverythingRequest, run_segment_everything
from crownsam.everything.params import EverythingParams
from crownsam.everything.passes import AmgGenerator
from crownsam.pseudolabel.sam2_model import build_sam2_model, resolve_device


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="demo scene size in pixels (default 2048)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scene-dir", default="out/bench-scene")
    ap.add_argument("--checkpoint", help="SAM2 weights; untrained when omitted")
    ap.add_argument("--device", default="auto")
    defaults = EverythingParams()
    ap.add_argument("--model", default=defaults.model)
    ap.add_argument("--tile", type=int, default=defaults.tile)
    ap.add_argument("--padding", type=int, default=defaults.padding)
    ap.add_argument("--passes", type=int, default=defaults.passes)
    ap.add_argument("--points-per-side", type=int, default=defaults.points_per_side)
    ap.add_argument("--points-per-batch", type=int, default=defaults.points_per_batch)
    ap.add_argument(
        "--open-thresholds",
        action="store_true",
        help="quality thresholds 0 (start and floor): untrained masks then pass, so the acceptance, "
        "vectorising and merge paths get work too",
    )
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)

    scene_dir = Path(a.scene_dir) / f"s{a.size}-seed{a.seed}"
    t = time.perf_counter()
    # always fresh, in a child process so that peak RSS below is the step's own
    cmd = [
        sys.executable,
        "-m",
        "crownsam.cli",
        "demo-data",
        str(scene_dir),
        f"--size={a.size}",
        f"--seed={a.seed}",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"scene: generated {scene_dir} in {time.perf_counter() - t:.1f} s")

    params = EverythingParams(
        tile=a.tile,
        padding=a.padding,
        passes=a.passes,
        points_per_side=a.points_per_side,
        points_per_batch=a.points_per_batch,
        **(
            {"pred_iou_start": 0.0, "pred_iou_floor": 0.0, "stability_start": 0.0, "stability_floor": 0.0}
            if a.open_thresholds
            else {}
        ),
    )
    untrained = not a.checkpoint
    device = resolve_device(a.device)
    t0 = time.perf_counter()
    net = build_sam2_model(a.model, a.checkpoint, untrained=untrained, device=device)
    generator = AmgGenerator.from_model(net, params, name=a.model, untrained=untrained)
    t_build = time.perf_counter() - t0

    out = scene_dir.parent / f"everything-s{a.size}.gpkg"
    req = EverythingRequest(
        ortho=str(scene_dir / "ortho.tif"), out=str(out), params=params, resume_dir="", progress=False
    )
    t0 = time.perf_counter()
    s = run_segment_everything(req, generator)
    wall = time.perf_counter() - t0
    loop, in_sam2 = s["seconds_total"], s["seconds_in_model"]
    tiles, masks = s["tiles_processed"], s["masks_from_sam2"]
    passes = [len(t["passes"]) for t in s["per_tile"].values()]
    figures = {
        "NOTE": "plumbing only: untrained weights" if untrained else "trained weights",
        "scene": f"{a.size} px, seed {a.seed}",
        "model": a.model + (" (untrained)" if untrained else ""),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "params": f"tile {a.tile}, padding {a.padding}, passes {a.passes}, points {a.points_per_side}^2, "
        f"batch {a.points_per_batch}" + (", thresholds 0" if a.open_thresholds else ""),
        "tiles": tiles,
        "passes_run": sum(passes),
        "points_prompted": s["points"],
        "sam2_masks": masks,
        "objects_written": s["objects"],
        "model_build_seconds": round(t_build, 2),
        "tile_loop_seconds": round(loop, 2),
        "merge_seconds": s["merge"]["seconds"],
        "total_seconds": round(wall, 2),
        "tiles_per_s": round(tiles / loop, 4),
        "seconds_per_tile": round(loop / max(tiles, 1), 2),
        "sam2_masks_per_s": round(masks / loop, 3),
        "share_in_sam2_generator": round(in_sam2 / loop, 4),
        "share_in_sam2_generator_incl_merge": round(in_sam2 / wall, 4),
        "coverage_per_pass": s["coverage_per_pass"],
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    report(figures, a.json)
    if untrained:
        print("PLUMBING ONLY: untrained SAM2 weights; masks and coverage figures mean nothing.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
