"""Tiled inference over an orthophoto, merging of instances across windows, polygons with scores.

* **Windows.** Square windows of ``window`` px with stride ``round(window x (1 - overlap))`` cover the
  region (the whole raster, or the pixel bounding box of ``area`` grown by ``max(32, window x overlap)``
  px so that crowns across the area's edge are seen whole); the last row and column are aligned to
  the region's edge, so every window is full-size unless the region is smaller than one window (then it
  is zero-padded). Each window is read alone (rasterio windowed read), mapped to uint8 with the model's
  scene-wide stretch (nodata -> 0), divided by 255, and given to the model unresized (the model's
  ``min_size = max_size = window``).
* **Instances.** A detection is kept when its score >= ``score_threshold``; its mask is the mask
  probability >= 0.5, cut to the window's valid pixels. An instance "touches an inner edge" when its mask
  reaches a window side that has a neighbouring window (not the region's outer edge): it may be cut off.
* **Merging**, in raster pixels:

  1. *Duplicates*: instances are visited by priority (not touching an inner edge first, then higher
     score); an instance is dropped when a kept one has mask IoU >= 0.5 with it or one of the two holds
     >= 80 % of the other's pixels (intersection / smaller area >= 0.8). So of two copies the uncut one,
     else the higher-score one, survives; a cut piece of a crown that another window saw whole goes.
  2. *Stitching* (crowns wider than the overlap, which no window sees whole): two remaining cut
     instances from different windows are one crown when, inside the rectangle their two windows share,
     their masks have IoU >= 0.5. They become one instance (union of masks, the higher score).
  3. Duplicates once more (step 1) over the result.
* **Polygons.** The largest 4-connected component of each mask, vectorised in the raster's CRS (holes
  kept). With ``area``, only crowns whose centroid lies in it are written (as for manual crowns).
* **Classes** (a multi-class model): the merging above ignores classes, so each crown keeps the class of
  the instance that survives (a stitched crown: of its highest-scoring part); it is written as
  ``pred_class`` (the pseudo-class number of the training labels, ``pseudo_class``), ``pred_class_name``
  and ``class_score``, the model's probability of that class for the crown (torchvision's detection
  score, equal to ``score``). A single-class model's output has none of these columns.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
import torch
from rasterio import Affine
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from crownsam.common.errors import InputError
from crownsam.common.raster import (
    apply_stretch,
    crs_string,
    gdal_cache,
    open_raster,
    read_error,
    reading_order,
)
from crownsam.common.window_pipeline import WindowLoopParams, run_pipeline

log = logging.getLogger(__name__)

IOU_DUPLICATE = 0.5
CONTAIN_DUPLICATE = 0.8
IOU_STITCH = 0.5
LAYER = "predictions"


@dataclass(frozen=True)
class Win:
    """One window: pixel offsets and size (the part inside the raster)."""

    row: int
    col: int
    height: int
    width: int
    inner: tuple[bool, bool, bool, bool]  # top, bottom, left, right side has a neighbouring window


@dataclass
class Instance:
    """A predicted crown: a boolean mask crop placed at raster pixel (row, col)."""

    row: int
    col: int
    mask: np.ndarray
    score: float
    window: tuple[int, int]
    win_rect: tuple[int, int, int, int]  # r0, c0, r1, c1 of its window
    cut: bool  # touches an inner window edge
    stitched: int = 1
    label: int = 1  # the model's class label (1..K)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.row, self.col, self.row + self.mask.shape[0], self.col + self.mask.shape[1]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def axis_offsets(lo: int, hi: int, size: int, stride: int) -> list[int]:
    """Window starts covering ``[lo, hi)``: ``lo, lo + stride, ...``, the last one at ``hi - size``."""
    if hi - lo <= size:
        return [lo]
    starts = list(range(lo, hi - size, stride))
    starts.append(hi - size)
    return sorted(set(starts))


def window_stride(window: int, overlap: float) -> int:
    """Pixels between the offsets of neighbouring windows."""
    return max(1, round(window * (1 - overlap)))


def plan_windows(
    height: int, width: int, window: int, overlap: float, region: tuple[int, int, int, int] | None = None
) -> list[Win]:
    """Windows over ``region = (r0, c0, r1, c1)`` (default the whole raster); see the module docstring."""
    r0, c0, r1, c1 = region or (0, 0, height, width)
    stride = window_stride(window, overlap)
    # a region narrower than a window: the window moves back inside the raster rather than being padded
    rows = [min(r, max(0, height - window)) for r in axis_offsets(r0, r1, window, stride)]
    cols = [min(c, max(0, width - window)) for c in axis_offsets(c0, c1, window, stride)]
    out = []
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            out.append(
                Win(
                    r,
                    c,
                    min(window, height - r),
                    min(window, width - c),
                    (i > 0, i < len(rows) - 1, j > 0, j < len(cols) - 1),
                )
            )
    return out


@dataclass
class WindowOutput:
    """What turning a window's model output into instances needs, on the host: the kept detections'
    scores (float32) and labels, and their masks as mask probability >= 0.5 on the window's own pixels
    (bool, ``(k, height, width)``)."""

    scores: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def window_output(out: dict[str, torch.Tensor], win: Win, score_threshold: float) -> WindowOutput:
    """The detections of one window's Mask R-CNN output scoring >= ``score_threshold``, masks thresholded
    where the model ran (so only booleans are copied to the host)."""
    scores = out["scores"].detach().float().cpu().numpy()
    labels = out["labels"].detach().cpu().numpy() if "labels" in out else np.ones(len(scores), np.int64)
    keep = np.flatnonzero(scores >= score_threshold)
    if keep.size == 0:
        return WindowOutput(scores[keep], labels[keep], np.zeros((0, win.height, win.width), bool))
    probs = out["masks"][:, 0, : win.height, : win.width]  # a view
    if keep.size < len(scores):  # (none dropped when the model applies the threshold itself)
        probs = probs[keep]
    probs = probs.detach().float()
    # on a CPU numpy's comparison is faster than torch's (same booleans); on a GPU, compare there so that
    # only booleans are copied to the host
    on_cpu = probs.device.type == "cpu"
    masks = probs.numpy() >= 0.5 if on_cpu else (probs >= 0.5).cpu().numpy()
    return WindowOutput(scores[keep], labels[keep], masks)


def window_instances(o: WindowOutput, win: Win, valid: np.ndarray | None = None) -> list[Instance]:
    """One window's detections as instances: each mask cut to the window's valid pixels and to its
    extent (none left: dropped); ``cut`` when it reaches a window side that has a neighbouring window."""
    top, bottom, left, right = win.inner
    res = []
    for m, score, label in zip(o.masks, o.scores, o.labels, strict=True):
        if valid is not None:
            m &= valid
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if rows.size == 0:
            continue
        a0, a1, b0, b1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        cut = (
            (top and a0 == 0)
            or (bottom and a1 == win.height)
            or (left and b0 == 0)
            or (right and b1 == win.width)
        )
        res.append(
            Instance(
                row=win.row + int(a0),
                col=win.col + int(b0),
                mask=m[a0:a1, b0:b1].copy(),
                score=float(score),
                window=(win.row, win.col),
                win_rect=(win.row, win.col, win.row + win.height, win.col + win.width),
                cut=bool(cut),
                label=int(label),
            )
        )
    return res


def instances_from_output(
    out: dict[str, torch.Tensor], win: Win, score_threshold: float, valid: np.ndarray | None = None
) -> list[Instance]:
    """Turn one window's Mask R-CNN output into instances (masks cut to the window's valid pixels)."""
    return window_instances(window_output(out, win, score_threshold), win, valid)


def _crop(inst: Instance, rect: tuple[int, int, int, int]) -> np.ndarray:
    """``inst``'s mask on the pixel rectangle ``rect`` (r0, c0, r1, c1), zeros outside the mask crop."""
    r0, c0, r1, c1 = rect
    out = np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=bool)
    ir0, ic0, ir1, ic1 = inst.box
    a0, b0, a1, b1 = max(r0, ir0), max(c0, ic0), min(r1, ir1), min(c1, ic1)
    if a0 < a1 and b0 < b1:
        out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = inst.mask[a0 - ir0 : a1 - ir0, b0 - ic0 : b1 - ic0]
    return out


