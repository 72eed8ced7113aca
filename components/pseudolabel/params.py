"""Parameters of pseudolabeling, each defined once (see :mod:`crownsam.common.params`): which SAM2 runs
(:class:`Sam2Params`, shared by every step that runs SAM2) and how segments become labels
(:class:`PseudolabelParams`). Light module: no torch import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crownsam.common.cli_util import bands_arg
from crownsam.common.device import DEVICE_HELP, check_device_name
from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, param

# model name -> (packaged hydra config, official checkpoint file name)
MODELS: dict[str, tuple[str, str]] = {
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}

UNTRAINED_WARNING = (
    "UNTRAINED SAM2: random weights, no checkpoint. Masks are meaningless; use this only to test "
    "plumbing and speed, never to judge label quality."
)
UNTRAINED_BANNER = "UNTRAINED SAM2: these pseudolabels come from random weights and are meaningless"


DEFAULT_RGB_BANDS = (3, 2, 1)


def rgb_bands_param(**spec: Any) -> Any:
    """The one definition of the option "which orthophoto bands SAM2 sees as R, G, B" (pipeline name
    ``rgb_bands``), for every step that feeds SAM2 or renders the orthophoto for it."""
    return param(DEFAULT_RGB_BANDS, "1-based R,G,B bands SAM2 sees", parse=bands_arg, metavar="R,G,B", **spec)


def red_band_param() -> Any:
    """The one definition of the orthophoto's red band for NDVI (pipeline name ``red_band``)."""
    return param(
        None, "1-based red band for NDVI (default: the band described as red)", ge=1, unset=0, metavar="N"
    )


def nir_band_param() -> Any:
    """The one definition of the orthophoto's near-infrared band for NDVI (pipeline name ``nir_band``)."""
    return param(
        None, "1-based NIR band for NDVI (default: the band described as NIR)", ge=1, unset=0, metavar="N"
    )


@dataclass(frozen=True)
class Sam2Params(Params):
    """Which SAM2 runs, with which weights, where. Weights come from ``checkpoint``, or, only when asked
    for explicitly, are random (``untrained``: plumbing and speed only, said in every output)."""

    model: str = param(
        "sam2.1_hiera_t", "SAM2 model (must match the checkpoint)", choices=MODELS, pipeline="sam2_model"
    )
    checkpoint: str | None = param(
        None,
        "SAM2 weights: local path, gs://bucket/key or https:// URL (cached)",
        pipeline="sam2_checkpoint",
        unset="",
        metavar="URI",
    )
    untrained: bool = param(False, "random weights: plumbing and speed only, never label quality")
    device: str = param("auto", DEVICE_HELP, pipeline=None)

    def check(self) -> None:
        if self.checkpoint and self.untrained:
            raise CrownsamError(None, "--checkpoint and --untrained exclude each other")
        check_device_name(self.device)


PROMPTS = ("box", "point", "box+point")
# Fallback thresholds (README "Fallback to the coarse segment" justifies them).
FALLBACK_MIN_AREA_RATIO = 0.2
FALLBACK_MAX_AREA_RATIO = 8.0
FALLBACK_MIN_IOU = 0.1
FALLBACK_MIN_SCORE = 0.5


@dataclass(frozen=True)
class PseudolabelParams(Params):
    """How each window's segments are prompted and their masks turned into labels.

    Order of the rules (README "Pseudolabeling"): vegetation filter (``min_ndvi``, before any model is
    loaded) -> prompts (``prompt``; treetops as positive points) -> first pass -> negative prompt
    calibration (``negative_calibration``) -> fallback check against the coarse segment (``fallback``)
    -> exclusive labels (``exclusive``: within each window, then across windows where shards merge).
    """

    rgb_bands: tuple[int, ...] | None = param(
        None,
        "1-based R,G,B bands SAM2 sees (default: the plan's, else 3,2,1)",
        parse=bands_arg,
        pipeline=None,
    )
    batch_size: int = param(16, "prompts per mask-decoder call", ge=1, pipeline=None)
    fix_geometries: bool = param(False, "repair invalid and multi-part segment polygons", pipeline=None)
    min_ndvi: float | None = param(
        None,
        "drop segments whose median NDVI is below X before prompting (off when unset; 0.3 separates "
        "crowns from roofs and roads)",
        ge=-1.0,
        le=1.0,
        unset=-1.0,
        metavar="X",
    )
    red_band: int | None = red_band_param()
    nir_band: int | None = nir_band_param()
    prompt: str = param(
        "box", "what prompts SAM2: the segment's box, its treetop point, or both", choices=PROMPTS
    )
    negative_calibration: bool = param(
        False, "re-prompt overlapping masks with each other's treetop as a negative point (PointSAM's NPC)"
    )
    exclusive: bool = param(True, "no two labels overlap: a contested pixel goes to the highest SAM2 logit")
    fallback: bool = param(True, "keep the coarse segment where SAM2's mask fails the checks below")
    fallback_min_area_ratio: float = param(
        FALLBACK_MIN_AREA_RATIO, "fallback when mask area / segment area is below this", gt=0.0, metavar="R"
    )
    fallback_max_area_ratio: float = param(
        FALLBACK_MAX_AREA_RATIO, "fallback when mask area / segment area is above this", gt=0.0, metavar="R"
    )
    fallback_min_iou: float = param(
        FALLBACK_MIN_IOU, "fallback when the mask's IoU with its segment is below this", ge=0.0, le=1.0
    )
    fallback_min_score: float = param(
        FALLBACK_MIN_SCORE, "fallback when SAM2's predicted IoU (score) is below this", ge=0.0, le=1.0
    )

    def check(self) -> None:
        if self.fallback_min_area_ratio >= self.fallback_max_area_ratio:
            raise CrownsamError(
                None,
                f"--fallback-min-area-ratio {self.fallback_min_area_ratio:g} must be below "
                f"--fallback-max-area-ratio {self.fallback_max_area_ratio:g}",
            )
        if self.red_band is not None and self.red_band == self.nir_band:
            raise CrownsamError(None, f"--red-band and --nir-band are both {self.red_band}")

    @property
    def needs_treetops(self) -> bool:
        """Whether prompting uses treetop points (point prompts, or negative prompt calibration)."""
        return self.prompt != "box" or self.negative_calibration
