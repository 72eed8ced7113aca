"""Detection quality of crown polygons against reference crowns (one-to-one matching at an IoU threshold)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment


def iou_matrix(pred: Sequence[shapely.Geometry], truth: Sequence[shapely.Geometry]) -> np.ndarray:
    """IoU (intersection area / union area) of every predicted and reference polygon, shape (len(pred),
    len(truth)); pairs that do not intersect are 0 (found with an STRtree, so this is not quadratic)."""
    p = np.asarray(pred, dtype=object)
    t = np.asarray(truth, dtype=object)
    out = np.zeros((p.size, t.size))
    if p.size == 0 or t.size == 0:
        return out
    i, j = shapely.STRtree(t).query(p, predicate="intersects")
    inter = shapely.area(shapely.intersection(p[i], t[j]))
    union = shapely.area(p[i]) + shapely.area(t[j]) - inter
    out[i, j] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def detection_scores(
    pred: Sequence[shapely.Geometry], truth: Sequence[shapely.Geometry], iou: float = 0.5
) -> dict[str, float | int]:
    """Precision, recall and F1 of a one-to-one matching of predictions to reference crowns.

    The matching maximises the summed IoU (``scipy.optimize.linear_sum_assignment``); a matched pair counts
    as a true positive when its IoU is at least ``iou``. ``precision = TP / len(pred)``,
    ``recall = TP / len(truth)``, ``F1 = 2 TP / (len(pred) + len(truth))``.
    """
    m = iou_matrix(pred, truth)
    tp = 0
    if m.size:
        r, c = linear_sum_assignment(m, maximize=True)
        tp = int(np.count_nonzero(m[r, c] >= iou))
    n_pred, n_truth = len(pred), len(truth)
    return {
        "tp": tp,
        "n_pred": n_pred,
        "n_truth": n_truth,
        "precision": tp / n_pred if n_pred else 0.0,
        "recall": tp / n_truth if n_truth else 0.0,
        "f1": 2 * tp / (n_pred + n_truth) if n_pred + n_truth else 0.0,
    }
