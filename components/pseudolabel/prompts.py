"""Prompts of one window: boxes and treetop points per segment, negative points for calibration, and the
batches the decoder sees.

A batch only holds prompts with the same number of points, so no prompt is padded and a mask never
depends on which other prompts share its decoder call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crownsam.pseudolabel.predictor import NEGATIVE, POSITIVE, PromptBatch


def uses_box(kind: str) -> bool:
    return kind in ("box", "box+point")


def uses_point(kind: str) -> bool:
    return kind in ("point", "box+point")


def negatives_from_pairs(pairs: Sequence[tuple[int, int]], n: int) -> list[list[int]]:
    """For each of ``n`` prompts, the (sorted) prompts whose masks overlap its mask: their positive points
    become its negative points (PointSAM's negative prompt calibration)."""
    out: list[set[int]] = [set() for _ in range(n)]
    for i, j in pairs:
        out[i].add(j)
        out[j].add(i)
    return [sorted(s) for s in out]


def point_sets(
    kind: str, points: np.ndarray | None, idx: Sequence[int], negatives: Sequence[Sequence[int]] | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Points (k, 2) and labels (k,) of each prompt in ``idx``: its own treetop (label 1) when ``kind``
    uses points, then the treetops of ``negatives[i]`` (label 0), leaving out any equal to its own."""
    out = []
    for i in idx:
        coords: list[np.ndarray] = []
        labels: list[int] = []
        if uses_point(kind):
            assert points is not None
            coords.append(points[i])
            labels.append(POSITIVE)
        for j in negatives[i] if negatives is not None else ():
            assert points is not None
            if np.array_equal(points[j], points[i]):
                continue
            coords.append(points[j])
            labels.append(NEGATIVE)
        out.append((np.asarray(coords, dtype=np.float64).reshape(-1, 2), np.asarray(labels, dtype=np.int64)))
    return out


def batches(
    kind: str,
    boxes: np.ndarray,
    points: np.ndarray | None,
    idx: Sequence[int],
    batch_size: int,
    negatives: Sequence[Sequence[int]] | None = None,
) -> list[tuple[list[int], PromptBatch]]:
    """Decoder batches for prompts ``idx``: grouped by number of points (in order of that number, then of
    index), at most ``batch_size`` per batch."""
    sets = dict(zip(idx, point_sets(kind, points, idx, negatives), strict=True))
    by_count: dict[int, list[int]] = {}
    for i in idx:
        by_count.setdefault(len(sets[i][1]), []).append(i)
    out = []
    for count in sorted(by_count):
        members = by_count[count]
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            b = np.asarray(boxes[chunk], dtype=np.float64) if uses_box(kind) else None
            if count:
                pts = np.stack([sets[i][0] for i in chunk])
                lab = np.stack([sets[i][1] for i in chunk])
                out.append((chunk, PromptBatch(boxes=b, points=pts, labels=lab)))
            else:
                out.append((chunk, PromptBatch(boxes=b)))
    return out
