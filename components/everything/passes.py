"""The multi-pass loop on one tile (Remote SAMsing, section "multi-pass"): SAM2's automatic mask generator
runs again and again on the tile image with the masks accepted so far painted black, from strict to
relaxed quality thresholds.

Per pass ``p`` (thresholds ``t_p = (pred_iou, stability)``, ``t_1`` = the start values):
1. Points: SAM2's regular grid (``sam2.utils.amg.build_point_grid(points_per_side)``), minus the points
   on pixels already covered or without data. No point left: stop.
2. Image: the tile with every covered pixel set to 0 (black).
3. SAM2's ``SAM2AutomaticMaskGenerator`` with ``pred_iou_thresh, stability_score_thresh = t_p``
   returns masks, best predicted IoU first (its own NMS order).
4. Each mask, restricted to valid pixels, is split into 4-connected parts; a part smaller than
   ``min_mask_px`` is dropped (``small``), a part of which ``max_overlap`` or more is covered already is
   dropped (``overlap``); otherwise its uncovered pixels become a new object (first come, first kept:
   objects never overlap) that records ``p``, ``t_p`` and the mask's score and stability.
5. Coverage ``c_p`` = covered share of the tile's own valid pixels. Stop when ``c_p >= target``. If
   the pass added no object or ``c_p - c_{p-1} < min_gain``: relax, ``t_{p+1} = max(floor, t_p - step)``
   per threshold; if both were at their floors already, coverage has stopped growing: stop.
6. Stop after ``passes`` passes.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import ndimage

from crownsam.everything.params import EverythingParams
from crownsam.everything.tiles import Tile

STOP_TARGET = "target_coverage"
STOP_FLOOR = "no_gain_at_floor"
STOP_NO_POINTS = "no_points_left"
STOP_PASSES = "passes"
STOP_NO_DATA = "no_valid_pixels"


class MaskGenerator(Protocol):
    """What the multi-pass loop needs: SAM2's automatic mask generator (:class:`AmgGenerator`), or one
    with a known-answer model behind it (``crownsam.everything.known_answer``).

    ``generate`` returns SAM2AutomaticMaskGenerator records (``segmentation`` as uncompressed RLE,
    ``predicted_iou``, ``stability_score``, ...) for the normalised ``(x, y)`` points on ``image``.
    """

    name: str
    untrained: bool
    model_seconds: float

    def start_tile(self, tile: Tile) -> None: ...

    def generate(
        self, image: np.ndarray, points: np.ndarray, pred_iou_thresh: float, stability_score_thresh: float
    ) -> list[dict[str, Any]]: ...


def make_amg(model: Any, params: EverythingParams) -> Any:
    """SAM2's ``SAM2AutomaticMaskGenerator`` for our passes: one crop layer (the whole tile), an explicit
    point grid (replaced per pass), the start thresholds (replaced per pass), RLE output."""
    import warnings

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.utils.amg import build_point_grid

    with warnings.catch_warnings():  # SAM2Transforms uses torch.jit.script, deprecated in torch 2.14
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        return SAM2AutomaticMaskGenerator(
            model,
            points_per_side=None,
            point_grids=[build_point_grid(params.points_per_side)],
            points_per_batch=params.points_per_batch,
            pred_iou_thresh=params.pred_iou_start,
            stability_score_thresh=params.stability_start,
            box_nms_thresh=params.box_nms_thresh,
            crop_n_layers=0,
            output_mode="uncompressed_rle",
        )


class AmgGenerator:
    """SAM2's own ``SAM2AutomaticMaskGenerator`` with one explicit point grid and thresholds per call.

    Nothing of SAM2's generator is rewritten: each call sets its ``point_grids`` (one crop layer, the whole
    image) and its two thresholds, then runs ``generate``; masks come back as uncompressed RLE so a pass
    never holds all its masks at full size. ``model_seconds`` accumulates the time inside ``generate``
    (image encoder, mask decoder and SAM2's own filtering); bf16 autocast on CUDA.
    """

    def __init__(self, amg: Any, *, name: str, untrained: bool) -> None:
        self.amg = amg
        self.name = name
        self.untrained = untrained
        self.model_seconds = 0.0

    @classmethod
    def from_model(cls, model: Any, params: EverythingParams, *, name: str, untrained: bool) -> AmgGenerator:
        """Wrap a built SAM2 model (``pseudolabel.sam2_model.build_sam2_model``)."""
        return cls(make_amg(model, params), name=name, untrained=untrained)

    def _autocast(self) -> AbstractContextManager:
        import torch

        device = getattr(self.amg.predictor, "device", None)
        if isinstance(device, torch.device) and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def start_tile(self, tile: Tile) -> None:
        """SAM2 needs nothing per tile (a known-answer model does)."""

    def generate(
        self, image: np.ndarray, points: np.ndarray, pred_iou_thresh: float, stability_score_thresh: float
    ) -> list[dict[str, Any]]:
        import torch

        self.amg.point_grids = [np.asarray(points, dtype=np.float64).reshape(-1, 2)]
        self.amg.pred_iou_thresh = float(pred_iou_thresh)
        self.amg.stability_score_thresh = float(stability_score_thresh)
        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            records = self.amg.generate(image)
        device = getattr(self.amg.predictor, "device", None)
        if isinstance(device, torch.device) and device.type == "cuda":
            torch.cuda.synchronize(device)
        self.model_seconds += time.perf_counter() - t0
        return records


@dataclass
class PassRecord:
    """What one pass did."""

    index: int  # 1-based
    pred_iou_thresh: float
    stability_thresh: float
    points: int
    masks: int  # records from SAM2's generator
    added: int  # new objects
    dropped_small: int
    dropped_overlap: int
    covered_px: int  # the tile's own valid pixels covered after the pass
    coverage: float  # covered_px / the tile's own valid pixels


@dataclass
class TileObject:
    """One accepted object in a tile: its label in the tile's label array and where it came from."""

    label: int
    score: float
    stability: float
    pass_index: int
    pred_iou_thresh: float
    stability_thresh: float


@dataclass
class PassesResult:
    """The tile's label array (0: nothing; objects 1..n), its objects and its passes."""

    labels: np.ndarray
    objects: list[TileObject] = field(default_factory=list)
    passes: list[PassRecord] = field(default_factory=list)
    stop: str = STOP_PASSES
    valid_own_px: int = 0
    covered_own_px: int = 0


def relax(value: float, step: float, floor: float) -> float:
    """One relaxation step: ``max(floor, value - step)`` (rounded to 1e-9 so repeated steps stay exact)."""
    return round(max(floor, value - step), 9)


def grid_points(points_per_side: int) -> np.ndarray:
    """SAM2's regular point grid in normalised ``(x, y)``: ``((i + 0.5) / n, (j + 0.5) / n)``."""
    from sam2.utils.amg import build_point_grid

    return build_point_grid(points_per_side)


def free_points(grid: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The normalised grid points whose pixel (``floor(x * W), floor(y * H)``) is ``free``."""
    h, w = free.shape
    cols = np.clip(np.floor(grid[:, 0] * w).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(grid[:, 1] * h).astype(np.int64), 0, h - 1)
    return grid[free[rows, cols]]


def record_mask(record: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """A generator record's mask as a boolean (H, W) array (RLE as SAM2 writes it, or a bool array)."""
    seg = record["segmentation"]
    if isinstance(seg, dict):
        from sam2.utils.amg import rle_to_mask

        mask = rle_to_mask(seg)
    else:
        mask = np.asarray(seg, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask of shape {mask.shape} for a tile of shape {shape}")
    return mask


def accept_masks(
    records: list[dict[str, Any]],
    labels: np.ndarray,
    covered: np.ndarray,
    valid: np.ndarray,
    params: EverythingParams,
    pass_index: int,
    thresholds: tuple[float, float],
    objects: list[TileObject],
) -> tuple[int, int, int]:
    """Step 4 of the module docstring, in place on ``labels`` / ``covered`` / ``objects``.
    Returns (added, dropped_small, dropped_overlap)."""
    added = small = overlap = 0
    for rec in records:
        mask = record_mask(rec, labels.shape) & valid
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if rows.size == 0:
            continue
        sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        parts, n = ndimage.label(mask[sl])
        sizes = np.bincount(parts.ravel(), minlength=n + 1)
        for k in range(1, n + 1):
            if sizes[k] < params.min_mask_px:
                small += 1
                continue
            part = parts == k
            cov = covered[sl]
            if np.count_nonzero(part & cov) >= params.max_overlap * sizes[k]:
                overlap += 1
                continue
            new = part & ~cov
            label = len(objects) + 1
            labels[sl][new] = label
            cov[new] = True
            objects.append(
                TileObject(
                    label=label,
                    score=float(rec["predicted_iou"]),
                    stability=float(rec["stability_score"]),
                    pass_index=pass_index,
                    pred_iou_thresh=thresholds[0],
                    stability_thresh=thresholds[1],
                )
            )
            added += 1
    return added, small, overlap


def run_passes(
    image: np.ndarray,
    valid: np.ndarray,
    own: tuple[slice, slice],
    generator: MaskGenerator,
    params: EverythingParams,
) -> PassesResult:
    """The multi-pass loop of the module docstring on one tile image (H, W, 3 uint8; invalid pixels 0).

    ``valid``: pixels with data; ``own``: the slices of the pixels this tile owns (coverage is measured
    there; masks are kept over the whole read window for the seam merge).
    """
    h, w = valid.shape
    labels = np.zeros((h, w), dtype=np.int32)
    covered = np.zeros((h, w), dtype=bool)
    result = PassesResult(labels=labels, valid_own_px=int(np.count_nonzero(valid[own])))
    if result.valid_own_px == 0:
        result.stop = STOP_NO_DATA
        return result
    grid = grid_points(params.points_per_side)
    iou_t, stab_t = params.pred_iou_start, params.stability_start
    previous = 0.0
    for p in range(1, params.passes + 1):
        points = free_points(grid, valid & ~covered)
        if len(points) == 0:
            result.stop = STOP_NO_POINTS
            break
        painted = image.copy()
        painted[covered] = 0
        records = generator.generate(painted, points, iou_t, stab_t)
        del painted
        added, small, overlap = accept_masks(
            records, labels, covered, valid, params, p, (iou_t, stab_t), result.objects
        )
        covered_px = int(np.count_nonzero(covered[own] & valid[own]))
        coverage = covered_px / result.valid_own_px
        result.passes.append(
            PassRecord(
                p,
                iou_t,
                stab_t,
                len(points),
                len(records),
                added,
                small,
                overlap,
                covered_px,
                round(coverage, 6),
            )
        )
        if coverage >= params.target_coverage:
            result.stop = STOP_TARGET
            break
        if added == 0 or coverage - previous < params.min_gain:
            at_floor = iou_t <= params.pred_iou_floor and stab_t <= params.stability_floor
            if at_floor:
                result.stop = STOP_FLOOR
                break
            iou_t = relax(iou_t, params.pred_iou_step, params.pred_iou_floor)
            stab_t = relax(stab_t, params.stability_step, params.stability_floor)
        previous = coverage
    result.covered_own_px = int(np.count_nonzero(covered[own] & valid[own]))
    return result