def _intersection(a: Instance, b: Instance) -> int:
    rect = (max(a.row, b.row), max(a.col, b.col), min(a.box[2], b.box[2]), min(a.box[3], b.box[3]))
    if rect[0] >= rect[2] or rect[1] >= rect[3]:
        return 0
    return int((_crop(a, rect) & _crop(b, rect)).sum())


def is_duplicate(a: Instance, b: Instance) -> bool:
    """Mask IoU >= 0.5, or one holds >= 80 % of the other's pixels."""
    inter = _intersection(a, b)
    if inter == 0:
        return False
    aa, ab = a.area, b.area
    return inter / (aa + ab - inter) >= IOU_DUPLICATE or inter / min(aa, ab) >= CONTAIN_DUPLICATE


def same_cut_crown(a: Instance, b: Instance) -> bool:
    """Both cut by inner window edges, from different windows, and IoU >= 0.5 inside the shared window
    rectangle."""
    if not (a.cut and b.cut) or a.win_rect == b.win_rect:
        return False
    ra, rb = a.win_rect, b.win_rect
    rect = (max(ra[0], rb[0]), max(ra[1], rb[1]), min(ra[2], rb[2]), min(ra[3], rb[3]))
    if rect[0] >= rect[2] or rect[1] >= rect[3]:
        return False
    ma, mb = _crop(a, rect), _crop(b, rect)
    inter = int((ma & mb).sum())
    union = int((ma | mb).sum())
    return union > 0 and inter / union >= IOU_STITCH


