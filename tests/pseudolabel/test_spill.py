"""A run's claims on local disk (``crownsam.pseudolabel.spill``): read back as they were added."""

from __future__ import annotations

import numpy as np

from crownsam.pseudolabel.exclusive import Claim
from crownsam.pseudolabel.masks import LogitPatch
from crownsam.pseudolabel.spill import SpilledClaims


def claim(sid: int, window: int, rng: np.random.Generator, patch: bool = True) -> Claim:
    data = rng.normal(size=(5 + sid % 4, 7)).astype(np.float32)
    p = LogitPatch(data, sid % 3, 2, (256, 256), (1024, 1024)) if patch else None
    return Claim(sid, 512 * window, 0, (1, 2, 9, 11), p)


def same(a: Claim, b: Claim) -> bool:
    return a.to_dict() == b.to_dict()


def test_claims_come_back_as_added_window_by_window() -> None:
    rng = np.random.default_rng(0)
    windows = [[claim(10 * w + k, w, rng, patch=k != 1) for k in range(4)] for w in range(6)]
    spill = SpilledClaims(keep=2)
    for w in windows:
        spill.add(w)
    spill.add([])  # a window without labels adds nothing
    want = {c.segment_id: c for w in windows for c in w}
    assert len(spill) == len(want) == 24 and set(spill) == set(want)
    for sid in [53, 0, 21, 52, 3, 40]:  # across windows, so that parts are dropped and read again
        assert same(spill[sid], want[sid])
        assert spill.windows_held <= 2
    p0, w0 = spill[0].patch, want[0].patch
    assert spill[1].patch is None and p0 is not None and w0 is not None and np.array_equal(p0.data, w0.data)
    got = list(spill.in_file_order())
    assert [s for s, _ in got] == [c.segment_id for w in windows for c in w]
    assert all(same(c, want[s]) for s, c in got)


def test_a_later_claim_of_a_segment_replaces_the_earlier_one() -> None:
    rng = np.random.default_rng(1)
    first, later = claim(7, 0, rng), claim(7, 3, rng)
    spill = SpilledClaims()
    spill.add([first, claim(8, 0, rng)])
    spill.add([later])
    assert len(spill) == 2 and same(spill[7], later) and not same(spill[7], first)
    assert [s for s, _ in spill.in_file_order()] == [8, 7]  # each segment once, at its latest place
