"""Parameters of the COCO export, defined once (see :mod:`crownsam.common.params`)."""

from __future__ import annotations

from dataclasses import dataclass

from crownsam.common.cli_util import bands_arg
from crownsam.common.params import Params, param

MIN_CHIP = 16


@dataclass(frozen=True)
class ExportParams(Params):
    """How an orthophoto and crown polygons become COCO chips (rules: ``components/coco/README.md``)."""

    chip: int = param(1024, "chip size in px", ge=MIN_CHIP, metavar="PX")
    overlap: float = param(0.25, "chip overlap fraction", ge=0.0, lt=1.0, pipeline="chip_overlap")
    bands: tuple[int, ...] = param(
        (3, 2, 1), "1-based orthophoto bands in the chips (the first three as R, G, B)", parse=bands_arg,
        pipeline="rgb_bands",
    )  # fmt: skip
    val_fraction: float = param(0.15, "share of the chips for validation", ge=0.0, lt=1.0)
    val_block: int = param(4, "validation block side in chips", ge=1)
    buffer_m: float = param(
        10.0, "test-area buffer in CRS units (m) kept free of train/val chips", ge=0.0, flag="--buffer",
        pipeline="holdout_buffer_m",
    )  # fmt: skip
    seed: int = param(0, "seed of the validation block order", ge=0, pipeline=None)
    sliver_fraction: float = param(
        0.2, "minimum kept share of a crown cut by a chip edge", ge=0.0, le=1.0, pipeline=None
    )
    sliver_px: int = param(64, "minimum mask size in px", ge=1, pipeline=None)
    class_column: str | None = param(
        None,
        "column of integer classes in the labels (e.g. pseudo_class): one COCO category class_<c> per "
        "class, crowns with a negative class left out (default: one category, tree)",
        metavar="COLUMN",
        pipeline=None,  # the pipeline sets it with its switch pseudo_classes (PipelineClasses)
    )
