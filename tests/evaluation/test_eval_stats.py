"""Summary statistics: bootstrap intervals, detection scores, paired differences and the Wilcoxon test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from crownsam.evaluation import stats


def test_bootstrap_is_seeded_and_resamples_trees() -> None:
    v = np.random.default_rng(0).uniform(0.4, 0.9, 25)
    a = stats.bootstrap_mean_ci(v, stats.boot_indices(25, 2000, seed=0))
    b = stats.bootstrap_mean_ci(v, stats.boot_indices(25, 2000, seed=0))
    c = stats.bootstrap_mean_ci(v, stats.boot_indices(25, 2000, seed=1))
    assert a == b and a != c
    assert a[0] < v.mean() < a[1]
    # The percentile interval of the mean is close to mean +- 1.96 SE for a symmetric sample.
    se = v.std(ddof=1) / math.sqrt(v.size)
    assert a[1] - a[0] == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_interval_of_constant_values_is_the_value() -> None:
    idx = stats.boot_indices(5, 100, seed=0)
    assert stats.bootstrap_mean_ci(np.full(5, 0.7), idx) == pytest.approx((0.7, 0.7))
    d = stats.describe(np.full(5, 0.7), idx)
    assert d["mean"] == d["median"] == pytest.approx(0.7) and d["std"] == 0.0


def test_describe_hand_values() -> None:
    v = np.array([0.0, 0.5, 1.0])
    d = stats.describe(v, stats.boot_indices(3, 500, seed=0))
    assert d["mean"] == pytest.approx(0.5) and d["median"] == pytest.approx(0.5)
    assert d["std"] == pytest.approx(0.5)  # sample SD: sqrt((0.25 + 0 + 0.25) / 2)
    assert 0.0 <= d["ci_low"] < 0.5 < d["ci_high"] <= 1.0
    one = stats.describe(np.array([0.3]), stats.boot_indices(1, 10, seed=0))
    assert math.isnan(one["std"]) and one["ci_low"] == one["ci_high"] == pytest.approx(0.3)


def test_detection_scores_hand_values() -> None:
    s = stats.detection_scores(tp_crowns=3, n_crowns=4, tp_labels=3, n_labels=6)
    assert s == pytest.approx({"precision": 0.5, "recall": 0.75, "f1": 0.6})
    s = stats.detection_scores(tp_crowns=0, n_crowns=4, tp_labels=0, n_labels=0)
    assert math.isnan(s["precision"]) and s["recall"] == 0.0 and math.isnan(s["f1"])
    assert stats.detection_scores(0, 4, 0, 3)["f1"] == 0.0


def test_paired_difference_is_later_minus_earlier() -> None:
    rng = np.random.default_rng(2)
    earlier = rng.uniform(0.3, 0.7, 25)
    later = np.clip(earlier + rng.uniform(0.05, 0.3, 25), 0, 1)
    idx = stats.boot_indices(25, 2000, seed=0)
    p = stats.paired(earlier, later, idx)
    assert p["diff_mean"] == pytest.approx(float(np.mean(later - earlier)))
    assert 0 < p["diff_ci_low"] < p["diff_mean"] < p["diff_ci_high"]
    assert p["wilcoxon_p"] < 1e-4
    q = stats.paired(later, earlier, idx)
    assert q["diff_mean"] == pytest.approx(-p["diff_mean"])
    assert q["diff_ci_high"] == pytest.approx(-p["diff_ci_low"])
    assert q["wilcoxon_p"] == pytest.approx(p["wilcoxon_p"])


def test_wilcoxon_matches_scipy_and_handles_ties_and_zeros() -> None:
    d = np.array([0.1, -0.2, 0.3, 0.05, 0.15, -0.01, 0.22, 0.4])
    assert stats.wilcoxon_p(d) == pytest.approx(sps.wilcoxon(d).pvalue)
    assert stats.wilcoxon_p(np.zeros(10)) == 1.0
    assert math.isnan(stats.wilcoxon_p(np.zeros(0)))
    with_zeros = np.array([0.0, 0.0, 0.1, 0.2, 0.3, 0.1])
    assert 0 < stats.wilcoxon_p(with_zeros) < 1
