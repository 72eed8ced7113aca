"""Parameters of the window plan, defined once (see :mod:`crownsam.common.params`)."""

from __future__ import annotations

from dataclasses import dataclass

from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, param
from crownsam.pseudolabel.params import rgb_bands_param
from crownsam.tiling.grid import STRIDE, WINDOW


@dataclass(frozen=True)
class TileParams(Params):
    """Windows of ``window`` px every ``stride`` px; each segment in exactly one window; shards of work."""

    rgb_bands: tuple[int, ...] = rgb_bands_param()
    window: int = param(WINDOW, "window size in px (SAM2's input size)", ge=64, pipeline=None)
    stride: int = param(STRIDE, "window stride in px", ge=1, pipeline=None)
    shards: int = param(4, "split the windows into N shards of about equal work (parallel tasks)", ge=1)
    fix_geometries: bool = param(False, "repair invalid and multi-part segment polygons", pipeline=None)

    def check(self) -> None:
        if len(self.rgb_bands) != 3 or min(self.rgb_bands) < 1:
            raise CrownsamError(None, f"--rgb-bands: three 1-based band numbers, got {self.rgb_bands}")
        if self.stride > self.window:
            raise CrownsamError(None, f"--stride {self.stride}: must not exceed --window {self.window}")
