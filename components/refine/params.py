"""Parameters of ``crownsam refine``, each defined once (see :mod:`crownsam.common.params`).

SAM2 itself is :class:`crownsam.pseudolabel.params.Sam2Params`; the box method's prompting and fallback
thresholds are :class:`crownsam.pseudolabel.params.PseudolabelParams`; SAM objects made on the fly are
:class:`crownsam.everything.params.EverythingParams`. Light module: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass

from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, param
from crownsam.pseudolabel.params import rgb_bands_param

METHODS = ("none", "box", "sessrs")
# The SESSRS reference grid (qycools/SESSRS, sessrs_t1_t2.py: t1 0.5..0.9, t2 0.55..0.95) with t1 extended
# down to 0.3: a crown split in two halves needs t1 < 0.5 (README, "Why these defaults").
T1_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
T2_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def fraction_list(text: str) -> tuple[float, ...]:
    """``0.3,0.5`` -> (0.3, 0.5): the command-line form of a threshold grid."""
    import argparse

    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated numbers, e.g. 0.5,0.6") from exc


@dataclass(frozen=True)
class RefineParams(Params):
    """How predicted crowns are refined (rules: ``components/refine/README.md``)."""

    method: str = param(
        "none",
        "box: re-prompt SAM2 with each crown's box; sessrs: replace crowns by the SAM objects that support "
        "them; none: copy the predictions",
        choices=METHODS,
        pipeline="refine",
        cli_required=True,
    )
    t1: float = param(
        0.5, "sessrs: share of a SAM object that predictions must cover (t1)", ge=0.0, le=1.0,
        pipeline="refine_t1", metavar="X",
    )  # fmt: skip
    t2: float = param(
        0.5, "sessrs: share of a crown that its SAM objects must cover (t2)", ge=0.0, le=1.0,
        pipeline="refine_t2", metavar="Y",
    )  # fmt: skip
    max_objects: int = param(
        9, "sessrs: a crown supported by more SAM objects than this stays as predicted", ge=1, pipeline=None
    )
    tune: bool = param(
        False, "sessrs: choose t1 and t2 on validation crowns (--tune-truth or --tune-coco)", pipeline=None
    )
    t1_grid: tuple[float, ...] = param(
        T1_GRID, "t1 values --tune tries", parse=fraction_list, pipeline=None, metavar="X,..."
    )
    t2_grid: tuple[float, ...] = param(
        T2_GRID, "t2 values --tune tries", parse=fraction_list, pipeline=None, metavar="Y,..."
    )
    rgb_bands: tuple[int, ...] = rgb_bands_param()
    fix_geometries: bool = param(False, "repair invalid and multi-part predicted crowns", pipeline=None)

    def check(self) -> None:
        for flag, grid in (("--t1-grid", self.t1_grid), ("--t2-grid", self.t2_grid)):
            if not grid:
                raise CrownsamError(None, f"{flag}: give at least one value")
            bad = [v for v in grid if not 0.0 <= v <= 1.0]
            if bad:
                raise CrownsamError(None, f"{flag} values must be in [0, 1], got {bad[0]!r}")
        if len(self.rgb_bands) != 3 or min(self.rgb_bands) < 1:
            raise CrownsamError(None, f"--rgb-bands: three 1-based band numbers, got {self.rgb_bands}")
        if self.tune and self.method != "sessrs":
            raise CrownsamError(None, f"--tune chooses t1 and t2 of sessrs; --method is {self.method}")
