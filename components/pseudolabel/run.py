"""The pseudolabeling loop over a window plan.

Each window goes through three stages, kept apart so that they can run as a pipeline (reads ahead,
post-processing beside the model):

1. :func:`read_window`: read the window's bands, stretch them to uint8 RGB, and compute the window-pixel
   prompts (boxes, treetop points, regions) of its segments.
2. :func:`predict_window`: the model: one image embedding, the first pass over all prompts in batches,
   then (``negative_calibration``) the re-prompts of overlapping masks, batched the same way. Only
   decoder calls on the window's embedding: no second embedding.
3. :func:`postprocess_window`: upsample each mask in its region, keep its largest component, check it
   against its coarse segment (fallback), resolve contested pixels (``exclusive``) and vectorise.

After all windows, :func:`resolve_run` resolves pixels contested by labels of different windows (an
unsharded run; a sharded run leaves this to the merge).
"""

from __future__ import annotations

import functools
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import partial
from typing import ParamSpec, TypeVar, cast

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio import Affine
from rasterio.windows import Window

from crownsam.common.progress import progress_bar
from crownsam.common.raster import gdal_cache, open_raster, read_band_window, reading_order
from crownsam.common.vector import ID_COLUMN
from crownsam.common.window_pipeline import WindowLoopParams, preload, run_pipeline, task_cpus
from crownsam.pseudolabel.exclusive import (
    SKIP_EMPTY_AFTER_EXCLUSIVE,
    Claim,
    inside_regions,
    resolve_across_windows,
    resolve_claims,
)
from crownsam.pseudolabel.fallback import fallback_reason, mask_vs_segment
from crownsam.pseudolabel.masks import (
    Box,
    LogitPatch,
    clip_boxes,
    largest_component_box,
    mask_to_polygon,
    neighbourhoods,
    region_mask_and_logits,
    region_tuple,
    touches_border,
)
from crownsam.pseudolabel.overlap import mask_overlaps, overlap_figures
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.predictor import (
    BatchPromptPredictor,
    PromptPredictor,
    WindowImage,
    image_for,
    stretches_on_device,
)
from crownsam.pseudolabel.prompts import batches, negatives_from_pairs
from crownsam.pseudolabel.resume import WindowResult, WindowStore
from crownsam.pseudolabel.spill import SpilledClaims
from crownsam.pseudolabel.treetops import to_window_pixels
from crownsam.tiling.plan import Plan, WindowTask, pixel_geometries

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

SKIP_EMPTY_MASK = "empty_mask"
# Columns the prepared segments carry into the loop (set by crownsam.pseudolabel.api.prepare).
TREETOP_X, TREETOP_Y, NDVI = "_treetop_x", "_treetop_y", "_ndvi"
COLUMNS = [
    ID_COLUMN,
    "label_source",
    "fallback_reason",
    "sam_score",
    "mask_area_ratio",
    "mask_iou",
    "prompt",
    "negatives",
    "ndvi",
    "window_row",
    "window_col",
    "window_row_off",
    "window_col_off",
    "area",
    "area_px",
    "touches_region_edge",
    "model",
    "untrained",
]
STAGES = ("read", "embed", "first_pass", "calibration", "postprocess", "exclusive")


@dataclass
class RunResult:
    """Pseudolabels (raster CRS) plus what happened, for the run summary."""

    labels: gpd.GeoDataFrame
    claims: SpilledClaims = field(default_factory=SpilledClaims)  # on local disk until needed
    skipped: list[dict] = field(default_factory=list)
    window_seconds: list[float] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stats: Counter = field(default_factory=Counter)
    seconds_total: float = 0.0
    seconds_in_model: float = 0.0
    prompts: int = 0
    windows_resumed: int = 0
    exclusive_pending: bool = False


# ------------------------------------------------------------------------------------------- stage 1