def _union(group: Sequence[Instance]) -> Instance:
    r0 = min(i.row for i in group)
    c0 = min(i.col for i in group)
    r1 = max(i.box[2] for i in group)
    c1 = max(i.box[3] for i in group)
    mask = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    for i in group:
        mask |= _crop(i, (r0, c0, r1, c1))
    best = max(group, key=lambda i: i.score)
    return Instance(
        r0, c0, mask, best.score, best.window, best.win_rect, cut=False, stitched=len(group), label=best.label
    )


def _pairs(instances: Sequence[Instance]) -> list[tuple[int, int]]:
    """Index pairs whose mask boxes overlap (STRtree on the boxes)."""
    if len(instances) < 2:
        return []
    boxes = shapely.box(
        [i.col for i in instances],
        [i.row for i in instances],
        [i.box[3] for i in instances],
        [i.box[2] for i in instances],
    )
    tree = shapely.STRtree(boxes)
    left, right = tree.query(boxes, predicate="intersects")
    sel = left < right
    return list(zip(left[sel].tolist(), right[sel].tolist(), strict=True))


def drop_duplicates(instances: Sequence[Instance]) -> list[Instance]:
    """Visit instances by priority (uncut first, then higher score) and keep one unless a kept one is
    its duplicate (:func:`is_duplicate`). Returns the kept instances in priority order."""
    inst = list(instances)
    order = sorted(range(len(inst)), key=lambda i: (inst[i].cut, -inst[i].score, i))
    neighbours: dict[int, list[int]] = {}
    for a, b in _pairs(inst):
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    kept: set[int] = set()
    for i in order:
        if any(j in kept and is_duplicate(inst[i], inst[j]) for j in neighbours.get(i, [])):
            continue
        kept.add(i)
    return [inst[i] for i in order if i in kept]


