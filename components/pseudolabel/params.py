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


@dataclass(frozen=True)
class PseudolabelParams(Params):
    """How each window's segments are prompted and their masks turned into labels."""

    rgb_bands: tuple[int, ...] | None = param(
        None,
        "1-based R,G,B bands SAM2 sees (default: the plan's, else 3,2,1)",
        parse=bands_arg,
        pipeline=None,
    )
    batch_size: int = param(16, "boxes per mask-decoder call", ge=1, pipeline=None)
    fix_geometries: bool = param(False, "repair invalid and multi-part segment polygons", pipeline=None)
