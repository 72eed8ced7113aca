"""Standardise crown features, cluster them with scikit-learn's MiniBatchKMeans, assign crowns to saved
centres, and the centres file that makes a fit reusable.

* Scaling: ``z_j = (x_j - mean_j) / (sd_j * sqrt(G_b * d_g))`` with mean and population SD of feature j
  over the fitted crowns (``StandardScaler``; a constant feature gets sd 1), ``d_g`` the number of
  features in j's group and ``G_b`` the number of groups in j's block. Every block (spectral, SAM2) then
  has total variance 1, and inside a block every group (the per-band statistics, each index, thermal,
  texture; the SAM2 embedding) has the same share. Without it the 15 per-band statistics, which all
  follow one factor (how bright the crown is), or 256 embedding dimensions would outvote the rest.
* Clustering: ``MiniBatchKMeans(n_clusters=K, batch_size, n_init=1)`` (k-means++ start), ALPS' online
  k-means, run ``restarts`` times with seeds drawn from ``numpy.random.SeedSequence(seed)``; the run with
  the lowest inertia over all crowns wins. (MiniBatchKMeans' own ``n_init`` only picks the best
  *starting* centres and then runs once; single runs stop in poor local optima often enough to matter.)
  With a K range, each K is fitted and the one with the highest mean silhouette (Euclidean, on at most
  ``silhouette_sample`` crowns drawn with the seed) wins; ties go to the smaller K.
* Classes are numbered 0..K-1 by size, largest first (ties: the fitted order). Each crown's class is its
  nearest centre (``pairwise_distances_argmin_min``), the same rule for a fit and for saved centres;
  ``class_distance`` is that Euclidean distance in scaled units.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min, silhouette_score
from sklearn.preprocessing import StandardScaler

from crownsam.common.errors import InputError

FORMAT = "crownsam.pseudo-classes"
VERSION = 1


@dataclass(frozen=True)
class Scaling:
    """Per-feature centring and scaling (see the module docstring)."""

    mean: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.scale


def group_weights(groups: list[tuple[str, str]]) -> np.ndarray:
    """``sqrt(G_b * d_g)`` per column, from each column's (block, group) (module docstring)."""
    blocks: dict[str, set[str]] = {}
    sizes: dict[tuple[str, str], int] = {}
    for b, g in groups:
        blocks.setdefault(b, set()).add(g)
        sizes[(b, g)] = sizes.get((b, g), 0) + 1
    return np.array([math.sqrt(len(blocks[b]) * sizes[(b, g)]) for b, g in groups], dtype=np.float64)


def fit_scaling(x: np.ndarray, groups: list[tuple[str, str]]) -> Scaling:
    """Scaling fitted on the rows of ``x`` (n, d); ``groups`` gives each column's (block, group)."""
    sc = StandardScaler().fit(np.asarray(x, dtype=np.float64))
    scale = np.asarray(sc.scale_, dtype=np.float64) * group_weights(groups)
    return Scaling(np.asarray(sc.mean_, dtype=np.float64), scale)


def fit_kmeans(z: np.ndarray, k: int, *, seed: int, restarts: int, batch_size: int) -> MiniBatchKMeans:
    """The lowest-inertia of ``restarts`` MiniBatchKMeans runs with seeds from ``SeedSequence(seed)``."""
    seeds = np.random.SeedSequence(seed).generate_state(restarts)
    fits = [
        MiniBatchKMeans(n_clusters=k, random_state=int(s), n_init=1, batch_size=batch_size).fit(z)
        for s in seeds
    ]
    return min(fits, key=lambda f: f.inertia_)


