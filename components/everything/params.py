"""Parameters of ``segment-everything`` and ``add-missed``, each defined once (see ``common/params.py``).

Defaults and why they were chosen are in ``components/everything/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, param
from crownsam.pseudolabel.params import nir_band_param, red_band_param, rgb_bands_param


@dataclass(frozen=True)
class EverythingParams(Params):
    """Tiling, the multi-pass schedule and SAM2's automatic-mask-generator settings."""

    tile: int = param(
        1024, "tile size in pixels; each tile owns about this square", ge=64, le=8192, pipeline="amg_tile"
    )
    padding: int = param(
        128, "context pixels read around every tile (at most --tile)", ge=0, pipeline="amg_padding"
    )
    passes: int = param(4, "most passes per tile", ge=1, le=100, pipeline="amg_passes")
    pred_iou_start: float = param(
        0.93, "pred_iou_thresh of the first pass", ge=0.0, le=1.0, pipeline="amg_pred_iou_start"
    )
    pred_iou_step: float = param(
        0.05,
        "pred_iou_thresh relaxes by this after a stalled pass",
        ge=0.0,
        le=1.0,
        pipeline="amg_pred_iou_step",
    )
    pred_iou_floor: float = param(
        0.6, "pred_iou_thresh never relaxes below this", ge=0.0, le=1.0, pipeline="amg_pred_iou_floor"
    )
    stability_start: float = param(
        0.93, "stability_score_thresh of the first pass", ge=0.0, le=1.0, pipeline="amg_stability_start"
    )
    stability_step: float = param(
        0.05, "stability_score_thresh relaxes by this", ge=0.0, le=1.0, pipeline="amg_stability_step"
    )
    stability_floor: float = param(
        0.6, "stability_score_thresh never relaxes below this", ge=0.0, le=1.0, pipeline="amg_stability_floor"
    )
    min_gain: float = param(
        0.001,
        "relax the thresholds when a pass adds less coverage than this (share of pixels)",
        ge=0.0,
        le=1.0,
        pipeline="amg_min_gain",
    )
    target_coverage: float = param(
        0.99,
        "stop a tile once this share of its pixels is covered",
        gt=0.0,
        le=1.0,
        pipeline="amg_target_coverage",
    )
    max_overlap: float = param(
        0.5,
        "drop a mask when this share of it is covered already",
        gt=0.0,
        le=1.0,
        pipeline="amg_max_overlap",
    )
    min_mask_px: int = param(
        100, "drop mask parts (4-connected) smaller than this, pixels", ge=1, pipeline="amg_min_mask_px"
    )
    points_per_side: int = param(
        32,
        "point grid per side of a tile (SAM2's points_per_side)",
        ge=1,
        le=256,
        pipeline="amg_points_per_side",
    )
    points_per_batch: int = param(
        64, "points per SAM2 decoder call (memory vs speed)", ge=1, le=4096, pipeline="amg_points_per_batch"
    )
    box_nms_thresh: float = param(
        0.7, "SAM2's box NMS IoU within one pass", gt=0.0, le=1.0, pipeline="amg_box_nms_thresh"
    )
    rgb_bands: tuple[int, ...] = rgb_bands_param()

    def check(self) -> None:
        if self.padding > self.tile:
            raise CrownsamError(None, f"--padding: must be at most --tile ({self.tile}), got {self.padding}")
        for name in ("pred_iou", "stability"):
            start, floor = getattr(self, f"{name}_start"), getattr(self, f"{name}_floor")
            if floor > start:
                flag = f"--{name.replace('_', '-')}-floor"
                raise CrownsamError(None, f"{flag}: must be at most the start value {start:g}, got {floor:g}")
        if len(self.rgb_bands) != 3 or min(self.rgb_bands) < 1:
            raise CrownsamError(None, f"--rgb-bands: need three 1-based band indices, got {self.rgb_bands}")


@dataclass(frozen=True)
class AddMissedParams(Params):
    """Which segment-everything objects become new labels (rules in the README, "add-missed")."""

    max_overlap: float = param(
        0.2,
        "an object with at least this share of its area under existing labels is not new",
        ge=0.0,
        le=1.0,
        pipeline="missed_max_overlap",
    )
    min_area: float = param(1.0, "smallest new crown, m²", ge=0.0, pipeline="missed_min_area")
    max_area: float = param(60.0, "largest new crown, m²", gt=0.0, pipeline="missed_max_area")
    min_compactness: float = param(
        0.3,
        "smallest area / area of the smallest enclosing circle",
        ge=0.0,
        le=1.0,
        pipeline="missed_min_compactness",
    )
    min_ndvi: float = param(
        0.6, "smallest mean NDVI of a new crown", ge=-1.0, le=1.0, pipeline="missed_min_ndvi"
    )
    min_height: float = param(
        2.0,
        "smallest 90th-percentile CHM height of a new crown, m (with --chm)",
        ge=0.0,
        pipeline="missed_min_height",
    )
    red_band: int | None = red_band_param()
    nir_band: int | None = nir_band_param()
    existing_source: str = param(
        "pseudo",
        "label_source of the existing labels when their file has no such column",
        pipeline="missed_existing_source",
    )

    def check(self) -> None:
        if self.max_area <= self.min_area:
            raise CrownsamError(
                None, f"--max-area: must exceed --min-area {self.min_area:g}, got {self.max_area:g}"
            )
        if self.red_band is not None and self.red_band == self.nir_band:
            raise CrownsamError(None, f"--red-band and --nir-band are both {self.red_band}")
        if not self.existing_source or self.existing_source == AMG_SOURCE:
            raise CrownsamError(None, f"--existing-source: must be non-empty and not {AMG_SOURCE!r}")


AMG_SOURCE = "amg"