@dataclass
class WindowInput:
    """A window's image and the window-pixel prompts of its segments (stage 1's output)."""

    window: WindowTask
    image: WindowImage  # stretched (H, W, 3) uint8, or as read (``read_window(defer_stretch=True)``)
    segment_ids: list[int]
    boxes: np.ndarray  # (n, 4) XYXY, clipped to the window
    points: np.ndarray | None  # (n, 2) treetops, or None when prompting does not use them
    segments_px: np.ndarray  # (n,) segment polygons in window pixels
    segments: np.ndarray  # (n,) segment polygons in the raster's CRS
    ndvi: np.ndarray  # (n,) NaN when the vegetation filter is off
    regions: np.ndarray  # (n, 4) (r0, c0, r1, c1) where each mask is computed
    seconds: float = 0.0


@dataclass(frozen=True)
class SegmentTable:
    """The run's segments as arrays, in ``segment_id`` order, made once per run so that each window only
    indexes them (:func:`read_window`)."""

    ids: np.ndarray  # (n,) int64, ascending
    geoms: np.ndarray  # (n,) polygons in the raster's CRS
    pix: np.ndarray  # (n,) the same in raster pixel space (:func:`pixel_geometries`)
    bounds: np.ndarray  # (n, 4) XYXY of ``pix``
    treetops: np.ndarray | None  # (n, 2) treetops in raster pixel space, or None without treetop columns
    ndvi: np.ndarray  # (n,) NaN when the vegetation filter is off

    @classmethod
    def of(cls, segments: gpd.GeoDataFrame, transform: Affine) -> SegmentTable:
        """The table of prepared segments (``segment_id``; treetop and NDVI columns when present)."""
        seg = segments.sort_values(ID_COLUMN, kind="stable")
        pix = pixel_geometries(seg, transform)
        treetops = None
        if TREETOP_X in seg.columns:
            xy = seg[[TREETOP_X, TREETOP_Y]].to_numpy(dtype=np.float64)
            treetops = to_window_pixels(xy, transform, 0, 0)  # each window subtracts its offset
        n = len(seg)
        return cls(
            ids=seg[ID_COLUMN].to_numpy(dtype=np.int64),
            geoms=np.asarray(seg.geometry.values, dtype=object),
            pix=np.asarray(pix, dtype=object),
            bounds=shapely.bounds(pix).reshape(n, 4),
            treetops=treetops,
            ndvi=seg[NDVI].to_numpy(dtype=np.float64) if NDVI in seg.columns else np.full(n, np.nan),
        )

    def rows(self, ids: Sequence[int]) -> np.ndarray:
        """Positions of ``ids`` in the table (KeyError naming the first one missing)."""
        want = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, want)
        found = (pos < len(self.ids)) & (self.ids[np.minimum(pos, len(self.ids) - 1)] == want)
        if not found.all():
            raise KeyError(f"segment_id {int(want[~found][0])} is not among the segments")
        return pos


def window_boxes(pix: np.ndarray, window: WindowTask) -> np.ndarray:
    """XYXY boxes of pixel-space geometries in the window's pixel frame, clipped to the window."""
    return boxes_in_window(shapely.bounds(pix), window)


def boxes_in_window(bounds: np.ndarray, window: WindowTask) -> np.ndarray:
    """Pixel-space XYXY bounds in the window's pixel frame, clipped to the window."""
    b = np.array(bounds, dtype=np.float64).reshape(-1, 4)
    b[:, [0, 2]] -= window.col_off
    b[:, [1, 3]] -= window.row_off
    return clip_boxes(b, window.width, window.height)


