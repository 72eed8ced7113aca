"""Pure mask helpers: neighbourhoods, exact crop upsampling, largest component, vectorising."""

import numpy as np
import pytest
import shapely
import torch
from rasterio import Affine

from crownsam.pseudolabel.masks import (
    LogitPatch,
    clip_boxes,
    largest_component,
    mask_to_polygon,
    neighbourhoods,
    snap,
    touches_border,
    upsample_crop,
)


def test_clip_boxes() -> None:
    out = clip_boxes(np.array([[-5, 10, 50, 2000], [3, 4, 5, 6]]), 1024, 1000)
    assert out.tolist() == [[0, 10, 50, 1000], [3, 4, 5, 6]]


def test_neighbourhoods_grow_and_clip() -> None:
    r = neighbourhoods(np.array([[100.0, 200.0, 300.0, 260.0], [0.0, 0.0, 10.0, 10.0]]), 1024, 1024)
    # margin = max(16, 0.25 * 200) = 50
    assert r.tolist() == [[150, 50, 310, 350], [0, 0, 26, 26]]


@pytest.mark.parametrize(
    "region", [(0, 0, 1024, 1024), (100, 37, 333, 401), (1000, 990, 1024, 1024), (5, 0, 9, 3)]
)
def test_upsample_crop_equals_full_interpolation(region) -> None:
    g = torch.Generator().manual_seed(0)
    low = torch.randn(256, 256, generator=g)
    full = torch.nn.functional.interpolate(
        low[None, None], (1024, 1024), mode="bilinear", align_corners=False
    )[0, 0]
    r0, c0, r1, c1 = region
    crop = upsample_crop(low, (1024, 1024), region)
    assert crop.shape == (r1 - r0, c1 - c0)
    assert torch.allclose(crop, full[r0:r1, c0:c1], atol=1e-5)


def test_upsample_crop_non_square_target() -> None:
    low = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))
    full = torch.nn.functional.interpolate(
        low[None, None], (700, 1024), mode="bilinear", align_corners=False
    )[0, 0]
    assert torch.allclose(
        upsample_crop(low, (700, 1024), (650, 10, 700, 90)), full[650:700, 10:90], atol=1e-4
    )


def test_largest_component_uses_4_connectivity() -> None:
    m = np.zeros((10, 10), bool)
    m[1:4, 1:4] = True  # 9 px
    m[4, 4] = True  # diagonal neighbour: a separate 4-connected component
    m[6:9, 5:10] = True  # 15 px
    lcc = largest_component(m)
    assert lcc.sum() == 15 and lcc[7, 7] and not lcc[2, 2]
    assert largest_component(np.zeros((4, 4), bool)) is None


def test_mask_to_polygon_georeferences_pixel_edges() -> None:
    m = np.zeros((6, 8), bool)
    m[2:5, 3:7] = True
    m[3, 4] = False  # a hole stays a hole
    t = Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0) @ Affine.translation(10, 20)
    poly = mask_to_polygon(m, t)
    assert poly.area == pytest.approx((12 - 1) * 0.25)
    assert poly.bounds == pytest.approx((1000 + 13 * 0.5, 2000 - 25 * 0.5, 1000 + 17 * 0.5, 2000 - 22 * 0.5))
    assert len(poly.interiors) == 1 and poly.is_valid
    assert shapely.get_num_geometries(poly) == 1


def test_mask_to_polygon_refuses_two_components() -> None:
    m = np.zeros((5, 5), bool)
    m[0, 0] = m[4, 4] = True
    with pytest.raises(ValueError, match="one connected component"):
        mask_to_polygon(m, Affine.identity())


def test_touches_border() -> None:
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    assert not touches_border(m)
    m[0, 3] = True
    assert touches_border(m)


def test_neighbourhoods_ignore_reprojection_noise() -> None:
    """Box edges a hair (1e-9 px) off a whole pixel, as after a round trip through degrees, give the same
    regions; plain floor/ceil would move them by a whole pixel (what this guards against)."""
    exact = np.array([[100.0, 200.0, 300.0, 260.0], [40.0, 16.0, 80.0, 48.0]])
    for noise in (1e-9, -1e-9):
        noisy = exact + noise
        assert neighbourhoods(noisy, 1024, 1024).tolist() == neighbourhoods(exact, 1024, 1024).tolist()
    m = 16.0  # margin of the second box
    assert np.floor(exact[1, 1] - 1e-9 - m) != np.floor(exact[1, 1] - m)  # the naive rounding moves
    assert snap(np.array([2.0 - 1e-9, 2.5, 3.0005])).tolist() == [2.0, 2.5, 3.0]  # 5e-4 px is snapped
    assert snap(np.array([3.002])).tolist() == [3.002]  # beyond SNAP_PX: a real sub-pixel position


@pytest.mark.parametrize("region", [(0, 0, 1024, 1024), (100, 37, 333, 401), (1000, 990, 1024, 1024)])
def test_logit_patch_upsamples_like_torch(region) -> None:
    """A patch keeps only the low-resolution cells its region needs, and gives the same numbers as
    upsampling the whole map; a region outside the patch is refused."""
    low = torch.randn(256, 256, generator=torch.Generator().manual_seed(2))
    full = torch.nn.functional.interpolate(
        low[None, None], (1024, 1024), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    patch = LogitPatch.from_map(low.numpy(), (1024, 1024), region)
    r0, c0, r1, c1 = region
    assert patch.data.size <= ((r1 - r0) // 4 + 3) * ((c1 - c0) // 4 + 3)
    np.testing.assert_allclose(patch.upsample(region), full[r0:r1, c0:c1], atol=1e-5)
    inner = (r0 + 5, c0 + 3, r0 + 20, c0 + 9)
    np.testing.assert_allclose(
        patch.crop(inner).upsample(inner), full[r0 + 5 : r0 + 20, c0 + 3 : c0 + 9], atol=1e-5
    )
    if r1 < 1024:
        with pytest.raises(ValueError, match="outside the logit patch"):
            patch.crop(inner).upsample((r0, c0, r1, c1))


def test_full_resolution_patch_is_the_identity() -> None:
    data = np.arange(60, dtype=np.float32).reshape(6, 10)
    patch = LogitPatch(data, 10, 20, (100, 100), (100, 100))
    np.testing.assert_array_equal(patch.upsample((11, 22, 15, 29)), data[1:5, 2:9])
