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

``--simulate-model-ms E[,D]`` (repeatable) measures instead whether the host keeps a GPU busy: SAM2 is
replaced by :class:`SimulatedModel`, which holds for E ms per image embedding and D ms per box batch
(``time.sleep`` releases the GIL as a wait for CUDA does) and answers each box with the box itself. For
each E,D it runs the default pseudolabel settings over the demo scene and over a ``--mosaic`` x
``--mosaic`` mosaic of it, with the old sequential loop (``--workers 0``) and the window pipeline
(``--workers`` of the task's CPUs), in turn, ``--repeat`` times each (default 3: this shared machine's
speed drifts by 10-30 % within minutes), and prints for the median run of each loop the model-busy
share (time the stand-in holds / wall time), windows/s, the CPU time of the model's thread per window
(its own host work: what caps the busy share however many cores the other stages get), the whole
machine's CPU time per window (``*_machine_cpu_ms_per_window``, from ``/proc/stat``: every stage's host
work, the pipeline's own costs, and anything else running at the time), the stand-in's busy time per
window (``*_model_ms_per_window``: E plus D per box batch), every pipeline run's busy share
(``pipeline_busy_share_runs``), whether all runs gave identical labels, and peak RSS
(the planning's included: its seconds are ``plan_s``, the scene-wide stretch and the window plan). The
pipeline's worker processes are started before its clock starts, as ``crownsam pseudolabel`` starts
them while SAM2 loads; the seconds that took are printed too (``pipeline_worker_start_s``: about 1-2 s
for the first run, which starts the forkserver). Each target line also says how many CPUs the target
needs at the measured host CPU per window (:func:`cpus_for_share`): the figure to size a GPU task's CPU
request by, and the reason a target is missed on a machine with fewer.
"""

from __future__ import annotations

import argparse
import os
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
from crownsam.common.window_pipeline import WindowLoopParams, start_workers, task_cpus
from crownsam.pseudolabel.api import PseudolabelRequest, prepare
from crownsam.pseudolabel.masks import LogitPatch, largest_component, mask_to_polygon
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.predictor import PromptBatch, WindowImage
from crownsam.pseudolabel.resume import WindowResult
from crownsam.pseudolabel.run import (
    RunResult,
    SegmentTable,
    gather,
    postprocess_window,
    predict_window,
    pseudolabel_plan,
    read_window,
    resolve_run,
    window_boxes,
)
from crownsam.pseudolabel.sam2_model import Sam2BoxPredictor, build_sam2_model
from crownsam.tiling.plan import WindowTask, pixel_geometries


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# one run: busy share, wall s, the model thread's CPU s, the whole machine's CPU s (or None), model busy s
Run = tuple[float, float, float, float | None, float]


def machine_busy_seconds(stat: str = "/proc/stat") -> float | None:
    """CPU seconds this machine's CPUs have been busy since boot, all of them together (``/proc/stat``:
    user, nice, system, irq, softirq; not idle, I/O wait or time stolen by a hypervisor), or None where
    there is no such file. The difference over a run is the run's host CPU, worker processes and GDAL's
    threads included (and anything else running on the machine at the time)."""
    try:
        with open(stat) as f:
            name, *fields = f.readline().split()
    except OSError:
        return None
    if name != "cpu" or len(fields) < 7:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cpus_for_share(share: float, host_ms: float, model_ms: float) -> float:
    """CPUs that let the model be busy ``share`` of the time when each window costs ``host_ms`` of host CPU
    (all stages together) and ``model_ms`` of model time: a window then takes at least
    ``host_ms / CPUs`` of wall time, so the busy share is at most ``model_ms x CPUs / host_ms``."""
    if model_ms <= 0:
        raise ValueError(f"model time per window must be positive, got {model_ms}")
    return share * host_ms / model_ms


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


# ------------------------------------------------------------------------------------ simulated model


class SimulatedModel:
    """A stand-in for SAM2 on a GPU: ``set_image`` holds for ``embed_ms``, each ``predict`` call (one box
    batch) for ``batch_ms``, in ``time.sleep`` (which releases the GIL, as waiting for CUDA does).

    Its answers have SAM2's form: a low-resolution logit map of a quarter of the image size per side
    (256 x 256 for a 1024 px window), +1 on the cells whose centre lies in the prompt box and -1 elsewhere,
    score 1; so each mask is the box, and post-processing does SAM2's upsampling, component and vectorising
    work. ``busy_seconds`` counts the nominal holds (the accelerator's time), not how late the thread
    woke up after them.
    """

    name = "simulated"
    untrained = True
    # Like SAM2 on CUDA it takes windows as read (``BandWindow``): their stretch is GPU work, a few
    # microseconds of the E ms per embedding, so the stand-in does not redo it on the host.
    stretches_on_device = True

    def __init__(self, embed_ms: float, batch_ms: float) -> None:
        self.embed_s, self.batch_s = embed_ms / 1000, batch_ms / 1000
        self.forward_seconds = self.busy_seconds = 0.0
        self._out_hw = (0, 0)

    def _hold(self, seconds: float) -> None:
        t0 = time.perf_counter()
        time.sleep(seconds)
        dt = time.perf_counter() - t0
        # the accelerator is busy for the nominal time only: a late wake-up (the thread waiting for a
        # core) is host latency, during which the accelerator would sit idle
        self.busy_seconds += seconds
        self.forward_seconds += dt

    def set_image(self, image: WindowImage, window: WindowTask | None = None) -> None:
        self._out_hw = (int(image.shape[0]), int(image.shape[1]))
        self._hold(self.embed_s)

    def predict(self, prompts: PromptBatch, regions: np.ndarray) -> tuple[list[LogitPatch], np.ndarray]:
        if prompts.boxes is None:
            raise ValueError("the simulated model answers box prompts only")
        self._hold(self.batch_s)
        (h, w), boxes = self._out_hw, np.asarray(prompts.boxes, dtype=np.float64)
        lh, lw = h // 4, w // 4
        ys, xs = (np.arange(lh) + 0.5) * (h / lh), (np.arange(lw) + 0.5) * (w / lw)  # cell centres, px
        # only the cells each region reads (LogitPatch.from_map's crop of the whole map, made directly: a
        # GPU hands back whole maps at no host cost, so the stand-in should not spend host time here)
        reg = np.asarray(regions, dtype=np.int64).reshape(-1, 4)
        a, b = supports(reg[:, 0], reg[:, 2], lh, h)
        c, d = supports(reg[:, 1], reg[:, 3], lw, w)
        patches = []
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            rows = ys[a[k] : b[k]]
            cols = xs[c[k] : d[k]]
            inside = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
            low = np.where(inside, np.float32(1), np.float32(-1))
            patches.append(LogitPatch(low, int(a[k]), int(c[k]), (lh, lw), (h, w)))
        return patches, np.ones(len(boxes), dtype=np.float32)


def supports(lo: np.ndarray, hi: np.ndarray, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`crownsam.pseudolabel.masks.support` of many output ranges at once (its formula, from the
    taps of each range's first and last row; ``(0, 0)`` for an empty range)."""

    def first_tap(row: np.ndarray) -> np.ndarray:
        return np.floor(np.maximum((row.astype(np.float64) + 0.5) * (in_size / out_size) - 0.5, 0.0))

    first = first_tap(lo).astype(np.int64)
    end = np.minimum(first_tap(hi - 1).astype(np.int64) + 1, in_size - 1) + 1
    empty = hi <= lo
    return np.where(empty, 0, first), np.where(empty, 0, end)


def mosaic(scene_dir: Path, n: int) -> tuple[str, str]:
    """An ``n`` x ``n`` mosaic of the scene's orthophoto (same profile, copied strip by strip) and its
    coarse segments (shifted, new ids); made once and kept."""
    out = scene_dir / f"mosaic{n}"
    ortho, coarse = out / "ortho.tif", out / "coarse.gpkg"
    if ortho.exists() and coarse.exists():
        return str(ortho), str(coarse)
    out.mkdir(exist_ok=True)
    with rasterio.open(scene_dir / "ortho.tif") as src:
        w, h, res = src.width, src.height, src.transform.a
        profile = src.profile | {"width": w * n, "height": h * n, "BIGTIFF": "IF_SAFER"}
        with rasterio.open(ortho, "w", **profile) as dst:
            dst.descriptions = src.descriptions
            for r0 in range(0, h, 1024):
                strip = Window(0, r0, w, min(1024, h - r0))
                data = src.read(window=strip)
                for i in range(n):
                    for j in range(n):
                        dst.write(data, window=Window(j * w, i * h + r0, w, strip.height))
    seg = gpd.read_file(scene_dir / "coarse.gpkg")
    step = int(seg["segment_id"].max()) + 1
    parts = []
    for k, (i, j) in enumerate((i, j) for i in range(n) for j in range(n)):
        part = seg.copy()
        part["geometry"] = part.geometry.translate(j * w * res, -i * h * res)
        part["segment_id"] = part["segment_id"] + k * step
        parts.append(part)
    gpd.GeoDataFrame(pd_concat(parts), crs=seg.crs).to_file(coarse, driver="GPKG")
    return str(ortho), str(coarse)


def pd_concat(parts: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    import pandas as pd

    return pd.concat(parts, ignore_index=True)


def positive(text: str) -> int:
    """An integer of at least 1 (argparse type)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def simulate(a: argparse.Namespace, scene_dir: Path) -> int:
    """The model-busy figures (see the module docstring)."""
    workers = a.workers if a.workers is not None else task_cpus()
    params = PseudolabelParams(batch_size=a.batch_size)
    scenes = [("demo", str(scene_dir / "ortho.tif"), str(scene_dir / "coarse.gpkg"))]
    if a.mosaic > 1:
        t = time.perf_counter()
        scenes.append((f"mosaic{a.mosaic}x{a.mosaic}", *mosaic(scene_dir, a.mosaic)))
        print(f"mosaic: {a.mosaic}x{a.mosaic} in {time.perf_counter() - t:.1f} s")
    load = os.getloadavg()
    print(
        f"CPUs of this task: {task_cpus()}; pipeline workers: {workers}; load average before: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work on the machine lowers every figure)"
    )
    rows: list[dict] = []
    for name, ortho, coarse in scenes:
        t0 = time.perf_counter()
        prep = prepare(PseudolabelRequest(ortho=ortho, segments=coarse, out=str(scene_dir / "sim.gpkg")))
        plan_s = round(time.perf_counter() - t0, 2)  # the scene-wide stretch, the window plan
        plan, segments = prep.plan, prep.segments
        if a.max_windows:
            plan.windows = plan.windows[: a.max_windows]
        for spec in a.simulate_model_ms:
            e, _, d = spec.partition(",")
            embed_ms, batch_ms = float(e), float(d or 0)
            labels = []
            row: dict = {"scene": name, "plan_s": plan_s, "windows": len(plan.windows), "E_ms": embed_ms}
            row["D_ms"] = batch_ms
            runs: dict[str, list[Run]] = {"sequential": [], "pipeline": []}
            for _ in range(a.repeat):  # the two loops in turn, so that the machine's drift hits both alike
                for mode, loop in (("sequential", WindowLoopParams(workers=0)), ("pipeline", None)):
                    loop = loop or WindowLoopParams(workers=workers, window_batch=1)
                    if mode == "pipeline":  # as `crownsam pseudolabel` does while SAM2 loads
                        t0 = time.perf_counter()
                        start_workers(loop.settings(), wait=True)
                        row.setdefault("pipeline_worker_start_s", round(time.perf_counter() - t0, 2))
                    model = SimulatedModel(embed_ms, batch_ms)
                    m0, t0, c0 = machine_busy_seconds(), time.perf_counter(), time.thread_time()
                    run = pseudolabel_plan(plan, segments, model, params=params, progress=False, loop=loop)
                    wall, cpu, m1 = time.perf_counter() - t0, time.thread_time() - c0, machine_busy_seconds()
                    host = m1 - m0 if m0 is not None and m1 is not None else None
                    runs[mode].append((model.busy_seconds / wall, wall, cpu, host, model.busy_seconds))
                    labels.append(run.labels)
            for mode, got in runs.items():  # the median run by busy share
                busy, wall, cpu, host, held = sorted(got)[len(got) // 2]
                row[f"{mode}_busy_share"] = round(busy, 3)
                row[f"{mode}_windows_per_s"] = round(len(plan.windows) / wall, 2)
                # CPU time of the model's thread per window: its own host work, load-independent
                row[f"{mode}_model_thread_cpu_ms_per_window"] = round(1000 * cpu / len(plan.windows), 1)
                # the whole machine's CPU per window: every stage's host work, and the pipeline's costs
                row[f"{mode}_machine_cpu_ms_per_window"] = (
                    round(1000 * host / len(plan.windows), 1) if host is not None else None
                )
                row[f"{mode}_model_ms_per_window"] = round(1000 * held / len(plan.windows), 2)
            row["pipeline_busy_share_runs"] = "/".join(f"{b:.3f}" for b, *_ in runs["pipeline"])
            same = all(
                len(labels[0]) == len(other)
                and labels[0]["segment_id"].equals(other["segment_id"])
                and all(g.equals_exact(h, 0) for g, h in zip(labels[0].geometry, other.geometry, strict=True))
                for other in labels[1:]
            )
            row["identical_labels"] = bool(same)
            row["peak_rss_mib"] = round(peak_rss_mib(), 1)
            # the largest finished child: the scene generator, or a worker process of an earlier run
            row["peak_rss_largest_child_mib"] = round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            )
            rows.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    report({f"{r['scene']}_E{r['E_ms']:g}_D{r['D_ms']:g}": r for r in rows}, a.json)
    for r in rows:
        target = 0.85 if r["E_ms"] >= 25 else 0.6 if r["E_ms"] >= 10 else None
        if target is not None:
            ok = r["pipeline_busy_share"] >= target
            host = r["pipeline_machine_cpu_ms_per_window"]
            why = ""
            if host is not None and r["pipeline_model_ms_per_window"] > 0:
                need = cpus_for_share(target, host, r["pipeline_model_ms_per_window"])
                why = (
                    f"; the pipeline's host work was {host:g} ms of CPU per window, so {target} needs at "
                    f"least {need:.1f} CPUs (this task has {task_cpus()})"
                )
            print(
                f"target ({r['scene']}, E={r['E_ms']:g} ms): pipeline busy share >= {target}: "
                f"{'met' if ok else 'MISSED'} ({r['pipeline_busy_share']}){why}"
            )
    return 0


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
    ap.add_argument(
        "--simulate-model-ms",
        action="append",
        metavar="E[,D]",
        help="instead of SAM2: a stand-in holding E ms per embedding and D ms per box batch (repeatable)",
    )
    ap.add_argument("--mosaic", type=int, default=4, help="with --simulate-model-ms: also an N x N mosaic")
    ap.add_argument("--workers", type=int, help="pipeline workers (default: the task's CPUs)")
    ap.add_argument(
        "--repeat",
        type=positive,
        default=3,
        help="with --simulate-model-ms: runs of each loop, in turn; the median run is reported "
        "(of an even number, the upper one)",
    )
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
    if a.simulate_model_ms:
        return simulate(a, scene_dir)
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
    table = SegmentTable.of(segments, transform)
    wall = wall2 = fwd = 0.0
    n_prompts = 0
    done: list[WindowResult] = []
    with rasterio.open(ortho) as src:
        for w in plan.windows:
            for params, results in ((plain, None), (full, done)):
                t0, f0 = time.perf_counter(), predictor.forward_seconds
                inp = read_window(src, plan, w, table)
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
