"""Summary statistics of per-tree Jaccard indices: bootstrap intervals, detection scores, paired tests.

Pure functions of numbers; the rules are in the docstrings (and in the component README).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

LEVEL = 0.95  # confidence level of every interval
IOU_TP = 0.5  # a matched pair with IoU >= this is a detection (true positive)


def boot_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of ``n`` trees: an (n_boot, n) array of row indices drawn with replacement from
    ``numpy.random.default_rng(seed)``. The same seed gives the same resamples for every label set and
    every pair, so intervals are deterministic and computed on the same resampled tree sets."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_mean_ci(values: np.ndarray, idx: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: the (1-level)/2 and (1+level)/2 quantiles of the means
    of ``values[idx[k]]`` over resamples k. NaN for no values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or idx.size == 0:
        return math.nan, math.nan
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def describe(values: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    """mean, median, sample standard deviation (ddof=1; NaN for one tree) and the bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_mean_ci(values, idx)
    n = values.size
    return {
        "mean": float(values.mean()) if n else math.nan,
        "median": float(np.median(values)) if n else math.nan,
        "std": float(values.std(ddof=1)) if n > 1 else math.nan,
        "ci_low": lo,
        "ci_high": hi,
    }


def detection_scores(tp_crowns: int, n_crowns: int, tp_labels: int, n_labels: int) -> dict[str, float]:
    """Precision = tp_labels / n_labels, recall = tp_crowns / n_crowns, F1 = 2PR / (P + R).

    ``tp_crowns``: evaluated crowns whose matched label has IoU >= 0.5; ``tp_labels``: labels counted for
    precision (inside the area) that are such a match. 0/0 is NaN; F1 is 0 when P + R = 0.
    """
    p = tp_labels / n_labels if n_labels else math.nan
    r = tp_crowns / n_crowns if n_crowns else math.nan
    f1 = math.nan if math.isnan(p) or math.isnan(r) else (2 * p * r / (p + r) if p + r > 0 else 0.0)
    return {"precision": p, "recall": r, "f1": f1}


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (``scipy.stats.wilcoxon``, zero
    differences dropped as in Wilcoxon's original method; exact distribution for small samples without
    ties, normal approximation otherwise). 1.0 when every difference is zero, NaN with no trees."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan
    if not np.any(diff != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        p = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue
    return float(p)


def paired(earlier: np.ndarray, later: np.ndarray, idx: np.ndarray, level: float = LEVEL) -> dict[str, float]:
    """Paired comparison over the same trees: d_i = J_later,i - J_earlier,i (positive: the later set is
    better); mean of d, its percentile bootstrap interval (resampling trees), and the Wilcoxon p-value."""
    d = np.asarray(later, dtype=np.float64) - np.asarray(earlier, dtype=np.float64)
    lo, hi = bootstrap_mean_ci(d, idx, level)
    return {
        "diff_mean": float(d.mean()) if d.size else math.nan,
        "diff_ci_low": lo,
        "diff_ci_high": hi,
        "wilcoxon_p": wilcoxon_p(d),
    }
