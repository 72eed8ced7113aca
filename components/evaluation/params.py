"""Parameters of the label evaluation, defined once (see :mod:`crownsam.common.params`)."""

from __future__ import annotations

from dataclasses import dataclass

from crownsam.common.cli_util import bands_arg
from crownsam.common.params import Params, param

DEFAULT_TITLE = "crownsam label evaluation"


@dataclass(frozen=True)
class EvaluateParams(Params):
    """How label sets are compared with manual crowns and how the report looks."""

    rgb_bands: tuple[int, ...] = param(
        (3, 2, 1), "1-based R,G,B bands of --ortho drawn under the outlines", parse=bands_arg
    )
    n_boot: int = param(2000, "bootstrap resamples for the intervals", ge=1, pipeline=None)
    seed: int = param(0, "bootstrap seed", ge=0, pipeline=None)
    title: str = param(DEFAULT_TITLE, "report title", pipeline=None)
