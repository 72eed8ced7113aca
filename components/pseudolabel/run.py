"""The pseudolabeling loop over a window plan: read window, embed once, prompt boxes in batches, vectorise."""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio import Affine
from rasterio.windows import Window

from crownsam.common.progress import progress_bar
from crownsam.common.raster import open_raster, read_rgb_window
from crownsam.common.vector import ID_COLUMN
from crownsam.pseudolabel.masks import (
    clip_boxes,
    largest_component,
    mask_to_polygon,
    neighbourhoods,
    touches_border,
)
from crownsam.pseudolabel.predictor import BoxPredictor
from crownsam.pseudolabel.resume import WindowResult, WindowStore
from crownsam.tiling.plan import Plan, WindowTask, pixel_geometries

log = logging.getLogger(__name__)

SKIP_EMPTY_MASK = "empty_mask"
COLUMNS = [
    ID_COLUMN,
    "sam_score",
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


@dataclass
class RunResult:
    """Pseudolabels (raster CRS) plus what happened, for the run summary."""

    labels: gpd.GeoDataFrame
    skipped: list[dict] = field(default_factory=list)
    window_seconds: list[float] = field(default_factory=list)
    seconds_total: float = 0.0
    seconds_in_model: float = 0.0
    prompts: int = 0
    windows_resumed: int = 0


def window_boxes(pix: np.ndarray, window: WindowTask) -> np.ndarray:
    """XYXY boxes of pixel-space geometries in the window's pixel frame, clipped to the window."""
    b = shapely.bounds(pix)
    b[:, [0, 2]] -= window.col_off
    b[:, [1, 3]] -= window.row_off
    return clip_boxes(b, window.width, window.height)


def label_window(
    image: np.ndarray,
    window: WindowTask,
    boxes: np.ndarray,
    predictor: BoxPredictor,
    transform: Affine,
    batch_size: int,
) -> list[tuple[shapely.Polygon | None, float, int, bool]]:
    """Embed the window once, prompt its boxes in batches; per box (polygon or None, score, px, cut)."""
    predictor.set_image(image, window)
    regions = neighbourhoods(boxes, window.width, window.height)
    out: list[tuple[shapely.Polygon | None, float, int, bool]] = []
    for start in range(0, len(boxes), batch_size):
        sl = slice(start, start + batch_size)
        masks, scores = predictor.predict_boxes(boxes[sl], regions[sl])
        for mask, score, (r0, c0, _, _) in zip(masks, scores, regions[sl], strict=True):
            lcc = largest_component(mask)
            if lcc is None:
                out.append((None, float(score), 0, False))
                continue
            t = transform @ Affine.translation(window.col_off + c0, window.row_off + r0)
            out.append((mask_to_polygon(lcc, t), float(score), int(lcc.sum()), touches_border(lcc)))
    return out


def process_window(
    src: rasterio.io.DatasetReader,
    plan: Plan,
    window: WindowTask,
    segments_by_id: gpd.GeoDataFrame,
    predictor: BoxPredictor,
    batch_size: int,
) -> WindowResult:
    """Read one window, label its segments, and return rows ready for the output table."""
    t0 = time.perf_counter()
    transform = Affine(*plan.transform[:6])
    pixel_area = abs(transform.determinant)
    seg = segments_by_id.loc[window.segment_ids]
    boxes = window_boxes(pixel_geometries(seg, transform), window)
    rgb = read_rgb_window(
        src,
        Window(window.col_off, window.row_off, window.width, window.height),
        plan.rgb_bands,
        plan.stretch,
        pad_to=plan.window,
    )
    labelled = label_window(rgb, window, boxes, predictor, transform, batch_size)
    result = WindowResult(key=window.key, prompts=len(boxes))
    for sid, (poly, score, npx, cut) in zip(window.segment_ids, labelled, strict=True):
        if poly is None:
            result.skipped.append({"segment_id": int(sid), "reason": SKIP_EMPTY_MASK})
            continue
        result.geoms.append(poly)
        result.rows.append(
            {
                ID_COLUMN: int(sid),
                "sam_score": score,
                "window_row": window.row,
                "window_col": window.col,
                "window_row_off": window.row_off,
                "window_col_off": window.col_off,
                "area": npx * pixel_area,
                "area_px": npx,
                "touches_region_edge": cut,
                "model": predictor.name,
                "untrained": bool(predictor.untrained),
            }
        )
    result.seconds = time.perf_counter() - t0
    return result


def pseudolabel_plan(
    plan: Plan,
    segments: gpd.GeoDataFrame,
    predictor: BoxPredictor,
    *,
    ortho_path: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    store: WindowStore | None = None,
) -> RunResult:
    """Pseudolabel every window of ``plan``; ``segments`` are in the raster's CRS with ``segment_id``.

    With a ``store``, each finished window is saved there and windows saved by an earlier attempt of the
    same run are reused instead of recomputed.
    """
    t_start = time.perf_counter()
    model_t0 = predictor.forward_seconds
    by_id = segments.set_index(ID_COLUMN, drop=False)
    done = store.load() if store else {}
    results: list[WindowResult] = []
    run = RunResult(labels=gpd.GeoDataFrame())
    with open_raster(ortho_path or plan.ortho) as src:
        bar = progress_bar(plan.windows, desc="windows", unit="win", enabled=progress)
        for window in bar:
            if window.key in done:
                results.append(done[window.key])
                run.windows_resumed += 1
                continue
            result = process_window(src, plan, window, by_id, predictor, batch_size)
            if store:
                store.save(result)
            results.append(result)
            run.window_seconds.append(result.seconds)
    for r in results:
        run.skipped.extend(r.skipped)
        run.prompts += r.prompts
    rows = [row for r in results for row in r.rows]
    geoms = [g for r in results for g in r.geoms]
    labels = gpd.GeoDataFrame(rows, columns=COLUMNS, geometry=geoms, crs=plan.crs or None)
    run.labels = labels.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
    run.seconds_total = time.perf_counter() - t_start
    run.seconds_in_model = predictor.forward_seconds - model_t0
    return run


def summarize(plan: Plan, result: RunResult, predictor: BoxPredictor, extra: dict | None = None) -> dict:
    """The run summary written beside the pseudolabels (JSON)."""
    skipped = list(plan.skipped) + result.skipped
    ws = result.window_seconds
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
        "seconds_total": round(result.seconds_total, 3),
        "seconds_in_model": round(result.seconds_in_model, 3),
        "seconds_per_window": {
            "mean": round(statistics.fmean(ws), 3) if ws else None,
            "median": round(statistics.median(ws), 3) if ws else None,
            "max": round(max(ws), 3) if ws else None,
        },
    }
    if predictor.untrained:
        from crownsam.pseudolabel.params import UNTRAINED_WARNING

        summary["WARNING"] = UNTRAINED_WARNING
    summary.update(extra or {})
    return summary
