"""The seam merge on hand-made tiles: one partner each way, no chains, exact unions, orphans, padding."""

from __future__ import annotations

import numpy as np
import shapely
from rasterio import Affine

from crownsam.everything.passes import PassesResult, TileObject
from crownsam.everything.seams import MergeStats, group_object, merged_groups, mutual_best, tile_result
from crownsam.everything.tiles import tile_grid

# Two tiles side by side: A owns columns 0..100, B 100..200; each reads 20 px beyond (strip: 80..120).
GRID = tile_grid(200, 100, 100, 20)
A, B = GRID.at(0, 0), GRID.at(0, 1)


def tile(t, *rects: tuple[int, int, int, int]) -> PassesResult:
    """A tile whose objects 1..n are the raster rectangles (r0, c0, r1, c1), clipped to its read window."""
    h, w = t.shape
    labels = np.zeros((h, w), dtype=np.int32)
    for k, (r0, c0, r1, c1) in enumerate(rects, start=1):
        rr = slice(max(r0, t.read[0]) - t.read[0], max(0, min(r1, t.read[2]) - t.read[0]))
        cc = slice(max(c0, t.read[1]) - t.read[1], max(0, min(c1, t.read[3]) - t.read[1]))
        sub = labels[rr, cc]
        sub[sub == 0] = k
    objects = [TileObject(k, 0.9, 0.95, 1, 0.93, 0.93) for k in range(1, len(rects) + 1)]
    return PassesResult(labels=labels, objects=objects)


def merge(a: PassesResult, b: PassesResult, match: bool = True) -> tuple[list[shapely.Geometry], MergeStats]:
    results = {A.key: tile_result(a, A, GRID), B.key: tile_result(b, B, GRID)}
    stats = MergeStats()
    groups = list(merged_groups(GRID, results.get, stats, match=match))
    return [group_object(g, Affine.identity(), stats)[1] for g in groups], stats


def test_mutual_best_pairs_one_partner_each_way() -> None:
    # a0 overlaps b0 most; b1 overlaps only a0 (a little): one-sided best would chain b1 onto a0
    assert mutual_best({(0, 0): 100.0, (0, 1): 5.0}) == [(0, 0)]
    # ties go to the lower index, on both sides
    assert mutual_best({(0, 0): 10.0, (0, 1): 10.0, (1, 1): 3.0}) == [(0, 0)]
    assert mutual_best({(0, 0): 4.0, (1, 1): 9.0, (1, 0): 1.0}) == [(0, 0), (1, 1)]
    assert mutual_best({}) == []


def test_object_across_the_seam_becomes_one_exact_polygon() -> None:
    crown = (10, 60, 50, 140)
    polys, stats = merge(tile(A, crown), tile(B, crown))
    assert len(polys) == 1 and stats.pairs_merged == 1
    assert polys[0].equals(shapely.box(60, 10, 140, 50))  # x = column, y = row
    split, _ = merge(tile(A, crown), tile(B, crown), match=False)
    assert sorted(p.bounds for p in split) == [(60, 10, 100, 50), (100, 10, 140, 50)]


def test_a_stray_neighbour_is_not_chained_onto_a_seam_object() -> None:
    """A's mask of the crown spills 5 rows over B's small object below it; the small object's only partner
    candidate is the crown, but the crown's best partner is B's crown: no merge."""
    crown_a = (10, 60, 55, 140)  # A sees the crown 5 rows too tall
    crown_b, small_b = (10, 60, 50, 140), (50, 90, 70, 115)
    polys, stats = merge(tile(A, crown_a), tile(B, crown_b, small_b))
    assert stats.pairs_merged == 1
    assert len(polys) == 2
    small = [p for p in polys if p.bounds[1] >= 50]
    # not merged; as an orphan it keeps its pixels in A's own columns that A's crown does not hold
    assert len(small) == 1
    assert small[0].equals(shapely.box(90, 50, 115, 70).difference(shapely.box(60, 10, 100, 55)))


def test_objects_wholly_in_the_padding_belong_to_the_neighbour() -> None:
    inside_b = (30, 105, 60, 118)  # A sees it in its padding only
    a, b = tile_result(tile(A, inside_b), A, GRID), tile_result(tile(B, inside_b), B, GRID)
    assert a.rows == [] and a.dropped["outside_own"] == 1
    assert len(b.rows) == 1 and b.rows[0]["strips"] == {}  # it never reaches A's own pixels
    polys, _ = merge(tile(A, inside_b), tile(B, inside_b))
    assert len(polys) == 1 and polys[0].equals(shapely.box(105, 30, 118, 60))


def test_an_orphan_takes_its_strip_pixels_the_neighbour_left_free() -> None:
    """B did not find the object's sliver; A's view of it (up to 20 px into B) is kept, minus what B holds."""
    crown, other_b = (10, 40, 50, 112), (10, 108, 30, 150)
    polys, stats = merge(tile(A, crown), tile(B, other_b))
    assert stats.extended == 1
    crown_poly = max(polys, key=lambda p: p.area)
    expected = shapely.box(40, 10, 112, 50).difference(shapely.box(108, 10, 150, 30))
    assert crown_poly.equals(expected)
    assert sum(p.area for p in polys) == shapely.union_all(polys).area  # no overlap


def test_a_one_sided_best_match_would_chain_the_stray_neighbour(monkeypatch) -> None:
    """The check above is sensitive: with each object taking its own best partner (no mutual rule), the
    small object is merged into the crown."""
    from crownsam.everything import seams

    def one_sided(overlaps: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
        best_a: dict[int, tuple[float, int]] = {}
        best_b: dict[int, tuple[float, int]] = {}
        for (i, j), v in overlaps.items():
            best_a[i] = max(best_a.get(i, (0.0, -1)), (v, j))
            best_b[j] = max(best_b.get(j, (0.0, -1)), (v, i))
        return sorted({(i, j) for i, (_, j) in best_a.items()} | {(i, j) for j, (_, i) in best_b.items()})

    monkeypatch.setattr(seams, "mutual_best", one_sided)
    polys, _ = merge(tile(A, (10, 60, 55, 140)), tile(B, (10, 60, 50, 140), (50, 90, 70, 115)))
    assert len(polys) == 1