def stitch(instances: Sequence[Instance]) -> tuple[list[Instance], int]:
    """Join cut instances that are one crown (:func:`same_cut_crown`, transitively) into their union;
    return the instances and how many were joined."""
    inst = list(instances)
    parent = list(range(len(inst)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in _pairs(inst):
        if same_cut_crown(inst[a], inst[b]):
            parent[find(a)] = find(b)
    groups: dict[int, list[Instance]] = {}
    for i in range(len(inst)):
        groups.setdefault(find(i), []).append(inst[i])
    joined = sum(len(g) for g in groups.values() if len(g) > 1)
    return [g[0] if len(g) == 1 else _union(g) for g in groups.values()], joined


def merge_instances(instances: Sequence[Instance]) -> tuple[list[Instance], dict[str, int]]:
    """Drop duplicates (so a cut copy of a crown that some window saw whole goes), stitch the cut
    instances that remain, and drop duplicates once more (rules in the module docstring)."""
    first = drop_duplicates(instances)
    cut = [i for i in first if i.cut]
    stitched, joined = stitch(cut)
    candidates = [i for i in first if not i.cut] + stitched
    out = drop_duplicates(candidates)
    return out, {
        "instances": len(instances),
        "stitched_from": joined,
        "duplicates_dropped": len(instances) - len(first) + len(candidates) - len(out),
        "kept": len(out),
    }


def polygons(
    instances: Sequence[Instance],
    transform: Affine,
    crs: str,
    classes: Sequence[tuple[int | None, str]] | None = None,
) -> gpd.GeoDataFrame:
    """One polygon per instance (largest 4-connected component) in the raster's CRS; with ``classes``
    ((class value, name) per model label 1..K) also ``pred_class``, ``pred_class_name``, ``class_score``."""
    from crownsam.pseudolabel.masks import largest_component, mask_to_polygon

    rows = []
    for inst in instances:
        lcc = largest_component(inst.mask)
        if lcc is None:
            continue
        geom = mask_to_polygon(lcc, transform @ Affine.translation(inst.col, inst.row))
        rows.append(
            {
                "score": inst.score,
                "area_px": int(lcc.sum()),
                "window_row_off": inst.window[0],
                "window_col_off": inst.window[1],
                "cut_by_window": inst.cut,
                "stitched_from": inst.stitched,
                "geometry": geom,
            }
        )
        if classes:
            value, name = classes[inst.label - 1]
            rows[-1] |= {
                "pred_class": inst.label - 1 if value is None else value,
                "pred_class_name": name,
                "class_score": inst.score,
            }
    cols = ["score", "area_px", "window_row_off", "window_col_off", "cut_by_window", "stitched_from"]
    if classes:
        cols += ["pred_class", "pred_class_name", "class_score"]
    gdf = gpd.GeoDataFrame(rows, columns=[*cols, "geometry"], geometry="geometry", crs=crs)
    gdf["area"] = gdf.geometry.area
    return gdf


@dataclass
class OrthoInput:
    """The raster facts prediction needs."""

    path: str
    height: int
    width: int
    count: int
    crs: str
    transform: Affine
    nodata: float | None


def check_bands(bands: Sequence[int], count: int, source: str) -> None:
    for b in bands:
        if not 1 <= b <= count:
            raise InputError(source, f"band {b} out of range: the raster has bands 1..{count}")


def area_region(
    area: shapely.Geometry, transform: Affine, height: int, width: int, source: str, margin: int = 0
) -> tuple[int, int, int, int]:
    """Pixel rectangle (r0, c0, r1, c1) of the area's bounding box grown by ``margin`` px, clipped to the
    raster."""
    inv = ~transform
    x0, y0, x1, y1 = area.bounds
    cs, rs = zip(*(inv @ (x, y) for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))), strict=True)
    r0, r1 = math.floor(min(rs)), math.ceil(max(rs))
    c0, c1 = math.floor(min(cs)), math.ceil(max(cs))
    if r0 >= height or c0 >= width or r1 <= 0 or c1 <= 0:
        raise InputError(source, "the area does not overlap the raster")
    return max(0, r0 - margin), max(0, c0 - margin), min(height, r1 + margin), min(width, c1 + margin)


