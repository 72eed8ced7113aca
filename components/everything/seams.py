"""Seams: turning a tile's label array into objects and strips, and merging objects cut by tile edges.

**Per tile.** Each object keeps only its *part* inside the pixels the tile owns. An object with no pixel
there lies wholly in the padding (or in a neighbour's share of an overlap): it belongs to the neighbour,
which sees it whole, and is dropped here (``outside_own``). An object that reaches into a neighbour's
own pixels also keeps its *strip* toward that neighbour: its mask inside the rectangle both tiles read
(tile plus padding of each, intersected).

**Merge** (parameter-free best match, after Remote SAMsing). For each pair of neighbouring tiles (8-
neighbourhood), among the objects of A with a strip toward B and those of B with a strip toward A,
overlap(a, b) = pixels shared by their two strips. ``a`` and ``b`` merge when b is a's best partner
(largest overlap, ties to the lower label) **and** a is b's best partner: one partner each way, so a
stray mask touching a seam object is never chained onto it. Merged groups (union-find over all seams)
become one object: the union of their parts, which meet exactly along the seams because every part is a
pixel-edge polygon in the same raster pixel frame. A seam object without a partner (the neighbour did not
find it, e.g. no grid point fell on its sliver there) takes its strip pixels inside the neighbour's own
region that no object of the neighbour holds (``extended``), so it is not cut at the seam. An object
whose union still has several parts keeps its largest (counted). Attributes come from the largest part.

**Memory.** Tiles are read row by row; a group is written as soon as no tile of the current row holds
a member, so at most two rows of tiles (plus groups still open across them) are held.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely
from rasterio import Affine
from shapely.geometry import shape

from crownsam.common.errors import InputError
from crownsam.everything.passes import PassesResult
from crownsam.everything.store import TileResult, TileSource
from crownsam.everything.tiles import Tile, TileGrid, intersect, shared_strip

NodeId = tuple[int, int, int]  # (tile row, tile col, label)


def vectorise(
    labels: np.ndarray, origin: tuple[int, int], keep: set[int] | None = None
) -> dict[int, shapely.Geometry]:
    """Pixel-edge polygons of each label in ``labels`` (4-connected pieces unioned per label), in raster
    pixel coordinates: ``origin = (row, col)`` of ``labels[0, 0]``. ``keep``: only these labels."""
    if keep is not None:
        labels = np.where(np.isin(labels, list(keep)), labels, 0)
    pieces: dict[int, list[shapely.Geometry]] = defaultdict(list)
    t = Affine.translation(origin[1], origin[0])
    for geom, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=4, transform=t):
        pieces[int(value)].append(shape(geom))
    return {k: v[0] if len(v) == 1 else shapely.union_all(v) for k, v in pieces.items()}


def tile_result(result: PassesResult, tile: Tile, grid: TileGrid) -> TileResult:
    """Parts, strips and attributes of one tile's objects (module docstring, "per tile")."""
    labels = result.labels
    own_sl = tile.local(tile.own)
    parts = vectorise(labels[own_sl], tile.own[:2])
    strips: dict[int, dict[str, str]] = defaultdict(dict)
    for nb in grid.neighbours(tile):
        reach = intersect(nb.own, tile.read)
        strip = shared_strip(tile, nb)
        if reach is None or strip is None:
            continue
        found = set(np.unique(labels[tile.local(reach)]).tolist()) & set(parts)
        if not found:
            continue
        for label, geom in vectorise(labels[tile.local(strip)], strip[:2], found).items():
            strips[label][nb.key] = shapely.to_wkb(geom, hex=True)
    out = TileResult(key=tile.key, prompts=sum(p.points for p in result.passes))
    for obj in result.objects:
        part = parts.get(obj.label)
        if part is None:
            continue
        out.geoms.append(part)
        out.rows.append(
            {
                "label": obj.label,
                "score": obj.score,
                "stability": obj.stability,
                "pass": obj.pass_index,
                "pred_iou_thresh": obj.pred_iou_thresh,
                "stability_thresh": obj.stability_thresh,
                "area_px": round(part.area),
                "strips": strips.get(obj.label, {}),
            }
        )
    out.passes = [vars(p).copy() for p in result.passes]
    out.stop = result.stop
    out.valid_px = result.valid_own_px
    out.covered_px = result.covered_own_px
    out.dropped = {"outside_own": len(result.objects) - len(out.rows)}
    for p in result.passes:
        out.dropped["small"] = out.dropped.get("small", 0) + p.dropped_small
        out.dropped["overlap"] = out.dropped.get("overlap", 0) + p.dropped_overlap
    return out


