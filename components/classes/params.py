"""The parameters of ``crownsam pseudo-classes``, defined once (light: no numpy/sklearn import, so the
command line starts fast)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from crownsam.classes.bands import INDICES
from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, param

FEATURES = ("spectral", "sam2", "both")
# Options that define the feature vector: fixed by a centres file when one is given.
FEATURE_FIELDS = (
    "k",
    "k_range",
    "features",
    "indices",
    "percentiles",
    "texture_px",
    "min_pixels",
    "model",
    "rgb_bands",
)
K_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")


@dataclass(frozen=True)
class ClassesParams(Params):
    """Parameters of ``crownsam pseudo-classes`` (README: components/classes/README.md)."""

    k: int | None = param(
        None, "number of classes (default: chosen by silhouette over --k-range)", ge=2, unset=0, metavar="K"
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
    seed: int = param(0, "seed of MiniBatchKMeans and of the silhouette sample", ge=0, metavar="N")
    restarts: int = param(
        10, "MiniBatchKMeans runs per K, seeds drawn from --seed (lowest inertia wins)", ge=1, metavar="N"
    )
    batch_size: int = param(1024, "MiniBatchKMeans batch size", ge=1, metavar="N")
    silhouette_sample: int = param(5000, "crowns drawn for the silhouette score", ge=10, metavar="N")
    model: str = param(
        "sam2.1_hiera_t", "SAM2 model for --features sam2|both", pipeline="sam2_model", metavar="NAME"
    )
    checkpoint: str | None = param(
        None,
        "SAM2 weights: local path, gs:// or https:// (cached)",
        unset="",
        pipeline="sam2_checkpoint",
        metavar="URI",
    )
    untrained: bool = param(False, "random SAM2 weights: plumbing and speed only")
    rgb_bands: tuple[int, ...] = param((3, 2, 1), "1-based bands SAM2 sees as RGB", metavar="R,G,B")
    device: str = param("auto", "where SAM2 runs: auto, cpu or cuda", metavar="DEVICE")

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
        if len(self.rgb_bands) != 3:
            raise CrownsamError(None, f"--rgb-bands: need exactly 3 band indices, got {len(self.rgb_bands)}")
        if self.checkpoint and self.untrained:
            raise CrownsamError(None, "--checkpoint and --untrained exclude each other")
        if self.uses_sam2 and not self.checkpoint and not self.untrained:
            raise CrownsamError(
                None,
                f"--features {self.features} needs SAM2: pass --checkpoint URI (path, gs://, https://) or "
                "--untrained",
            )

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
