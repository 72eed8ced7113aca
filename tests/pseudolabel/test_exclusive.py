"""The exclusive rule on small arrays: highest logit wins, ties to the earlier (lower segment_id) claim."""

import numpy as np

from crownsam.pseudolabel.exclusive import contested_regions, resolve_claims
from crownsam.pseudolabel.masks import LogitPatch, RegionLogits, bbox, region_mask_and_logits
from crownsam.pseudolabel.overlap import mask_overlaps


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


def _resolve_brute_force(claims, values, regions, hw):
    """The rule on the whole frame, every claim compared (the reference for :func:`resolve_claims`)."""
    best = np.full(hw, -np.inf, dtype=np.float32)
    owner = np.full(hw, -1)
    for i, (claim, value, (r0, c0, r1, c1)) in enumerate(zip(claims, values, regions, strict=True)):
        b, o = best[r0:r1, c0:c1], owner[r0:r1, c0:c1]
        v = np.broadcast_to(np.asarray(value, dtype=np.float32), claim.shape)
        win = claim & ((o < 0) | (v > b))
        b[win], o[win] = v[win], i
    pairs = enumerate(zip(claims, regions, strict=True))
    return [claim & (owner[r0:r1, c0:c1] == i) for i, (claim, (r0, c0, r1, c1)) in pairs]


def test_grouped_resolution_equals_the_whole_frame_rule() -> None:
    """Claims compared in groups linked by shared pixels (the fast way) win exactly the pixels of the
    whole-frame rule, with ties between equal logits and coarse claims (-inf) among them; an uncontested
    claim comes back as the same array."""
    rng = np.random.default_rng(7)
    hw = (120, 140)
    contested = 0
    for _ in range(30):
        claims, values, regions = [], [], []
        for _ in range(int(rng.integers(2, 12))):
            r0, c0 = int(rng.integers(0, 100)), int(rng.integers(0, 120))
            r1, c1 = min(hw[0], r0 + int(rng.integers(3, 30))), min(hw[1], c0 + int(rng.integers(3, 30)))
            claims.append(rng.random((r1 - r0, c1 - c0)) < 0.7)
            regions.append((r0, c0, r1, c1))
            kind = rng.integers(0, 6)
            low = np.round(rng.normal(0, 1, (hw[0] // 4, hw[1] // 4)), 1).astype(np.float32)
            values.append(
                -np.inf
                if kind == 0
                else np.round(rng.normal(0, 1, (r1 - r0, c1 - c0)), 1).astype(np.float32)  # many ties
                if kind == 1
                else float(rng.integers(-2, 3))
                if kind == 2
                # logits to upsample where contested: at SAM2's resolution, and at full resolution
                else LogitPatch.from_map(low, hw, (r0, c0, r1, c1))
                if kind == 3
                else LogitPatch.from_map(
                    np.round(rng.normal(0, 1, hw), 1).astype(np.float32), hw, (r0, c0, r1, c1)
                )
                if kind == 4
                # the logits that computing the mask upsampled already (the rest from their patch)
                else region_mask_and_logits(LogitPatch.from_map(low, hw, (r0, c0, r1, c1)), (r0, c0, r1, c1))[
                    1
                ]
            )
        got = resolve_claims(claims, values, regions, hw)
        arrays = [
            v.upsample(r) if isinstance(v, LogitPatch | RegionLogits) else v
            for v, r in zip(values, regions, strict=True)
        ]
        want = _resolve_brute_force(claims, arrays, regions, hw)
        for g, w, c in zip(got, want, claims, strict=True):
            np.testing.assert_array_equal(g, w)
            if g is c:
                assert w.sum() == c.sum()
        # what the caller knows (boxes, some unknown; pairs) gives the same
        boxes = [bbox(c) if k % 2 else None for k, c in enumerate(claims)]
        pairs = mask_overlaps(claims, regions)[0]
        known = resolve_claims(claims, values, regions, hw, boxes=boxes, pairs=pairs)
        for g, k in zip(got, known, strict=True):
            np.testing.assert_array_equal(g, k)
        contested += bool(pairs)
    assert contested > 20


def test_inside_regions_equal_one_gdal_call_per_geometry() -> None:
    """Geometries burned together (boxes apart) give exactly the pixels of one call per geometry, for
    overlapping, touching and far-apart polygons, holes, and geometries cut by the frame."""
    import shapely

    from crownsam.pseudolabel.exclusive import inside_region, inside_regions
    from crownsam.pseudolabel.masks import neighbourhoods

    rng = np.random.default_rng(8)
    geoms = []
    for _ in range(60):
        x, y = rng.uniform(-20, 300, 2)
        g = shapely.Point(x, y).buffer(float(rng.uniform(2, 25)), quad_segs=int(rng.integers(2, 9)))
        if rng.random() < 0.3:
            g = g.difference(shapely.Point(x + 1.3, y - 0.7).buffer(float(rng.uniform(0.5, 3))))
        geoms.append(g)
    geoms.append(shapely.box(40.5, 40.5, 60.5, 60.5))  # edges through pixel centres, and a neighbour
    geoms.append(shapely.box(60.5, 40.5, 80.5, 60.5))  # sharing one of them
    geoms.append(None)
    b = np.array([g.bounds if g is not None else (0, 0, 0, 0) for g in geoms])
    b = np.clip(b, 0, 280)
    regions = [tuple(int(v) for v in r) for r in neighbourhoods(b, 280, 280)]
    got = inside_regions(geoms, regions)
    for g, r, m in zip(geoms, regions, got, strict=True):
        np.testing.assert_array_equal(m, inside_region(g, r))
    # regions that cut their geometries (and some that miss them), boxes with edges on whole pixels
    geoms += [shapely.box(100, 100, 130, 121), shapely.box(131, 100, 150.5, 121.5)]
    cut = []
    for g in geoms:
        x0, y0, x1, y1 = g.bounds if g is not None else (0, 0, 1, 1)
        r0, c0 = int(rng.integers(int(y0) - 20, int(y1) + 2)), int(rng.integers(int(x0) - 20, int(x1) + 2))
        cut.append(
            (
                max(r0, 0),
                max(c0, 0),
                max(r0, 0) + int(rng.integers(0, 40)),
                max(c0, 0) + int(rng.integers(0, 40)),
            )
        )
    got = inside_regions(geoms, cut)
    for g, r, m in zip(geoms, cut, got, strict=True):
        np.testing.assert_array_equal(m, inside_region(g, r) if g is not None else np.zeros_like(m))
    assert sum(int(m.any()) for m in got) > 20


def test_geojson_is_shapelys_mapping() -> None:
    """The fast mapping given to GDAL's rasteriser has every coordinate of every ring, in order."""
    import shapely
    from shapely.geometry import shape

    from crownsam.pseudolabel.exclusive import geojson

    holed = shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4), (2, 4)]])
    multi = shapely.MultiPolygon([holed, shapely.box(20.5, 0.25, 30, 5)])
    for g in (holed, multi, shapely.Point(1, 2), shapely.LineString([(0, 0), (1, 1)])):
        m = geojson(g)
        assert m["type"] == g.geom_type and shape(m).equals_exact(g, 0)
    assert len(geojson(holed)["coordinates"]) == 2
