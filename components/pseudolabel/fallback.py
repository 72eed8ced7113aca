"""Fallback to the coarse segment: the checks a SAM2 mask must pass to become the label.

Each mask (its largest 4-connected component, after negative prompt calibration, before exclusive
resolution) is compared with its coarse segment rasterised on the same window grid (pixel centres). The
coarse segment is kept instead when, checked in this order (the first that fails is the reason):

* ``empty_mask``: the mask is empty;
* ``low_score``: SAM2's predicted IoU is below ``fallback_min_score``;
* ``small_area`` / ``large_area``: mask area / segment area is below ``fallback_min_area_ratio`` or
  above ``fallback_max_area_ratio``;
* ``low_iou``: the IoU of mask and segment is below ``fallback_min_iou``.
"""

from __future__ import annotations

import numpy as np

from crownsam.pseudolabel.params import PseudolabelParams

REASONS = ("empty_mask", "low_score", "small_area", "large_area", "low_iou")


def mask_vs_segment(
    mask: np.ndarray | None, segment: np.ndarray, segment_area_px: float
) -> tuple[float, float]:
    """(area ratio, IoU) of a mask and its segment (boolean crops of the same region): ratio = mask pixels
    / segment area in pixels (the polygon's area, so a sliver segment still has one), IoU on pixels."""
    if mask is None or not mask.any():
        return 0.0, 0.0
    inter = int(np.count_nonzero(mask & segment))
    union = int(np.count_nonzero(mask | segment))
    return int(np.count_nonzero(mask)) / max(segment_area_px, 1e-9), inter / union if union else 0.0


def fallback_reason(empty: bool, score: float, ratio: float, iou: float, p: PseudolabelParams) -> str:
    """The first check the mask fails (module docstring), or ``""`` when it passes them all."""
    if empty:
        return "empty_mask"
    if not score >= p.fallback_min_score:  # NaN fails too
        return "low_score"
    if ratio < p.fallback_min_area_ratio:
        return "small_area"
    if ratio > p.fallback_max_area_ratio:
        return "large_area"
    if iou < p.fallback_min_iou:
        return "low_iou"
    return ""