@torch.inference_mode()
def predict_ortho(
    model: torch.nn.Module,
    ortho: str | Path,
    bands: Sequence[int],
    stretch: Sequence[Sequence[float]],
    *,
    area: shapely.Geometry | None = None,
    window: int = 1024,
    overlap: float = 0.25,
    score_threshold: float = 0.5,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    progress: bool = False,
    classes: Sequence[tuple[int | None, str]] | None = None,
    loop: WindowLoopParams | None = None,
) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """Predict crowns over ``ortho`` (or the part under ``area``, a geometry in the raster's CRS); return
    polygons with ``score`` (and, for a multi-class model's ``classes``, the class columns) and a summary
    (windows, instances, merge counts, seconds, windows/s).

    The windows go through a window pipeline (:mod:`crownsam.common.window_pipeline`) as ``loop`` says
    (None: the sequential loop; ``window_batch`` does not apply, ``batch_size`` is the batch): windows
    read, stretched and made tensors ahead in a thread, the model on ``batch_size`` windows in this
    thread (masks thresholded where it runs), their instances made in ``workers`` worker threads (numpy
    releases the GIL there; a process would cost more to send the masks to than the work itself). The
    crowns do not depend on ``loop``."""
    from crownsam.common.progress import progress_bar

    device = torch.device(device)
    t0 = time.perf_counter()
    with open_raster(ortho) as src:
        if src.crs is None:
            raise InputError(ortho, "raster has no CRS; georeference it first")
        crs = crs_string(src.crs)
        check_bands(bands, src.count, str(ortho))
        margin = max(32, round(window * overlap))  # crowns across the area's edge are seen whole
        region = (
            area_region(area, src.transform, src.height, src.width, "area", margin)
            if area is not None
            else None
        )
        wins = plan_windows(src.height, src.width, window, overlap, region)
        all_valid = all(list(src.mask_flag_enums[b - 1]) == [MaskFlags.all_valid] for b in bands)
        restore = _inference_setup(model, window, score_threshold)
        model.eval().to(device)
        t_model = [0.0]
        pin = device.type == "cuda"

        def prepare(w: Win) -> _Prepared:
            img, valid = _read_window(src, w, bands, stretch, all_valid, str(ortho))
            padded = torch.zeros((len(bands), window, window), dtype=torch.float32)
            padded[:, : w.height, : w.width] = torch.from_numpy(img.transpose(2, 0, 1)).float() / 255.0
            return _Prepared(w, padded.pin_memory() if pin else padded, valid)

        def run_model(batch: Sequence[_Prepared]) -> list[WindowOutput]:
            images = []
            for p in batch:
                assert p.image is not None  # the image is dropped only after the model ran
                images.append(p.image.to(device, non_blocking=True))
            t = time.perf_counter()
            outs = model(images)
            t_model[0] += time.perf_counter() - t
            return [window_output(o, p.win, score_threshold) for p, o in zip(batch, outs, strict=True)]

        settings = replace(
            (loop or WindowLoopParams(workers=0)).settings(), batch=batch_size, processes=False
        )
        # read in strips when the raster is wide; the instances are kept in the windows' order
        order, cache_mib = reading_order(
            src, [(w.row, w.col) for w in wins], window, window_stride(window, overlap)
        )
        found_in: list[list[Instance]] = [[] for _ in wins]
        try:
            # src is used by one thread only: the reader thread (pipeline), or this one (sequential loop)
            stream = run_pipeline(
                [wins[i] for i in order], prepare, run_model, _finish_window, settings, strip=_without_image
            )
            bar = progress_bar(total=len(wins), desc="windows", unit="window", enabled=progress, leave=False)
            t_windows = time.perf_counter()
            with gdal_cache(cache_mib), closing(stream), bar:
                for i, found in zip(order, stream, strict=True):
                    found_in[i] = found
                    bar.update()
            t_windows = time.perf_counter() - t_windows
        finally:
            restore()
        transform = src.transform
    instances = [inst for found in found_in for inst in found]
    merged, counts = merge_instances(instances)
    gdf = polygons(merged, transform, crs, classes)
    n_before = len(gdf)
    if area is not None and len(gdf):
        gdf = gdf[shapely.covers(area, gdf.geometry.centroid.values)]
    gdf = gdf.sort_values(["window_row_off", "window_col_off", "score"], ascending=[True, True, False])
    gdf = gdf.reset_index(drop=True)
    gdf.insert(0, "segment_id", np.arange(1, len(gdf) + 1, dtype=np.int64))
    seconds = time.perf_counter() - t0
    summary = {
        "windows": len(wins),
        "window": window,
        "overlap": overlap,
        "score_threshold": score_threshold,
        **counts,
        "outside_area": n_before - len(gdf),
        "crowns": len(gdf),
        **(
            {"crowns_per_class": gdf["pred_class_name"].value_counts().sort_index().to_dict()}
            if classes
            else {}
        ),
        "seconds": seconds,
        "seconds_in_model": t_model[0],
        "seconds_in_window_loop": t_windows,  # reading, model and instances; not merging or polygons
        "windows_per_s": len(wins) / seconds if seconds > 0 else None,
        "window_loop": {"workers": settings.workers, "batch": settings.batch},
        "rules": {
            "stitch": f"cut by inner edges of two windows, IoU >= {IOU_STITCH} in their shared rectangle",
            "duplicate": f"mask IoU >= {IOU_DUPLICATE} or containment >= {CONTAIN_DUPLICATE}: keep the "
            "uncut, else the higher-score instance",
            "area": "crowns whose centroid lies in the area" if area is not None else "whole raster",
        },
    }
    return gdf, summary


