"""The exclusive rule on small arrays: highest logit wins, ties to the earlier (lower segment_id) claim."""

import numpy as np

from crownsam.pseudolabel.exclusive import contested_regions, resolve_claims


def test_highest_logit_wins_ties_go_to_the_earlier_claim() -> None:
    a = np.ones((2, 3), dtype=bool)  # region (0, 0, 2, 3)
    b = np.ones((2, 2), dtype=bool)  # region (0, 1, 2, 3): shares columns 1 and 2 with a
    va = np.array([[5.0, 1.0, 2.0], [5.0, 1.0, 2.0]], dtype=np.float32)
    vb = np.array([[3.0, 2.0], [3.0, 2.0]], dtype=np.float32)
    won = resolve_claims([a, b], [va, vb], [(0, 0, 2, 3), (0, 1, 2, 3)], (2, 3))
    assert won[0].tolist() == [[True, False, True]] * 2  # col 1: 3 > 1 (b); col 2: 2 == 2, a is earlier
    assert won[1].tolist() == [[True, False]] * 2
    # a coarse fallback (one value, -inf) loses to any mask, and keeps what nobody else claims
    coarse = resolve_claims([a, b], [-np.inf, vb], [(0, 0, 2, 3), (0, 1, 2, 3)], (2, 3))
    assert coarse[0].tolist() == [[True, False, False]] * 2
    # two coarse claims: the earlier keeps the shared pixels
    both = resolve_claims([a, b], [-np.inf, -np.inf], [(0, 0, 2, 3), (0, 1, 2, 3)], (2, 3))
    assert both[0].all() and not both[1].any()


def test_contested_regions_are_disjoint_and_cover_the_input() -> None:
    rects = [(0, 0, 10, 10), (5, 5, 12, 12), (20, 20, 25, 25), (11, 0, 13, 3), (24, 24, 30, 30)]
    out = contested_regions(rects)
    assert out == [(0, 0, 13, 12), (20, 20, 30, 30)]
    assert contested_regions(list(reversed(rects))) == out
