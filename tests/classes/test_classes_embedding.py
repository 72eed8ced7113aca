"""Pooling a SAM2 embedding inside a crown: the pure function against torch's own bilinear upsampling, and
its placement in real windows of a multi-window raster (a stand-in encoder whose answer is known)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio import features

from crownsam.classes.bands import band_roles
from crownsam.classes.embedding import interpolation_matrix, pool_embedding
from crownsam.classes.features import compute_features, group_crowns, spectral_spec
from crownsam.common.raster import compute_stretch
from crownsam.tiling.plan import pixel_geometries


def upsampled_mean(f: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """ALPS' way: upsample the whole map with torch (bilinear, align_corners=False), average the mask."""
    up = torch.nn.functional.interpolate(
        torch.from_numpy(f)[None], size=mask.shape, mode="bilinear", align_corners=False
    )[0].numpy()
    return up[:, mask].mean(axis=1)


@pytest.mark.parametrize(("h", "w", "image"), [(64, 64, (1024, 1024)), (16, 12, (200, 170)), (8, 8, (8, 8))])
def test_pool_equals_torch_upsampling_then_mean(h: int, w: int, image: tuple[int, int]) -> None:
    rng = np.random.default_rng(h)
    f = rng.normal(size=(5, h, w)).astype(np.float32)
    mask = np.zeros(image, dtype=bool)
    r0, c0 = image[0] // 5, image[1] // 3
    mask[r0 : r0 + image[0] // 2, c0 : c0 + image[1] // 2] = True
    mask[r0 + 1, c0 + 1] = False  # a hole
    mask[0, 0] = True  # a pixel at the clamped border
    expected = upsampled_mean(f, mask)
    rows, cols = np.nonzero(mask)
    crop = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    got = pool_embedding(f, crop, (int(rows.min()), int(cols.min())), image)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # an off-by-one offset is caught
    shifted = pool_embedding(f, crop, (int(rows.min()) + 1, int(cols.min())), image)
    assert np.abs(shifted - expected).max() > 1e-4  # ten times the tolerance above


def test_pool_takes_torch_tensors_and_ignores_pixels_outside_the_image() -> None:
    f = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    mask = np.ones((40, 40), dtype=bool)
    inside = np.zeros((128, 128), dtype=bool)
    inside[100:128, 110:128] = True
    expected = upsampled_mean(f[0], inside)
    got = pool_embedding(torch.from_numpy(f), mask, (100, 110), (128, 128))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.isnan(pool_embedding(f, mask, (200, 0), (128, 128))).all()


def test_interpolation_rows_sum_to_one() -> None:
    m = interpolation_matrix(np.arange(1024), 1024, 64)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    assert (m >= 0).all() and ((m > 0).sum(axis=1) <= 2).all()


class RampEncoder:
    """Stand-in for SAM2's encoder with a known answer: a (2, 64, 64) map whose channels are the cell's
    row and column index. Bilinear upsampling of a ramp is the ramp, so inside the image the pooled
    channels are ``(mean row + 0.5) / 16 - 0.5`` and likewise for columns, in the encoder's window
    coordinates: a crown's mean pixel position. Records its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        assert rgb.shape == (1024, 1024, 3) and rgb.dtype == np.uint8
        self.calls += 1
        i, j = np.mgrid[0:64, 0:64].astype(np.float32)
        return np.stack([i, j])


def test_embeddings_pooled_in_the_right_window_at_the_right_place(species_scene) -> None:
    """On a 2 x 2 window raster, each crown's pooled ramp gives back its mean pixel row and column in its
    own window, checked against a crown raster burnt independently over the whole orthophoto."""
    truth = gpd.read_file(species_scene.truth)
    encoder = RampEncoder()
    with rasterio.open(species_scene.ortho) as src:
        spec = spectral_spec(band_roles("o", src.descriptions), (), (), 5)
        pix = pixel_geometries(truth, src.transform)
        groups, _ = group_crowns(pix, src.width, src.height, with_window=True)
        feats = compute_features(
            src, pix, spec, encoder=encoder, stretch=compute_stretch(species_scene.ortho, (3, 2, 1))
        )
        ids = features.rasterize(
            zip(truth.geometry, truth.index + 1, strict=True), out_shape=src.shape, transform=src.transform
        )
        valid = src.dataset_mask() > 0
    assert len(groups) == 4 and encoder.calls == feats.encoder_passes == feats.windows == 4
    checked = {}
    for g in groups:
        for i in g.members:
            rows, cols = np.nonzero((ids == i + 1) & valid)
            rows, cols = rows - g.window.row_off, cols - g.window.col_off
            if rows.min() < 8 or cols.min() < 8 or rows.max() > 1015 or cols.max() > 1015:
                continue  # the ramp is clamped within half a cell of the image edge
            got_row = (feats.embedding[i, 0] + 0.5) * 16 - 0.5
            got_col = (feats.embedding[i, 1] + 0.5) * 16 - 0.5
            assert got_row == pytest.approx(rows.mean(), abs=1e-2)
            assert got_col == pytest.approx(cols.mean(), abs=1e-2)
            checked[g.window.row_off, g.window.col_off] = (
                checked.get((g.window.row_off, g.window.col_off), 0) + 1
            )
    assert len(checked) == 4 and sum(checked.values()) > 0.6 * len(truth)  # every window, most crowns
