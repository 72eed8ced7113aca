"""Pseudolabeling speed and memory on the demo scene: our batched per-window prompting vs the naive way,
and the extra time of negative prompt calibration and exclusive labels.

Prints windows/s, prompts/s, the share of wall time inside SAM2's forward passes (image encoder, prompt
encoder, mask decoder), peak RSS, and the naive way (one ``set_image`` per segment on a crop around it,
SAM2's own ``predict`` with full-resolution masks) for a side-by-side ratio in the same run. The naive
way costs one image embedding per segment, so it is timed on an evenly spaced sample of segments and
extrapolated to all of them (stated in the output).

In the same run, each window goes through twice, one right after the other (so that other load on the
machine hits both alike): the plain box run (no calibration, no exclusivity, no fallback), and the box run
with negative prompt calibration (treetops from the CHM) and exclusive labels (within windows, and across
windows at the end). Per window it prints both times, the seconds of the calibration and exclusivity
stages, and the re-prompts.

Untrained SAM2 by default: same compute as trained weights, meaningless masks. No label quality here;
untrained masks overlap far more than trained ones, so calibration re-prompts nearly every segment (an
upper bound of its cost). ``--size 1536 --naive-sample 4`` finishes in a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import torch
from _report import report  # benchmarks/_report.py (scripts run from this folder)
from rasterio import Affine
from rasterio.windows import Window

from crownsam.common.device import resolve_device
from crownsam.common.raster import read_rgb_window
from crownsam.pseudolabel.api import PseudolabelRequest, prepare
from crownsam.pseudolabel.masks import largest_component, mask_to_polygon
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.resume import WindowResult
from crownsam.pseudolabel.run import (
    RunResult,
    gather,
    postprocess_window,
    predict_window,
    read_window,
    resolve_run,
    window_boxes,
)
from crownsam.pseudolabel.sam2_model import Sam2BoxPredictor, build_sam2_model
from crownsam.tiling.plan import pixel_geometries


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive_segment(src, plan, seg_pix, predictor: Sam2BoxPredictor, transform: Affine) -> None:
    """One segment the naive way: a crop around its box (box + its own size on each side), a fresh
    image embedding, SAM2's predict with a full-resolution mask, largest component, vectorise."""
    x0, y0, x1, y1 = seg_pix
    w, h = x1 - x0, y1 - y0
    c0, r0 = max(0, int(x0 - w)), max(0, int(y0 - h))
    c1, r1 = min(plan.width, int(np.ceil(x1 + w))), min(plan.height, int(np.ceil(y1 + h)))
    rgb = read_rgb_window(src, Window(c0, r0, c1 - c0, r1 - r0), plan.rgb_bands, plan.stretch)
    predictor.set_image(rgb)
    with torch.inference_mode():
        masks, _, _ = predictor.predictor.predict(
            box=np.array([x0 - c0, y0 - r0, x1 - c0, y1 - r0]), multimask_output=False
        )
    lcc = largest_component(masks[0].astype(bool))
    if lcc is not None:
        mask_to_polygon(lcc, transform @ Affine.translation(c0, r0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scene-dir", default="out/bench-scene")
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--checkpoint", help="SAM2 weights; untrained when omitted")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--naive-sample", type=int, default=24, help="segments timed the naive way")
    ap.add_argument("--max-windows", type=int, default=0, help="only the first N windows (0: all)")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)

    scene_dir = Path(a.scene_dir) / f"s{a.size}-seed{a.seed}"
    t = time.perf_counter()
    # always fresh (the generator may have changed), in a child process so peak RSS below is the step's own
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
    ortho, coarse = str(scene_dir / "ortho.tif"), str(scene_dir / "coarse.gpkg")

    t0 = time.perf_counter()
    req = PseudolabelRequest(
        ortho=ortho,
        segments=coarse,
        out=str(scene_dir / "bench.gpkg"),
        chm=str(scene_dir / "chm.tif"),
        params=PseudolabelParams(batch_size=a.batch_size, negative_calibration=True),
    )
    prep = prepare(req)  # plan, and treetops from the CHM for the calibration run
    plan, segments = prep.plan, prep.segments
    t_plan = time.perf_counter() - t0
    if a.max_windows:
        plan.windows = plan.windows[: a.max_windows]
    device = resolve_device(a.device)
    t0 = time.perf_counter()
    net = build_sam2_model(a.model, a.checkpoint, untrained=not a.checkpoint, device=device)
    predictor = Sam2BoxPredictor(net, name=a.model, untrained=not a.checkpoint)
    t_build = time.perf_counter() - t0

    # Both settings window by window, alternately, so that load on the machine hits both alike.
    plain = PseudolabelParams(batch_size=a.batch_size, exclusive=False, fallback=False)
    full = plain.replace(negative_calibration=True, exclusive=True)
    transform = Affine(*plan.transform[:6])
    by_id = segments.set_index("segment_id", drop=False)
    wall = wall2 = fwd = 0.0
    n_prompts = 0
    done: list[WindowResult] = []
    with rasterio.open(ortho) as src:
        for w in plan.windows:
            for params, results in ((plain, None), (full, done)):
                t0, f0 = time.perf_counter(), predictor.forward_seconds
                inp = read_window(src, plan, w, by_id)
                r = postprocess_window(
                    inp, predict_window(predictor, inp, params), params, transform, a.model, not a.checkpoint
                )
                seconds = time.perf_counter() - t0
                if results is None:
                    wall, fwd, n_prompts = (
                        wall + seconds,
                        fwd + predictor.forward_seconds - f0,
                        n_prompts + r.prompts,
                    )
                else:
                    wall2 += seconds
                    results.append(r)
    run2 = gather(RunResult(labels=gpd.GeoDataFrame()), done, plan.crs)
    t0 = time.perf_counter()
    resolve_run(run2, plan)
    wall2 += time.perf_counter() - t0
    st: dict[str, float] = {}
    for r in done:
        for k, v in r.stage_seconds.items():
            st[k] = st.get(k, 0.0) + v
    st["exclusive"] = run2.stage_seconds.get("exclusive", 0.0) + st.get("exclusive", 0.0)
    n_win = len(plan.windows)
    res2 = run2

    # the naive way, on an evenly spaced sample of the same prompted segments
    planned = [(w, sid) for w in plan.windows for sid in w.segment_ids]
    pick = np.linspace(0, len(planned) - 1, min(a.naive_sample, len(planned))).round().astype(int)
    pick = pick[: a.naive_sample]  # --naive-sample 0: no naive timing
    t0 = time.perf_counter()
    with rasterio.open(ortho) as src:
        for i in pick:
            w, sid = planned[i]
            pix = pixel_geometries(by_id.loc[[sid]], transform)
            box = window_boxes(pix, w)[0] + [w.col_off, w.row_off, w.col_off, w.row_off]
            naive_segment(src, plan, box, predictor, transform)
    naive_per_seg = (time.perf_counter() - t0) / len(pick) if len(pick) else float("nan")
    naive_total = naive_per_seg * n_prompts

    figures = {
        "scene": f"{a.size} px, seed {a.seed}",
        "model": a.model + ("" if a.checkpoint else " (untrained)"),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "windows": n_win,
        "prompts": n_prompts,
        "batch_size": a.batch_size,
        "plan_seconds": round(t_plan, 2),
        "model_build_seconds": round(t_build, 2),
        "pseudolabel_seconds": round(wall, 2),
        "windows_per_s": round(n_win / wall, 4),
        "prompts_per_s": round(n_prompts / wall, 3),
        "seconds_per_window": round(wall / n_win, 3),
        "share_in_sam2_forward": round(fwd / wall, 4),
        "share_in_sam2_forward_incl_plan_and_build": round(fwd / (wall + t_plan + t_build), 4),
        "plain_box_seconds_per_window": round(wall / n_win, 3),
        "calibrated_exclusive_seconds_per_window": round(wall2 / n_win, 3),
        "extra_seconds_per_window": round((wall2 - wall) / n_win, 3),
        "calibration_seconds_per_window": round(st.get("calibration", 0.0) / n_win, 3),
        "exclusive_seconds_per_window": round(st.get("exclusive", 0.0) / n_win, 3),
        "reprompts_per_window": round(res2.stats["reprompts"] / n_win, 2),
        "cross_window_pairs": int(res2.stats["cross_window_pairs"]),
        "naive_sample": len(pick),
        "naive_seconds_per_segment": round(naive_per_seg, 3),
        "naive_seconds_extrapolated": round(naive_total, 1),
        "speedup_vs_naive": round(naive_total / wall, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    report(figures, a.json)
    share_ok = figures["share_in_sam2_forward"] >= 0.9
    speed_ok = figures["speedup_vs_naive"] >= 10
    print(
        f"targets: share in SAM2 forward >= 0.90: {'met' if share_ok else 'MISSED'}; "
        f"speedup vs naive >= 10x: {'met' if speed_ok else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