def mutual_best(overlaps: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` where j is i's best partner and i is j's (largest overlap; ties to the lower
    index). ``overlaps`` maps (index in A, index in B) -> shared area, positive entries only."""
    best_a: dict[int, tuple[float, int]] = {}
    best_b: dict[int, tuple[float, int]] = {}
    for (i, j), v in overlaps.items():
        if v <= 0:
            continue
        if i not in best_a or (v, -j) > (best_a[i][0], -best_a[i][1]):
            best_a[i] = (v, j)
        if j not in best_b or (v, -i) > (best_b[j][0], -best_b[j][1]):
            best_b[j] = (v, i)
    return sorted((i, j) for i, (_, j) in best_a.items() if best_b[j][1] == i)


def strip_overlaps(a: list[shapely.Geometry], b: list[shapely.Geometry]) -> dict[tuple[int, int], float]:
    """Shared area of every intersecting (a[i], b[j]) pair of strip polygons."""
    if not a or not b:
        return {}
    tree = shapely.STRtree(b)
    ia, jb = tree.query(np.asarray(a, dtype=object), predicate="intersects")
    areas = shapely.area(
        shapely.intersection(np.asarray(a, dtype=object)[ia], np.asarray(b, dtype=object)[jb])
    )
    return {(int(i), int(j)): float(v) for i, j, v in zip(ia, jb, areas, strict=True) if v > 0}


@dataclass
class Node:
    """One object of one tile, as the merge holds it."""

    id: NodeId
    tile: str
    part: shapely.Geometry
    row: dict
    strips: dict[str, shapely.Geometry]


@dataclass
class MergeStats:
    seams: int = 0
    candidates: int = 0  # objects with a strip toward a neighbour
    pairs_merged: int = 0
    groups_merged: int = 0  # output objects made of more than one part
    multipart_kept_largest: int = 0
    extended: int = 0  # orphans given pixels in a neighbour's own region
    extended_px: int = 0
    tiles: int = 0


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[NodeId, NodeId] = {}

    def add(self, x: NodeId) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: NodeId) -> NodeId:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: NodeId, b: NodeId) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        return True

    def forget(self, xs: list[NodeId]) -> None:
        for x in xs:
            self.parent.pop(x, None)


def _nodes(tile: Tile, res: TileResult) -> list[Node]:
    return [
        Node((tile.row, tile.col, int(row["label"])), tile.key, geom, row, res.strips(i))
        for i, (row, geom) in enumerate(zip(res.rows, res.geoms, strict=True))
    ]


def _own_box(tile: Tile) -> shapely.Geometry:
    r0, c0, r1, c1 = tile.own
    return shapely.box(c0, r0, c1, r1)


def _extend(
    into: Tile,
    into_nodes: list[Node],
    orphans: list[Node],
    strip: shapely.Geometry,
    granted: dict[str, list[shapely.Geometry]],
    stats: MergeStats,
) -> None:
    """Give each orphan (a seam object without a partner in ``into``) its strip pixels inside ``into``'s
    own region that no object of ``into`` and no earlier orphan holds."""
    if not orphans:
        return
    own = _own_box(into)
    held = [n.part for n in into_nodes if n.part.intersects(strip)] + granted.setdefault(into.key, [])
    taken = shapely.union_all(held) if held else shapely.Polygon()
    for n in orphans:
        ext = shapely.difference(shapely.intersection(n.strips[into.key], own), taken)
        if shapely.area(ext) <= 0:
            continue
        n.part = shapely.union(n.part, ext)
        granted[into.key].append(ext)
        taken = shapely.union(taken, ext)
        stats.extended += 1
        stats.extended_px += round(shapely.area(ext))


def _match(
    a_tile: Tile,
    a: list[Node],
    b_tile: Tile,
    b: list[Node],
    uf: _UnionFind,
    stats: MergeStats,
    granted: dict[str, list[shapely.Geometry]],
) -> None:
    """Merge mutual best partners across the seam of ``a_tile`` and ``b_tile``; extend the orphans."""
    sa = [n for n in a if b_tile.key in n.strips]
    sb = [n for n in b if a_tile.key in n.strips]
    stats.seams += 1
    stats.candidates += len(sa) + len(sb)
    pairs = mutual_best(
        strip_overlaps([n.strips[b_tile.key] for n in sa], [n.strips[a_tile.key] for n in sb])
    )
    for i, j in pairs:
        if uf.union(sa[i].id, sb[j].id):
            stats.pairs_merged += 1
    rect = shared_strip(a_tile, b_tile)
    if rect is None:
        return
    strip = shapely.box(rect[1], rect[0], rect[3], rect[2])
    paired_a, paired_b = {i for i, _ in pairs}, {j for _, j in pairs}
    _extend(b_tile, b, [n for i, n in enumerate(sa) if i not in paired_a], strip, granted, stats)
    _extend(a_tile, a, [n for j, n in enumerate(sb) if j not in paired_b], strip, granted, stats)


def merged_groups(
    grid: TileGrid, source: TileSource, stats: MergeStats, *, match: bool = True
) -> Iterator[list[Node]]:
    """Groups of nodes that form one object each, in row-major order of their first member, streamed row by
    row (module docstring). ``match=False`` skips the seam merge (every part stays its own object)."""
    uf = _UnionFind()
    granted: dict[str, list[shapely.Geometry]] = {}
    open_nodes: dict[NodeId, Node] = {}
    previous: dict[int, tuple[Tile, list[Node]]] = {}
    for r in range(grid.rows):
        current: dict[int, tuple[Tile, list[Node]]] = {}
        for c in range(grid.cols):
            tile = grid.at(r, c)
            assert tile is not None
            res = source(tile.key)
            if res is None:
                raise InputError(tile.key, "tile missing: no shard or saved run holds it")
            stats.tiles += 1
            nodes = _nodes(tile, res)
            for n in nodes:
                uf.add(n.id)
                open_nodes[n.id] = n
            current[c] = (tile, nodes)
        if match:
            for c, (tile, nodes) in current.items():
                if c + 1 in current:
                    _match(tile, nodes, *current[c + 1], uf, stats, granted)
                for dc in (-1, 0, 1):
                    if c + dc in previous:
                        _match(*previous[c + dc], tile, nodes, uf, stats, granted)
        for tile, nodes in previous.values():
            granted.pop(tile.key, None)
            for n in nodes:
                n.strips = {}  # no later tile can match them
        live = {uf.find(n.id) for _, nodes in current.values() for n in nodes}
        yield from _close(open_nodes, uf, keep=live)
        previous = current
    yield from _close(open_nodes, uf, keep=set())


def _close(open_nodes: dict[NodeId, Node], uf: _UnionFind, keep: set[NodeId]) -> list[list[Node]]:
    """Remove and return the groups whose root is not in ``keep``, ordered by their first member."""
    groups: dict[NodeId, list[Node]] = defaultdict(list)
    for nid, n in open_nodes.items():
        root = uf.find(nid)
        if root not in keep:
            groups[root].append(n)
    out = [sorted(g, key=lambda n: n.id) for g in groups.values()]
    out.sort(key=lambda g: g[0].id)
    for g in out:
        for n in g:
            del open_nodes[n.id]
    uf.forget([n.id for g in out for n in g])
    return out


def group_object(group: list[Node], transform: Affine, stats: MergeStats) -> tuple[dict, shapely.Geometry]:
    """One output object from a group: the union of its parts (largest polygon kept if several) in map
    coordinates, attributes of its largest part."""
    geom = group[0].part if len(group) == 1 else shapely.union_all([n.part for n in group])
    if len(group) > 1:
        stats.groups_merged += 1
    polys = [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon"]
    if len(polys) > 1:
        stats.multipart_kept_largest += 1
    poly = max(polys, key=lambda g: g.area)
    main = max(group, key=lambda n: (n.part.area, [-v for v in n.id]))
    m = np.array([[transform.a, transform.b], [transform.d, transform.e]])
    off = np.array([transform.c, transform.f])
    mapped = shapely.transform(poly, lambda xy: xy @ m.T + off)
    row = {
        "score": float(main.row["score"]),
        "stability": float(main.row["stability"]),
        "pass": int(main.row["pass"]),
        "tile": main.tile,
        "pred_iou_thresh": float(main.row["pred_iou_thresh"]),
        "stability_thresh": float(main.row["stability_thresh"]),
        "area_px": round(poly.area),
        "tiles": len({n.tile for n in group}),
    }
    return row, mapped
