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


@pytest.mark.parametrize("sizes", [(256, 1024), (256, 700), (64, 64), (300, 1024)])
def test_support_is_the_interpolation_matrix_extent(sizes: tuple[int, int]) -> None:
    """``support`` (from the two taps) equals the input columns the full interpolation matrix touches."""
    from crownsam.pseudolabel.masks import _interp_matrix, support

    in_size, out_size = sizes
    for lo, hi in [
        (0, 1),
        (0, out_size),
        (5, 17),
        (out_size - 3, out_size),
        (out_size // 2, min(out_size, out_size // 2 + 40)),
    ]:
        _, first, last = _interp_matrix(lo, hi, in_size, out_size)
        assert support(lo, hi, in_size, out_size) == (first, last), (lo, hi)


def _gdal_polygon(mask: np.ndarray, t: Affine) -> shapely.Polygon:
    """GDAL's polygonize of a one-component mask: the reference for :func:`mask_to_polygon`."""
    import rasterio.features
    import shapely.geometry

    parts = [
        shapely.geometry.shape(g)
        for g, v in rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=t)
        if v == 1
    ]
    assert len(parts) == 1
    return parts[0]


def _random_components(n: int, seed: int) -> list[np.ndarray]:
    """Largest components of random masks: ragged outlines, holes, and pixels meeting only diagonally
    (inside holes and on the outline), each padded by 0-2 empty rows/columns."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        lab, k = ndimage.label(rng.random((h, w)) < rng.uniform(0.3, 0.9))
        if not k:
            continue
        m = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
        out.append(np.pad(m, [(int(a), int(b)) for a, b in rng.integers(0, 3, (2, 2))]))
    return out


def test_mask_to_polygon_is_gdals_polygon_and_valid() -> None:
    """Our tracer gives the point set of GDAL's polygonize (the reference) on 400 random components, as
    a valid polygon (GEOS validity: rings that would touch themselves at a diagonal are split)."""
    t = Affine(0.025, 0, 385000.0, 0, -0.025, 6672000.0) @ Affine.translation(37, 11)
    pinches = 0
    for m in _random_components(400, seed=5):
        got, want = mask_to_polygon(m, t), _gdal_polygon(m, t)
        assert got.is_valid, m.astype(int)
        assert got.equals(want), m.astype(int)
        assert got.area == pytest.approx(m.sum() * 0.025**2, rel=1e-6)  # coordinates near 4e5, 6.7e6
        diag = m[:-1, :-1] & m[1:, 1:] & ~m[:-1, 1:] & ~m[1:, :-1]
        pinches += int(diag.any() or (m[:-1, 1:] & m[1:, :-1] & ~m[:-1, :-1] & ~m[1:, 1:]).any())
    assert pinches > 50  # the random masks do exercise pixels meeting only at a corner


def test_mask_to_polygon_splits_a_ring_at_a_diagonal() -> None:
    """A ring of pixels closed only by a diagonal: the outline touches itself at that corner, so the
    polygon is a shell plus a hole that touches it there (GEOS-valid), not one self-touching ring."""
    m = np.array([[0, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]], dtype=bool)
    poly = mask_to_polygon(m, Affine.identity())
    assert poly.is_valid and poly.area == m.sum() and len(poly.interiors) == 1
    assert shapely.Point(1, 1).intersects(poly.interiors[0]) and shapely.Point(1, 1).intersects(poly.exterior)
    assert poly.equals(_gdal_polygon(m, Affine.identity()))


def test_region_mask_equals_the_full_upsampling() -> None:
    """The mask computed only where logits can be positive equals the whole region's upsampling > 0, at
    SAM2's resolution and at full resolution, and for a patch with no positive cell."""
    from crownsam.pseudolabel.masks import region_mask

    rng = np.random.default_rng(4)
    low = -1.0 - np.abs(rng.normal(0.0, 1.0, (256, 256))).astype(np.float32)
    low[100:130, 60:90] += rng.uniform(0.0, 4.0, (30, 30)).astype(np.float32)  # a ragged blob
    for region in [(360, 200, 560, 420), (0, 0, 1024, 1024), (1000, 1010, 1024, 1024)]:
        patch = LogitPatch.from_map(low, (1024, 1024), region)
        mask = region_mask(patch, region)
        assert mask.shape == (region[2] - region[0], region[3] - region[1])
        np.testing.assert_array_equal(mask, patch.upsample(region) > 0)
    none = LogitPatch.from_map(np.full((256, 256), -2.0, np.float32), (1024, 1024), (10, 10, 90, 90))
    assert not region_mask(none, (10, 10, 90, 90)).any()
    data = rng.normal(0.0, 1.0, (40, 50)).astype(np.float32)
    ident = LogitPatch(data, 10, 20, (100, 100), (100, 100))
    np.testing.assert_array_equal(region_mask(ident, (12, 25, 45, 60)), data[2:35, 5:40] > 0)


