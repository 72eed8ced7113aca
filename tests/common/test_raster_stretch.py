"""The lookup-table stretch of integer bands gives exactly the float32 stretch."""

from __future__ import annotations

import numpy as np
import pytest

from crownsam.common.raster import apply_stretch, stretch_table, stretch_values


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int8"])
def test_table_stretch_equals_the_float_stretch(dtype: str) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    data = rng.integers(info.min, int(info.max) + 1, size=(3, 64, 80), dtype=np.int64).astype(dtype)
    data[:, 0, :4] = [info.min, info.max, 0, 1]  # extremes and both sides of zero
    stretch = [(float(info.min) / 3 + 0.4, float(info.max) / 2 + 0.3), (5.5, 9.25), (-2.0, 200.7)]
    assert stretch_table(np.dtype(dtype).str, *stretch[0]) is not None
    got = apply_stretch(data, stretch)
    want = np.stack([stretch_values(data[i], lo, hi) for i, (lo, hi) in enumerate(stretch)], axis=-1)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 3  # not trivially all 0 or 255


def test_float_and_wide_integer_bands_use_the_float_stretch() -> None:
    assert stretch_table(np.dtype("float32").str, 0.0, 1.0) is None
    assert stretch_table(np.dtype("int32").str, 0.0, 1.0) is None
    data = np.array([[[0.0, 0.5, 1.0, 2.0]]], dtype=np.float32)
    np.testing.assert_array_equal(apply_stretch(data, [(0.0, 1.0)])[0, :, 0], [0, 128, 255, 255])


def test_the_check_catches_an_off_by_one_table() -> None:
    """A table indexed one value off (the bug a signed offset would make) differs from the stretch."""
    data = np.arange(0, 4000, 7, dtype=np.uint16).reshape(1, 1, -1)
    table = stretch_table(np.dtype("uint16").str, 100.0, 3000.0)
    assert table is not None
    shifted = table[np.minimum(data[0] + 1, 65535)]
    assert not np.array_equal(shifted, stretch_values(data[0], 100.0, 3000.0))