def assign(z: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre (Euclidean) and its distance, for every row of ``z``."""
    labels, dist = pairwise_distances_argmin_min(z, centres)
    return labels.astype(np.int64), dist.astype(np.float64)


def order_by_size(centres: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Centres reordered so class 0 has the most crowns (stable for ties)."""
    labels, _ = assign(z, centres)
    counts = np.bincount(labels, minlength=len(centres))
    return centres[np.argsort(-counts, kind="stable")]


def silhouette(z: np.ndarray, labels: np.ndarray, *, sample: int, seed: int) -> float:
    """Mean silhouette (Euclidean) on at most ``sample`` rows; -1 when fewer than 2 clusters are used."""
    used = np.unique(labels).size
    if used < 2 or used >= len(z):
        return -1.0
    size = sample if len(z) > sample else None
    return float(silhouette_score(z, labels, sample_size=size, random_state=seed))


@dataclass
class Fit:
    """The result of :func:`cluster`: centres (scaled units, ordered by size), labels and distances."""

    k: int
    centres: np.ndarray
    labels: np.ndarray
    distance: np.ndarray
    silhouette: dict[int, float] = field(default_factory=dict)


def cluster(
    z: np.ndarray, ks: list[int], *, seed: int, restarts: int, batch_size: int, silhouette_sample: int
) -> Fit:
    """Fit each K in ``ks`` (one K: no silhouette needed, but it is reported), keep the best (module
    docstring)."""
    best: tuple[float, int, np.ndarray] | None = None
    scores: dict[int, float] = {}
    for k in ks:
        km = fit_kmeans(z, k, seed=seed, restarts=restarts, batch_size=batch_size)
        centres = np.asarray(km.cluster_centers_, dtype=np.float64)
        labels, _ = assign(z, centres)
        scores[k] = silhouette(z, labels, sample=silhouette_sample, seed=seed)
        if best is None or scores[k] > best[0]:
            best = (scores[k], k, centres)
    assert best is not None
    _, k, centres = best
    centres = order_by_size(centres, z)
    labels, dist = assign(z, centres)
    return Fit(k, centres, labels, dist, scores)


# --- the centres file -------------------------------------------------------------------------------------


@dataclass
class ClassModel:
    """Everything needed to assign new crowns without refitting; saved as JSON beside the output."""

    k: int
    features: str  # spectral | sam2 | both
    names: list[str]  # scaled feature names, in vector order (SAM2 dimensions as sam2_000, ...)
    mean: list[float]
    scale: list[float]
    centres: list[list[float]]  # K x d, scaled units, class 0 first
    spectral: dict[str, Any]  # roles, indices, percentiles, texture_px (crownsam.classes.features)
    sam2: dict[str, Any] | None  # model, checkpoint, untrained, rgb_bands, stretch (when SAM2 is used)
    min_pixels: int
    seed: int
    silhouette: dict[str, float]
    counts: list[int]
    fitted_on: dict[str, Any] = field(default_factory=dict)  # files, crowns, skipped by reason

    @property
    def scaling(self) -> Scaling:
        return Scaling(np.asarray(self.mean, dtype=np.float64), np.asarray(self.scale, dtype=np.float64))

    @property
    def centre_array(self) -> np.ndarray:
        return np.asarray(self.centres, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    def save(self, path: str | Path) -> None:
        """Write as JSON (floats in shortest round-trip form, so loading gives the same numbers)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path, source: str | None = None) -> ClassModel:
        """Read and check a centres file; InputError naming ``source`` (default ``path``) otherwise."""
        source = source or str(path)
        p = Path(path)
        if not p.is_file():
            raise InputError(source, "centres file not found")
        try:
            d = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(source, f"not a JSON centres file ({exc.__class__.__name__})") from exc
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(source, f"not a crownsam pseudo-classes centres file (format {FORMAT!r})")
        if d.get("version") != VERSION:
            raise InputError(
                source, f"centres file version {d.get('version')!r}; this crownsam reads {VERSION}"
            )
        names = {f.name for f in cls.__dataclass_fields__.values()}
        absent = sorted(n for n in names if n not in d and n != "fitted_on")
        if absent:
            raise InputError(source, f"centres file lacks {', '.join(absent)}")
        m = cls(**{k: v for k, v in d.items() if k in names})
        d_feat = len(m.names)
        shape_ok = (
            len(m.mean) == d_feat
            and len(m.scale) == d_feat
            and len(m.centres) == m.k
            and all(len(c) == d_feat for c in m.centres)
        )
        if not shape_ok or m.k < 2:
            raise InputError(source, "centres file is inconsistent (sizes of names, scaling and centres)")
        spectral_keys = {"roles", "indices", "percentiles", "texture_px"}
        sam2_keys = {"model", "checkpoint", "untrained", "rgb_bands"}
        if not isinstance(m.spectral, dict) or not spectral_keys <= set(m.spectral):
            missing = ", ".join(sorted(spectral_keys))
            raise InputError(source, f"centres file lacks spectral options ({missing})")
        if m.sam2 is not None and (not isinstance(m.sam2, dict) or not sam2_keys <= set(m.sam2)):
            raise InputError(source, f"centres file lacks SAM2 options ({', '.join(sorted(sam2_keys))})")
        return m