def test_largest_component_is_that_of_the_whole_mask() -> None:
    """Labelling only the mask's bounding box gives the same component (ties: first in row-major order)
    as labelling the whole array."""
    from scipy import ndimage

    for m in _random_components(100, seed=6):
        big = np.pad(m, ((3, 5), (7, 2))) | np.pad(np.zeros_like(m), ((3, 5), (7, 2)))
        big[0, 0] = True  # a second, one-pixel component outside the first's box
        labels, _ = ndimage.label(big)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        np.testing.assert_array_equal(largest_component(big), labels == int(np.argmax(sizes)))


def test_largest_component_of_masks_with_one_run_per_row() -> None:
    """Masks with one run of pixels per row are returned as they are only when each run touches the next
    row's (one 4-connected component); rows whose runs only meet diagonally, or do not meet, are labelled
    and give the labelled answer."""
    from scipy import ndimage

    rng = np.random.default_rng(9)
    as_is = labelled = 0
    for _ in range(300):
        h = int(rng.integers(1, 25))
        first = np.cumsum(rng.integers(-3, 4, h)) + 20
        end = first + rng.integers(1, 8, h)
        m = np.zeros((h + 2, 60), bool)
        for r in range(h):
            m[r + 1, first[r] : end[r]] = True
        labels, _ = ndimage.label(m)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        want = labels == int(np.argmax(sizes))
        got = largest_component(m)
        np.testing.assert_array_equal(got, want)
        if got is m:
            as_is += 1
            assert want.sum() == m.sum()
        else:
            labelled += 1
    assert as_is > 30 and labelled > 30
    stairs = np.eye(5, dtype=bool)  # one run per row, meeting only diagonally: five components
    assert largest_component(stairs).sum() == 1


def test_taps_of_any_rows_are_slices_of_the_whole_axis() -> None:
    """The cached taps (slices of the whole axis's, read-only) equal the taps computed for those rows
    alone, inside the axis and beyond it."""
    from crownsam.pseudolabel.masks import _taps, _taps_of

    rng = np.random.default_rng(11)
    for in_size, out_size in [(256, 1024), (256, 700), (64, 64), (300, 1024)]:
        for lo, hi in [(0, out_size), (out_size, out_size), (-3, 5), (out_size - 2, out_size + 4)] + [
            tuple(sorted(int(v) for v in rng.integers(0, out_size + 1, 2))) for _ in range(20)
        ]:
            for got, want in zip(
                _taps(lo, hi, in_size, out_size), _taps_of(lo, hi, in_size, out_size), strict=True
            ):
                np.testing.assert_array_equal(got, want)
                assert got.dtype == want.dtype
    i0, _, w = _taps(0, 10, 256, 1024)
    assert not i0.flags.writeable and not w.flags.writeable


