"""The lookup-table stretch of integer bands gives exactly the float32 stretch."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_array

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


def test_rgb_window_is_the_stretch_as_band_planes(tmp_path) -> None:
    """``read_rgb_window`` gives ``apply_stretch``'s values (nodata -> 0, zero padding) as an (H, W, 3)
    view of contiguous band planes: the layout SAM2's ToTensor turns into its tensor without a copy."""
    import rasterio
    import torch
    from rasterio.windows import Window
    from torchvision.transforms.functional import to_tensor

    from crownsam.common.raster import read_rgb_window

    rng = np.random.default_rng(1)
    data = rng.integers(1, 4000, (4, 50, 60), dtype=np.uint16)
    data[:, 3:7, 15:19] = 0  # nodata
    path = write_array(tmp_path / "o.tif", data, nodata=0)
    stretch = [(100.0, 3000.0), (50.0, 2500.0), (0.0, 4000.0)]
    with rasterio.open(path) as src:
        win = Window(10, 0, 50, 40)
        rgb = read_rgb_window(src, win, (3, 2, 1), stretch, pad_to=64)
        valid = src.read_masks(3, window=win) > 0
    want = apply_stretch(data[[2, 1, 0], 0:40, 10:60], stretch, valid)
    assert rgb.shape == (64, 64, 3) and not rgb[40:].any() and not rgb[:, 50:].any()
    np.testing.assert_array_equal(rgb[:40, :50], want)
    assert (rgb[:40, :50][~valid] == 0).all() and (~valid).sum() == 16
    assert rgb.transpose(2, 0, 1).flags.c_contiguous  # band planes
    tensor = to_tensor(rgb)
    assert tensor.shape == (3, 64, 64) and torch.equal(tensor, to_tensor(np.ascontiguousarray(rgb)))


@pytest.mark.parametrize(
    "dtype, nodata, extra",
    [("uint16", 0, {}), ("int16", -9999, {}), ("float32", -1.0, {}), ("uint8", None, {})],
)
def test_valid_pixels_are_gdals_mask(tmp_path, dtype: str, nodata, extra) -> None:
    """The validity mask computed from the values (integer bands, nodata only) equals GDAL's own mask;
    float bands read GDAL's mask; no nodata value: no mask."""
    import rasterio
    from rasterio.windows import Window

    from crownsam.common.raster import valid_pixels

    rng = np.random.default_rng(2)
    data = (rng.random((3, 30, 40)) * 100).astype(dtype)
    if nodata is not None:
        data[0, 5:9, 2:30] = nodata
    path = write_array(tmp_path / "v.tif", data, nodata=nodata, **extra)
    with rasterio.open(path) as src:
        win = Window(1, 2, 35, 25)
        got = valid_pixels(src, 1, src.read(1, window=win), win)
        if nodata is None:
            assert got is None
        else:
            want = src.read_masks(1, window=win) > 0
            np.testing.assert_array_equal(got, want)
            assert 0 < want.sum() < want.size


@pytest.mark.parametrize("kind", ["alpha", "internal_mask"])
def test_valid_pixels_honour_a_mask_without_nodata(tmp_path, kind: str) -> None:
    """A raster without a nodata value but with an alpha band or an internal mask (drone orthophotos
    often come as RGBA): the mask is GDAL's, not "every pixel valid", and a window as read stretches
    the masked pixels to 0. (Until 2026-11-30 no nodata value meant no mask here.)"""
    import rasterio
    from rasterio.windows import Window

    from crownsam.common.raster import read_band_window, valid_pixels

    rng = np.random.default_rng(3)
    data = (rng.random((3, 30, 40)) * 200 + 20).astype("uint8")
    hidden = np.ones((30, 40), dtype=bool)
    hidden[4:11, 3:25] = False
    if kind == "alpha":
        rgba = np.concatenate([data, np.where(hidden, 255, 0).astype("uint8")[None]])
        path = write_array(tmp_path / "a.tif", rgba, photometric="RGB", alpha="YES")
    else:
        path = write_array(tmp_path / "m.tif", data, mask=np.where(hidden, 255, 0).astype("uint8"))
    with rasterio.open(path) as src:
        assert src.nodata is None
        win = Window(1, 2, 35, 25)
        got = valid_pixels(src, 1, src.read(1, window=win), win)
        assert got is not None
        np.testing.assert_array_equal(got, hidden[2:27, 1:36])
        rgb = read_band_window(src, win, (1, 2, 3), [(0.0, 255.0)] * 3).rgb()
    assert not rgb[~hidden[2:27, 1:36]].any() and rgb[hidden[2:27, 1:36]].any()


@pytest.mark.parametrize(
    "dtype, nodata", [("uint16", 0), ("int16", -9999), ("uint8", None), ("float32", -1.0)]
)
def test_band_window_is_read_rgb_window_before_the_stretch(tmp_path, dtype: str, nodata) -> None:
    """A window as read (``read_band_window``) knows its padded shape and stretches to exactly what
    ``read_rgb_window`` gives; only 8- and 16-bit integer bands have lookup tables (a device can apply)."""
    import rasterio
    from rasterio.windows import Window

    from crownsam.common.raster import read_band_window, read_rgb_window

    rng = np.random.default_rng(2)
    data = rng.integers(-200, 250, (3, 40, 50)).astype(dtype)
    if nodata is not None:
        data[:, 5:9, 10:14] = nodata
    path = write_array(tmp_path / "o.tif", data, nodata=nodata)
    stretch = [(-100.0, 200.0), (0.0, 240.0), (-50.0, 100.0)]
    with rasterio.open(path) as src:
        win = Window(5, 0, 45, 40)
        raw = read_band_window(src, win, (3, 2, 1), stretch, pad_to=48)
        rgb = read_rgb_window(src, win, (3, 2, 1), stretch, pad_to=48)
    assert raw.shape == rgb.shape == (48, 48, 3) and raw.data.shape == (3, 40, 45)
    np.testing.assert_array_equal(raw.rgb(), rgb)
    if nodata is None:
        assert raw.validity() is None
    elif dtype == "float32":  # GDAL's mask, read
        assert raw.valid is not None and raw.nodata is None
    else:  # "not the nodata value": left to whoever stretches, from the values
        assert raw.valid is None and raw.nodata == nodata and (~raw.validity()).sum() >= 16
    tables = raw.tables()
    assert (tables is None) == (dtype == "float32")
    if tables is not None:  # the tables are the stretch: looked up by the value's unsigned bits
        bits = raw.data.view(f"u{raw.data.dtype.itemsize}")
        looked_up = np.stack([t[b] for t, b in zip(tables, bits, strict=True)])
        if raw.validity() is not None:
            looked_up *= raw.validity()
        np.testing.assert_array_equal(looked_up.transpose(1, 2, 0), rgb[:40, :45])