def read_window(
    src: rasterio.io.DatasetReader,
    plan: Plan,
    window: WindowTask,
    table: SegmentTable,
    *,
    defer_stretch: bool = False,
) -> WindowInput:
    """Stage 1: read the window's RGB (scene-wide stretch, padded to the plan's window size) and compute
    its prompts. Treetops become points by the same transform chain as the boxes. ``defer_stretch``: the
    image is the window as read (:class:`~crownsam.common.raster.BandWindow`), for a predictor that
    stretches on its device."""
    t0 = time.perf_counter()
    rows = table.rows(window.segment_ids)
    boxes = boxes_in_window(table.bounds[rows], window)
    points = None
    if table.treetops is not None:
        points = table.treetops[rows] - np.array([window.col_off, window.row_off], dtype=np.float64)
        points[:, 0] = np.clip(points[:, 0], 0.0, window.width)
        points[:, 1] = np.clip(points[:, 1], 0.0, window.height)
    shift = np.array([window.col_off, window.row_off], dtype=np.float64)
    seg_px = shapely.transform(table.pix[rows], lambda xy: xy - shift)
    read = read_band_window(
        src,
        Window(window.col_off, window.row_off, window.width, window.height),
        plan.rgb_bands,
        plan.stretch,
        pad_to=plan.window,
    )
    image = read if defer_stretch else read.rgb()
    return WindowInput(
        window=window,
        image=image,
        segment_ids=[int(s) for s in window.segment_ids],
        boxes=boxes,
        points=points,
        segments_px=np.asarray(seg_px, dtype=object),
        segments=table.geoms[rows],
        ndvi=table.ndvi[rows],
        regions=neighbourhoods(boxes, window.width, window.height),
        seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------------------------------------- stage 2


@dataclass
class WindowPrediction:
    """The model's answers for a window's prompts (stage 2's output)."""

    patches: list[LogitPatch]
    scores: np.ndarray
    negatives: list[int]  # negative points each final answer was prompted with
    reprompts: int = 0
    overlap_first_pass: tuple[int, int] | None = None  # (pairs, pixels) when calibration looked
    seconds: dict[str, float] = field(default_factory=dict)


def masks_of(
    patches: list[LogitPatch], regions: np.ndarray, idx: list[int] | None = None
) -> list[np.ndarray]:
    """Boolean masks (logits > 0) of ``patches`` in their regions."""
    idx = list(range(len(patches))) if idx is None else idx
    return [patches[i].upsample(region_tuple(regions[i])) > 0 for i in idx]


def predict_window(
    predictor: PromptPredictor, inp: WindowInput, params: PseudolabelParams, *, embedded: bool = False
) -> WindowPrediction:
    """Stage 2: embed once, prompt every segment in batches; with ``negative_calibration``, prompt each
    mask that overlaps another again, with the other masks' treetops as negative points (label 0); the
    refined answer replaces the first one. ``embedded``: the predictor already holds this window's
    embedding (:func:`predict_windows`)."""
    n = len(inp.segment_ids)
    t0 = time.perf_counter()
    if not embedded:
        predictor.set_image(image_for(predictor, inp.image), inp.window)
    t1 = time.perf_counter()
    patches: list[LogitPatch] = [None] * n  # type: ignore[list-item]
    scores = np.zeros(n, dtype=np.float32)
    for chunk, batch in batches(params.prompt, inp.boxes, inp.points, list(range(n)), params.batch_size):
        got, s = predictor.predict(batch, inp.regions[chunk])
        for k, i in enumerate(chunk):
            patches[i], scores[i] = got[k], s[k]
    t2 = time.perf_counter()
    pred = WindowPrediction(patches=patches, scores=scores, negatives=[0] * n)
    if params.negative_calibration and n > 1:
        pairs, shared = mask_overlaps(masks_of(patches, inp.regions), inp.regions)
        pred.overlap_first_pass = (len(pairs), shared)
        negs = negatives_from_pairs(pairs, n)
        redo = [i for i in range(n) if negs[i]]
        for chunk, batch in batches(params.prompt, inp.boxes, inp.points, redo, params.batch_size, negs):
            got, s = predictor.predict(batch, inp.regions[chunk])
            for k, i in enumerate(chunk):
                patches[i], scores[i] = got[k], s[k]
                pred.negatives[i] = (
                    int(np.count_nonzero(batch.labels[k] == 0)) if batch.labels is not None else 0
                )
        pred.reprompts = len(redo)
    t3 = time.perf_counter()
    pred.seconds = {"embed": t1 - t0, "first_pass": t2 - t1, "calibration": t3 - t2}
    return pred


def predict_windows(
    predictor: PromptPredictor, inps: Sequence[WindowInput], params: PseudolabelParams
) -> list[WindowPrediction]:
    """Stage 2 for several windows: one image-encoder call for all of them when the predictor has a batch
    API (``set_image_batch(images)`` then ``use_image(i)``: SAM2's ``set_image_batch``), else one window
    after another. Then each window's prompts as in :func:`predict_window`; each window is charged an
    equal share of the batch's embedding time."""
    if len(inps) == 1 or not hasattr(predictor, "set_image_batch"):
        return [predict_window(predictor, inp, params) for inp in inps]
    batched = cast("BatchPromptPredictor", predictor)
    t0 = time.perf_counter()
    batched.set_image_batch([image_for(predictor, inp.image) for inp in inps])
    embed = (time.perf_counter() - t0) / len(inps)
    out = []
    for i, inp in enumerate(inps):
        batched.use_image(i)
        pred = predict_window(predictor, inp, params, embedded=True)
        pred.seconds["embed"] = embed
        out.append(pred)
    return out


# ------------------------------------------------------------------------------------------- stage 3


def one_gdal_env(f: Callable[P, R]) -> Callable[P, R]:
    """``f`` run inside one GDAL environment (``rasterio.Env``), so that the rasterio calls it makes do not
    each set one up and tear it down (as ``rasterio.features`` does when none is active)."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with rasterio.Env():
            return f(*args, **kwargs)

    return wrapper


@one_gdal_env
def postprocess_window(
    inp: WindowInput,
    pred: WindowPrediction,
    params: PseudolabelParams,
    transform: Affine,
    model: str,
    untrained: bool,
) -> WindowResult:
    """Stage 3: masks -> labels. Largest component of each mask; fallback check against the coarse
    segment; exclusive resolution of the window's labels (``segment_id`` order); vectorising."""
    t0 = time.perf_counter()
    w = inp.window
    pixel_area = abs(transform.determinant)
    n = len(inp.segment_ids)
    regions = [region_tuple(r) for r in inp.regions]
    upsampled = [region_mask_and_logits(pred.patches[i], regions[i]) for i in range(n)]
    raw = [m for m, _ in upsampled]
    pairs, shared = mask_overlaps(raw, inp.regions)
    comps = [largest_component_box(m) for m in raw]
    lcc = [c[0] if c is not None else None for c in comps]
    boxes: list[Box | None] = [c[1] if c is not None else None for c in comps]  # of ``final``, below
    seg_px = inside_regions(inp.segments_px, regions)
    source, reason, ratio, iou = [], [], [], []
    for i in range(n):
        r, j = mask_vs_segment(lcc[i], seg_px[i], float(inp.segments_px[i].area))
        ratio.append(r)
        iou.append(j)
        why = fallback_reason(lcc[i] is None, float(pred.scores[i]), r, j, params) if params.fallback else ""
        reason.append(why)
        source.append("coarse" if why else "sam2")
    t1 = time.perf_counter()
    final: list[np.ndarray | None] = list(lcc)
    reassigned = 0
    if params.exclusive:
        order = sorted(range(n), key=lambda i: inp.segment_ids[i])
        claims: list[np.ndarray] = []
        for i in order:
            mask = seg_px[i] if source[i] == "coarse" else lcc[i]
            claims.append(mask if mask is not None else np.zeros_like(raw[i]))
        values = [-np.inf if source[i] == "coarse" else upsampled[i][1] for i in order]
        known = [boxes[i] if source[i] == "sam2" else None for i in order]
        # the claims are the masks (each its own largest component, none fell back): their pairs are known
        same = all(c is raw[i] for i, c in zip(order, claims, strict=True))
        at = {i: k for k, i in enumerate(order)}
        claim_pairs = sorted((min(at[a], at[b]), max(at[a], at[b])) for a, b in pairs) if same else None
        won = resolve_claims(
            claims, values, [regions[i] for i in order], (w.height, w.width), boxes=known, pairs=claim_pairs
        )
        for i, c, got in zip(order, claims, won, strict=True):
            if got is c and source[i] == "sam2":  # uncontested: still the mask's largest component
                continue
            lost = int(np.count_nonzero(c)) - int(np.count_nonzero(got))  # ``got`` is part of ``c``
            reassigned += lost
            if not lost and source[i] == "sam2":  # it won every pixel it shares: as uncontested
                continue
            comp = largest_component_box(got)
            final[i], boxes[i] = comp if comp is not None else (None, None)
    t2 = time.perf_counter()
    result = WindowResult(key=w.key, prompts=n)
    for i, sid in enumerate(inp.segment_ids):
        r0, c0, _, _ = regions[i]
        mask = final[i]
        geom = None
        if source[i] == "coarse" and not params.exclusive:
            geom, npx, cut = inp.segments[i], round(inp.segments[i].area / pixel_area), False
        elif mask is not None:
            t = transform @ Affine.translation(w.col_off + c0, w.row_off + r0)
            pixel_box = boxes[i]
            geom = mask_to_polygon(mask, t, pixel_box)
            npx, cut = int(np.count_nonzero(mask)), touches_border(mask)
        if geom is None:
            why = SKIP_EMPTY_MASK if lcc[i] is None and not params.fallback else SKIP_EMPTY_AFTER_EXCLUSIVE
            result.skipped.append({"segment_id": int(sid), "reason": why})
            continue
        if params.exclusive and mask is not None:
            br0, bc0, br1, bc1 = cast("tuple[int, int, int, int]", pixel_box)
            box = (r0 + br0, c0 + bc0, r0 + br1, c0 + bc1)
            patch = pred.patches[i].crop(box) if source[i] == "sam2" else None
            result.claims.append(Claim(int(sid), w.row_off, w.col_off, box, patch))
        result.geoms.append(geom)
        result.rows.append(
            {
                ID_COLUMN: int(sid),
                "label_source": source[i],
                "fallback_reason": reason[i],
                "sam_score": float(pred.scores[i]),
                "mask_area_ratio": ratio[i],
                "mask_iou": iou[i],
                "prompt": params.prompt,
                "negatives": int(pred.negatives[i]),
                "ndvi": float(inp.ndvi[i]),
                "window_row": w.row,
                "window_col": w.col,
                "window_row_off": w.row_off,
                "window_col_off": w.col_off,
                "area": geom.area if source[i] == "coarse" and not params.exclusive else npx * pixel_area,
                "area_px": npx,
                "touches_region_edge": cut,
                "model": model,
                "untrained": bool(untrained),
            }
        )
    first = pred.overlap_first_pass if pred.overlap_first_pass is not None else (len(pairs), shared)
    result.stats = {
        "reprompts": pred.reprompts,
        "overlap_first_pass_pairs": first[0],
        "overlap_first_pass_px": first[1],
        "pixels_reassigned_within_windows": reassigned,
    }
    if params.negative_calibration:
        result.stats |= {
            "overlap_after_calibration_pairs": len(pairs),
            "overlap_after_calibration_px": shared,
        }
    t3 = time.perf_counter()
    result.stage_seconds = pred.seconds | {
        "read": inp.seconds,
        "postprocess": (t1 - t0) + (t3 - t2),
        "exclusive": t2 - t1,
    }
    result.seconds = sum(result.stage_seconds.values())
    return result


# ----------------------------------------------------------------------------------------------- the run


def without_image(inp: WindowInput, keep_segments: bool = True) -> WindowInput:
    """``inp`` without its image (stage 3 does not need it; less to send to a worker process), and
    without the segments in the raster's CRS unless ``keep_segments`` (stage 3 reads them only for coarse
    labels without exclusivity)."""
    segments = inp.segments if keep_segments else np.empty(0, dtype=object)
    return replace(inp, image=np.empty((0, 0, 3), dtype=np.uint8), segments=segments)


preload(__name__)  # worker processes of the window pipeline import this module once


def pseudolabel_plan(
    plan: Plan,
    segments: gpd.GeoDataFrame,
    predictor: PromptPredictor,
    *,
    params: PseudolabelParams | None = None,
    ortho_path: str | None = None,
    progress: bool = True,
    store: WindowStore | None = None,
    loop: WindowLoopParams | None = None,
) -> RunResult:
    """Pseudolabel every window of ``plan``; ``segments`` are in the raster's CRS with ``segment_id``
    (and, when prompting uses them, treetop columns; see :func:`read_window`).

    The three stages run as a window pipeline (:mod:`crownsam.common.window_pipeline`) as ``loop`` says
    (None: the sequential loop): windows read ahead in a thread, the model in this thread, stage 3 in
    worker processes. The labels do not depend on ``loop``.

    With a ``store``, each finished window is saved there and windows saved by an earlier attempt of the
    same run are reused instead of recomputed. Labels are exclusive within windows; across windows see
    :func:`resolve_run`.
    """
    params = params or PseudolabelParams()
    settings = (loop or WindowLoopParams(workers=0)).settings()
    t_start = time.perf_counter()
    model_t0 = predictor.forward_seconds
    transform = Affine(*plan.transform[:6])
    table = SegmentTable.of(segments, transform)
    done = store.load() if store else {}
    results: list[WindowResult] = []
    run = RunResult(labels=gpd.GeoDataFrame())
    finish = partial(
        postprocess_window,
        params=params,
        transform=transform,
        model=predictor.name,
        untrained=predictor.untrained,
    )
    # GDAL decodes a window's tiles in parallel: most useful while the workers have nothing to do yet
    with open_raster(ortho_path or plan.ortho, threads=task_cpus()) as src:
        order, cache_mib = reading_order(
            src, [(w.row_off, w.col_off) for w in plan.windows], plan.window, plan.stride
        )
        windows = [plan.windows[i] for i in order]
        todo = [w for w in windows if w.key not in done]
        with gdal_cache(cache_mib):
            # src is used by one thread only: the reader thread (pipeline), or this one (sequential loop)
            stream = run_pipeline(
                todo,
                lambda w: read_window(src, plan, w, table, defer_stretch=stretches_on_device(predictor)),
                lambda inps: predict_windows(predictor, inps, params),
                finish,
                settings,
                strip=partial(without_image, keep_segments=not params.exclusive),
            )
            bar = progress_bar(total=len(plan.windows), desc="windows", unit="win", enabled=progress)
            with closing(stream), bar:
                for window in windows:
                    if window.key in done:
                        results.append(spill_claims(run, done.pop(window.key)))
                        run.windows_resumed += 1
                        bar.update()
                        continue
                    result = next(stream)
                    bar.update()
                    if store:
                        store.save(result)
                    results.append(spill_claims(run, result))
                    run.window_seconds.append(result.seconds)
                    for k, v in result.stage_seconds.items():
                        run.stage_seconds[k] = run.stage_seconds.get(k, 0.0) + v
    gather(run, results, plan.crs)
    run.seconds_total = time.perf_counter() - t_start
    run.seconds_in_model = predictor.forward_seconds - model_t0
    return run


def spill_claims(run: RunResult, result: WindowResult) -> WindowResult:
    """Move a window's claims to the run's (on disk), so that the results kept until the end hold none."""
    run.claims.add(result.claims)
    result.claims = []
    return result


def gather(run: RunResult, results: list[WindowResult], crs: str | None) -> RunResult:
    """Add the windows' labels (sorted by ``segment_id``), claims still in them, skips and counters to
    ``run``."""
    for r in results:
        run.skipped.extend(r.skipped)
        run.prompts += r.prompts
        run.stats.update(r.stats)
        spill_claims(run, r)
    rows = [row for r in results for row in r.rows]
    geoms = [g for r in results for g in r.geoms]
    labels = gpd.GeoDataFrame(rows, columns=COLUMNS, geometry=geoms, crs=crs or None)
    run.labels = labels.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
    return run


def resolve_run(run: RunResult, plan: Plan) -> RunResult:
    """Resolve pixels contested by labels of different windows (see
    :func:`crownsam.pseudolabel.exclusive.resolve_across_windows`), in place."""
    t0 = time.perf_counter()
    res = resolve_across_windows(run.labels, run.claims, Affine(*plan.transform[:6]), plan.width, plan.height)
    run.labels = res.labels
    run.skipped.extend(res.dropped)
    run.stats["cross_window_pairs"] += res.pairs
    run.stats["pixels_reassigned_across_windows"] += res.pixels_reassigned
    run.stage_seconds["exclusive"] = run.stage_seconds.get("exclusive", 0.0) + time.perf_counter() - t0
    return run


def label_figures(labels: gpd.GeoDataFrame, pixel_area: float) -> dict:
    """Labels by source, fallbacks by reason, and the overlap of the labels (pairs, m² and pixels)."""
    src = Counter(labels["label_source"]) if len(labels) else Counter()
    why = Counter(r for r in labels["fallback_reason"] if r) if len(labels) else Counter()
    ov = overlap_figures(labels.geometry.values, min_area=0.01 * pixel_area)
    return {
        "labels_by_source": dict(sorted(src.items())),
        "fallbacks_by_reason": dict(sorted(why.items())),
        "overlap_in_output": {
            "pairs": ov["pairs"],
            "area_m2": round(ov["area"], 6),
            "area_px": round(ov["area"] / pixel_area, 1) if pixel_area else None,
        },
    }


def summarize(plan: Plan, result: RunResult, predictor: PromptPredictor, extra: dict | None = None) -> dict:
    """The run summary written beside the pseudolabels (JSON)."""
    skipped = list(plan.skipped) + result.skipped
    ws = result.window_seconds
    st = result.stats
    pixel_area = abs(Affine(*plan.transform[:6]).determinant)
    summary = {
        "ortho": plan.ortho,
        "segments": plan.segments,
        "model": predictor.name,
        "untrained": bool(predictor.untrained),
        "shard": list(plan.shard) if plan.shard else None,
        "windows_total": plan.windows_total,
        "windows_planned": len(plan.windows),
        "windows_processed": len(ws),
        "windows_resumed": result.windows_resumed,
        "segments_total": plan.segments_total,
        "segments_prompted": result.prompts,
        "segments_labeled": len(result.labels),
        "segments_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "skipped_segments": sorted(skipped, key=lambda s: s["segment_id"]),
        "calibration": {
            "reprompts": int(st["reprompts"]),
            "overlap_first_pass": {
                "pairs": int(st["overlap_first_pass_pairs"]),
                "area_px": int(st["overlap_first_pass_px"]),
            },
            "overlap_after_calibration": (
                {
                    "pairs": int(st["overlap_after_calibration_pairs"]),
                    "area_px": int(st["overlap_after_calibration_px"]),
                }
                if "overlap_after_calibration_pairs" in st
                else None
            ),
        },
        "exclusive": {
            "pixels_reassigned_within_windows": int(st["pixels_reassigned_within_windows"]),
            "cross_window_pairs": int(st["cross_window_pairs"]),
            "pixels_reassigned_across_windows": int(st["pixels_reassigned_across_windows"]),
            "pending": result.exclusive_pending,
        },
        "transform": list(plan.transform[:6]),
        "raster_size": [plan.width, plan.height],
        "seconds_total": round(result.seconds_total, 3),
        "seconds_in_model": round(result.seconds_in_model, 3),
        "seconds_by_stage": {k: round(result.stage_seconds.get(k, 0.0), 3) for k in STAGES},
        "seconds_per_window": {
            "mean": round(statistics.fmean(ws), 3) if ws else None,
            "median": round(statistics.median(ws), 3) if ws else None,
            "max": round(max(ws), 3) if ws else None,
        },
    } | label_figures(result.labels, pixel_area)
    if predictor.untrained:
        from crownsam.pseudolabel.params import UNTRAINED_WARNING

        summary["WARNING"] = UNTRAINED_WARNING
    summary.update(extra or {})
    return summary