def test_region_logits_are_the_upsampled_logits() -> None:
    """The logits that ``region_mask_and_logits`` keeps equal the patch's own upsampling bit for bit,
    inside what it interpolated and (from the patch) outside it; its mask is ``region_mask``'s."""
    from crownsam.pseudolabel.masks import region_mask, region_mask_and_logits

    rng = np.random.default_rng(12)
    low = -1.0 - np.abs(rng.normal(0.0, 1.0, (256, 256))).astype(np.float32)
    low[100:130, 60:90] += rng.uniform(0.0, 4.0, (30, 30)).astype(np.float32)
    ident = LogitPatch(rng.normal(0.0, 1.0, (40, 50)).astype(np.float32), 10, 20, (100, 100), (100, 100))
    cases = [
        (LogitPatch.from_map(low, (1024, 1024), r), r) for r in [(360, 200, 560, 420), (0, 0, 1024, 1024)]
    ]
    for patch, region in [*cases, (ident, (12, 25, 45, 60))]:
        mask, logits = region_mask_and_logits(patch, region)
        np.testing.assert_array_equal(mask, region_mask(patch, region))
        h, w = logits.data.shape
        assert h and w and not logits.data.flags.writeable
        inside = (logits.r0, logits.c0, logits.r0 + h, logits.c0 + w)
        r0, c0, r1, c1 = inside
        for sub in [inside, (r0 + 1, c0 + 2, r1 - 3, c1 - 1), (r0, c0, r0 + 1, c0 + 1)]:
            np.testing.assert_array_equal(logits.upsample(sub), patch.upsample(sub))
        beyond = (max(region[0], r0 - 2), c0, r1, c1)  # reaches past what was interpolated: the patch's
        np.testing.assert_array_equal(logits.upsample(beyond), patch.upsample(beyond))
        # every mask pixel lies in what was interpolated
        np.testing.assert_array_equal(
            mask[r0 - region[0] : r1 - region[0], c0 - region[1] : c1 - region[1]].sum(), mask.sum()
        )


def test_largest_component_box_is_the_components_bbox() -> None:
    """``largest_component_box`` gives ``largest_component`` and that component's bbox, whether the mask
    is one component or is labelled."""
    from crownsam.pseudolabel.masks import bbox, largest_component_box

    labelled = 0
    for m in _random_components(150, seed=13):
        big = np.pad(m, ((3, 5), (7, 2)))
        big[0, 0] = True  # a second, one-pixel component
        for mask in (m, big):
            comp, box = largest_component_box(mask)
            np.testing.assert_array_equal(comp, largest_component(mask))
            assert box == bbox(comp)
            labelled += comp is not mask
    assert labelled >= 150
    assert largest_component_box(np.zeros((3, 4), bool)) is None


def test_staircase_outline_is_the_traced_one() -> None:
    """Masks with one run per row sharing a column with the next are vectorised from their runs: the
    same vertices, in the same order, as the general tracer (and GDAL's point set)."""
    from crownsam.pseudolabel.masks import _padded, _runs, _traced_polygon

    rng = np.random.default_rng(14)
    t = Affine(0.025, 0, 385000.0, 0, -0.025, 6672000.0)
    fast = 0
    for _ in range(400):
        h = int(rng.integers(1, 30))
        first = np.cumsum(rng.integers(-3, 4, h)) + 20
        end = np.maximum(first + rng.integers(1, 9, h), np.r_[first[1:], 0] + 1)
        m = np.zeros((h + 3, 70), bool)
        for r in range(h):
            m[r + 2, first[r] : end[r]] = True
        if largest_component(m) is not m:  # rows that do not touch: not this case
            continue
        fast += 1
        r0, c0 = 2, int(first.min())
        p = _padded(m[r0 : r0 + h, c0 : int(end.max())])
        want = _traced_polygon(p, _runs(p[1:-1]), t, r0, c0)
        got = mask_to_polygon(m, t)
        np.testing.assert_array_equal(shapely.get_coordinates(got), shapely.get_coordinates(want))
        assert got.equals(_gdal_polygon(m, t))
    assert fast > 100
