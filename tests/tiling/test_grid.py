"""Window grid arithmetic: offsets, ownership, and the one-window-per-centroid property."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crownsam.tiling.grid import owner, ownership_bounds, window_offsets


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (4096, [0, 512, 1024, 1536, 2048, 2560, 3072]),
        (1024, [0]),
        (700, [0]),
        (1025, [0, 1]),
        (3000, [0, 512, 1024, 1536, 1976]),
        (1536, [0, 512]),
    ],
)
def test_window_offsets(length: int, expected: list[int]) -> None:
    assert window_offsets(length) == expected


def test_regular_windows_own_their_central_square() -> None:
    offs = window_offsets(4096)
    b = ownership_bounds(offs, 4096)
    # between regular windows the boundary is the end of the central 512 square: o + 768
    assert list(b) == [o + 768 for o in offs[:-1]]
    assert owner(np.array([0.0, 767.99, 768.0, 1279.99, 1280.0, 4095.9]), offs, 4096).tolist() == [
        0, 0, 1, 1, 2, 6
    ]  # fmt: skip


def test_edge_aligned_last_window_splits_overlap_evenly() -> None:
    offs = window_offsets(3000)  # ..., 1536, 1976
    b = ownership_bounds(offs, 3000)
    assert b[-1] == pytest.approx((1536 + 1976 + 1024) / 2)


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 6000),
    size=st.sampled_from([64, 256, 1024]),
    data=st.data(),
)
def test_every_coordinate_has_exactly_one_owner_inside_its_window(length: int, size: int, data) -> None:
    stride = data.draw(st.sampled_from([s for s in (size // 4, size // 2, size) if s > 0]))
    offs = window_offsets(length, size, stride)
    coords = np.array(data.draw(st.lists(st.floats(0, length, exclude_max=True), min_size=1, max_size=50)))
    own = owner(coords, offs, length, size)
    assert ((own >= 0) & (own < len(offs))).all()
    starts = np.asarray(offs)[own]
    # the owning window contains the coordinate...
    assert (coords >= starts).all() and (coords < starts + min(size, length)).all()
    # ...and ownership ranges tile the axis: each coordinate lies in exactly one range
    edges = np.concatenate([[-np.inf], ownership_bounds(offs, length, size), [np.inf]])
    hits = (coords[:, None] >= edges[None, :-1]) & (coords[:, None] < edges[None, 1:])
    assert (hits.sum(axis=1) == 1).all()
    # windows cover the axis and the last one ends at the raster edge (or the raster fits in one)
    assert offs[0] == 0 and (offs[-1] + size == length or length <= size)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1025, 20000))
def test_interior_owners_keep_a_quarter_window_margin(length: int) -> None:
    """Away from the raster edge, an owned centroid sits >= (size - stride) / 2 = 256 px from the window's
    edges (also with an edge-aligned last window), so every crown is seen with context around it."""
    offs = window_offsets(length)
    coords = np.linspace(0, length - 1e-6, 2000)
    own = owner(coords, offs, length)
    local = coords - np.asarray(offs)[own]
    assert (local[own > 0] >= 256).all()
    assert (local[own < len(offs) - 1] < 768).all()