@dataclass
class _Prepared:
    """A window read for the model: its image (bands, window, window; None once sent to finishing) and
    its valid-pixel mask (None: all valid)."""

    win: Win
    image: torch.Tensor | None
    valid: np.ndarray | None


def _without_image(p: _Prepared) -> _Prepared:
    return replace(p, image=None)


def _finish_window(p: _Prepared, o: WindowOutput) -> list[Instance]:
    return window_instances(o, p.win, p.valid)


def _read_window(
    src: Any, w: Win, bands: Sequence[int], stretch: Sequence[Sequence[float]], all_valid: bool, source: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """One window's bands as stretched uint8 (H, W, bands) and its valid-pixel mask (None: all valid)."""
    window = Window(w.col, w.row, w.width, w.height)
    try:
        data = src.read(list(bands), window=window)
        valid = None if all_valid else (src.read_masks(list(bands), window=window) > 0).all(axis=0)
    except RasterioIOError as exc:
        raise read_error(source, exc) from exc
    return apply_stretch(data, [(float(lo), float(hi)) for lo, hi in stretch], valid), valid


def _inference_setup(model: torch.nn.Module, window: int, score_threshold: float) -> Any:
    """Make a torchvision Mask R-CNN take ``window`` px inputs unresized and drop low scores before its
    masks are pasted; return a function that undoes it."""
    t = getattr(model, "transform", None)
    rh = getattr(model, "roi_heads", None)
    old = (
        getattr(t, "min_size", None),
        getattr(t, "max_size", None),
        getattr(rh, "score_thresh", None),
    )
    if t is not None and hasattr(t, "min_size"):
        t.min_size, t.max_size = (window,), window
    if rh is not None and hasattr(rh, "score_thresh"):
        rh.score_thresh = score_threshold

    def restore() -> None:
        if t is not None and old[0] is not None:
            t.min_size, t.max_size = old[0], old[1]
        if rh is not None and old[2] is not None:
            rh.score_thresh = old[2]

    return restore
