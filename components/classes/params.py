"""The parameters of ``crownsam pseudo-classes``, defined once (light: no numpy/sklearn import, so the
command line starts fast).

:class:`ClassesParams` is how crowns are described and clustered; its ``rgb_bands`` (the bands SAM2 sees
as RGB) is the one shared definition, :func:`crownsam.pseudolabel.params.rgb_bands_param`. Which SAM2
computes embeddings is :class:`crownsam.pseudolabel.params.Sam2Params`, composed beside it, not repeated.
:class:`PipelineClasses` is the pipeline's switch ``pseudo_classes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crownsam.classes.bands import INDICES
from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, param
from crownsam.pseudolabel.params import rgb_bands_param

FEATURES = ("spectral", "sam2", "both")
# Options that define the feature vector: fixed by a centres file when one is given (with SAM2's
# ``model``, which Sam2Params defines).
FEATURE_FIELDS = (
    "k",
    "k_range",
    "features",
    "indices",
    "percentiles",
    "texture_px",
    "min_pixels",
    "rgb_bands",
)
CLASS_COLUMN = "pseudo_class"  # the output column with the class (0..K-1; -1: no class)
K_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")


@dataclass(frozen=True)
class ClassesParams(Params):
    """Parameters of ``crownsam pseudo-classes`` (README: components/classes/README.md)."""

    k: int | None = param(
        None,
        "number of classes (default: chosen by silhouette over --k-range)",
        ge=2,
        unset=0,
        metavar="K",
        pipeline=None,  # the pipeline's K is its switch `pseudo_classes` (PipelineClasses)
    )
    k_range: str = param("2..8", "numbers of classes to try when --k is not given", metavar="LO..HI")
    features: str = param(
        "spectral", "what to cluster: spectral features, the SAM2 embedding, or both", choices=FEATURES
    )
    band_names: tuple[str, ...] | None = param(
        None,
        "band roles in band order, e.g. blue,green,red,nir,red_edge,thermal ('-' for none; default: the "
        "raster's band descriptions)",
        unset="",
        metavar="NAMES",
    )
    indices: tuple[str, ...] = param(
        ("ndvi", "ndre", "gndvi", "gcc"), "vegetation indices (ndvi, ndre, gndvi, gcc)", metavar="LIST"
    )
    percentiles: tuple[float, ...] = param(
        (10.0, 90.0), "per-band percentiles besides the mean", metavar="P,P"
    )
    texture_px: int = param(
        5, "side of the local window of the texture measure, px", ge=3, le=101, metavar="PX"
    )
    min_pixels: int = param(16, "crowns with fewer valid pixels get no class (-1)", ge=1, metavar="N")
    rgb_bands: tuple[int, ...] = rgb_bands_param()  # for --features sam2|both
    # Tuning of the clustering: command-line options only (pipeline names `seed`, `batch_size` would
    # collide with the training's).
    seed: int = param(
        0, "seed of MiniBatchKMeans and of the silhouette sample", ge=0, metavar="N", pipeline=None
    )
    restarts: int = param(
        10,
        "MiniBatchKMeans runs per K, seeds drawn from --seed (lowest inertia wins)",
        ge=1,
        metavar="N",
        pipeline=None,
    )
    batch_size: int = param(1024, "MiniBatchKMeans batch size", ge=1, metavar="N", pipeline=None)
    silhouette_sample: int = param(
        5000, "crowns drawn for the silhouette score", ge=10, metavar="N", pipeline=None
    )

    def check(self) -> None:
        k_bounds(self.k_range)
        for name in self.indices:
            if name not in INDICES:
                raise CrownsamError(
                    None, f"--indices: unknown index {name!r}; choose from {', '.join(INDICES)}"
                )
        if len(set(self.indices)) != len(self.indices):
            raise CrownsamError(None, "--indices: an index is named twice")
        if any(not 0 < p < 100 for p in self.percentiles):
            raise CrownsamError(None, "--percentiles: each must lie strictly between 0 and 100")
        if len(self.rgb_bands) != 3 or min(self.rgb_bands) < 1:
            raise CrownsamError(None, f"--rgb-bands: three 1-based band numbers, got {self.rgb_bands}")

    @property
    def uses_sam2(self) -> bool:
        return self.features in ("sam2", "both")

    def ks(self) -> list[int]:
        """The numbers of classes to fit: [k], or the range."""
        if self.k is not None:
            return [self.k]
        lo, hi = k_bounds(self.k_range)
        return list(range(lo, hi + 1))


def k_bounds(text: str) -> tuple[int, int]:
    """``"2..8"`` -> (2, 8); CrownsamError unless ``2 <= LO <= HI``."""
    m = K_RANGE.match(str(text))
    if not m:
        raise CrownsamError(None, f"--k-range: {text!r} must look like LO..HI, e.g. 2..8")
    lo, hi = int(m.group(1)), int(m.group(2))
    if lo < 2 or hi < lo:
        raise CrownsamError(None, f"--k-range: {text!r} needs 2 <= LO <= HI")
    return lo, hi


OFF, AUTO = "off", "auto"


@dataclass(frozen=True)
class PipelineClasses(Params):
    """The pipeline's switch: give the pseudolabels pseudo-classes (and train a multi-class Mask R-CNN on
    them), or not. ``off``: one class ``tree``, as without this step; ``auto``: K chosen by silhouette over
    the K range; a number: that K."""

    pseudo_classes: str = param(
        OFF,
        "pseudo-classes of the pseudolabels for a multi-class model: off, auto (K by silhouette) or K >= 2",
        flag="",
    )

    def check(self) -> None:
        self.k()

    @property
    def enabled(self) -> bool:
        return str(self.pseudo_classes).strip().lower() != OFF

    def k(self) -> int | None:
        """K, or None for ``auto`` (and for ``off``); CrownsamError for anything else."""
        text = str(self.pseudo_classes).strip().lower()
        if text in (OFF, AUTO):
            return None
        if not text.isdigit() or int(text) < 2:
            raise CrownsamError(
                None, f"pseudo_classes: {self.pseudo_classes!r} must be off, auto or a number K >= 2"
            )
        return int(text)

    @property
    def class_column(self) -> str | None:
        """The labels' class column for the COCO export: ``pseudo_class`` when on, else None."""
        return CLASS_COLUMN if self.enabled else None

    def classes_params(self, base: ClassesParams) -> ClassesParams:
        """``base`` with this switch's K (``auto``: base's K range)."""
        return base.replace(k=self.k())
