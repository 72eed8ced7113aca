"""Exclusive labels: no pixel belongs to two pseudolabels.

Rule (README "Exclusive labels"): a pixel claimed by several labels goes to the one with the highest
SAM2 logit there (full-resolution logits, upsampled from SAM2's low-resolution map as the masks are);
ties go to the lower ``segment_id``. A label that fell back to its coarse segment claims that segment's
pixels with logit -inf: any SAM2 mask wins against it, and between two coarse labels the lower
``segment_id`` wins. After the resolution each label keeps its largest 4-connected component; a label
left without pixels is dropped (skip reason ``empty_after_exclusive``).

It runs twice: within each window, on the masks of the window's segments (:func:`resolve_claims`), and
across windows, on the finished labels of all windows together (:func:`resolve_across_windows`), where
the shards are merged (or at the end of an unsharded run). The second step needs each label's logits:
each label keeps a :class:`Claim` (its logit patch and its window), written beside a shard's output.
Both steps are pure functions of their inputs and process labels in ``segment_id`` order, so sharded
and unsharded runs give identical labels.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from rasterio import Affine

from crownsam.common.vector import ID_COLUMN
from crownsam.pseudolabel.masks import (
    LogitPatch,
    RegionLogits,
    bbox,
    ceil_px,
    floor_px,
    largest_component,
    mask_to_polygon,
)
from crownsam.pseudolabel.overlap import mask_overlaps
from crownsam.pseudolabel.vegetation import inside_mask

SKIP_EMPTY_AFTER_EXCLUSIVE = "empty_after_exclusive"
CLAIMS_SUFFIX = ".claims.json"

Region = tuple[int, int, int, int]


def resolve_claims(
    claims: Sequence[np.ndarray],
    values: Sequence[np.ndarray | float | LogitPatch | RegionLogits],
    regions: Sequence[Region],
    hw: tuple[int, int],
    *,
    boxes: Sequence[Region | None] | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> list[np.ndarray]:
    """Per-pixel winner among overlapping claims, in the order given (callers order by ``segment_id``).

    ``claims[i]`` is a boolean crop of ``regions[i]`` (``(r0, c0, r1, c1)`` in a frame of size ``hw``),
    ``values[i]`` the logits there: an array like the claim, one number for all its pixels, or the
    :class:`LogitPatch` (frame coordinates) to upsample them from, only where the claim is contested (or
    the :class:`RegionLogits` that already hold them). A pixel goes to the highest value; on equal values
    the earlier claim keeps it. Returns the pixels each claim won, as crops of its region: a claim that
    shares no pixel with another is returned as it is (the same array, not a copy). What the caller
    already knows need not be computed again: ``boxes[i]``, the :func:`bbox` of ``claims[i]`` (None:
    unknown); ``pairs``, the claims' :func:`mask_overlaps` pairs.

    Only contested claims (sharing a pixel with another) are compared, in groups linked by shared
    pixels, and each only where its pixel box meets those of the claims it shares pixels with: a pixel's
    winner depends only on the claims holding it, which share it and so are in one group, and a pixel
    outside those boxes is held by its claim alone, so the result is the same.
    """
    won = list(claims)
    if pairs is None:
        pairs, _ = mask_overlaps(claims, regions)
    if not pairs:
        return won
    # each contested claim's pixel box, frame coordinates
    frame_boxes: dict[int, Region] = {}
    for i in {k for pair in pairs for k in pair}:
        known = boxes[i] if boxes is not None else None
        # a claim with a shared pixel has pixels
        br0, bc0, br1, bc1 = known if known is not None else cast("Region", bbox(claims[i]))
        frame_boxes[i] = (regions[i][0] + br0, regions[i][1] + bc0, regions[i][0] + br1, regions[i][1] + bc1)
    # where each can share pixels: the union of its box's overlaps with its partners' boxes; outside it,
    # its pixels are its own
    near: dict[int, Region] = {}
    for p, q in pairs:
        cut = _overlap(frame_boxes[p], frame_boxes[q])
        for k in (p, q):
            near[k] = _union(near[k], cut) if k in near else cut
    for group in _linked(pairs):
        origin = (min(near[i][0] for i in group), min(near[i][1] for i in group))
        shape = (max(near[i][2] for i in group) - origin[0], max(near[i][3] for i in group) - origin[1])
        best = np.full(shape, -np.inf, dtype=np.float32)
        owner = np.full(shape, -1, dtype=np.int32)
        for i in group:
            claim = claims[i][_within(near[i], regions[i])]
            value = values[i]
            v: np.ndarray | np.float32
            if isinstance(value, LogitPatch | RegionLogits):
                v = value.upsample(near[i])
            elif isinstance(value, np.ndarray):
                v = value[_within(near[i], regions[i])]
            else:
                v = np.float32(value)
            b, o = best[_within(near[i], origin)], owner[_within(near[i], origin)]
            win = claim & ((o < 0) | (v > b))
            np.copyto(b, v, where=win)
            np.copyto(o, i, where=win)
        for i in group:
            got = claims[i].copy()
            got[_within(near[i], regions[i])] &= owner[_within(near[i], origin)] == i
            won[i] = got
    return won


def _within(box: Region, origin: Sequence[int]) -> tuple[slice, slice]:
    """``box`` (frame coordinates) as slices of an array whose first pixel is at ``origin`` (row, col)."""
    return slice(box[0] - origin[0], box[2] - origin[0]), slice(box[1] - origin[1], box[3] - origin[1])


def _overlap(a: Region, b: Region) -> Region:
    """The intersection of two boxes (that meet)."""
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def _union(a: Region, b: Region) -> Region:
    """The bounding box of two boxes."""
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _linked(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """The groups (ascending members, ordered by their first) that ``pairs`` link (union-find)."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in sorted(parent):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


# ----------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """What the cross-window step needs of one label: its window offset, the window-pixel box of its
    pixels, and its logit patch (None: a coarse fallback, logit -inf)."""

    segment_id: int
    row_off: int
    col_off: int
    box: Region  # (r0, c0, r1, c1) of the label's pixels, window pixels
    patch: LogitPatch | None

    def to_dict(self) -> dict:
        d: dict = {
            "segment_id": self.segment_id,
            "row_off": self.row_off,
            "col_off": self.col_off,
            "box": list(self.box),
            "patch": None,
        }
        if self.patch is not None:
            p = self.patch
            data = np.ascontiguousarray(p.data, dtype="<f4")
            d["patch"] = {
                "r0": p.r0,
                "c0": p.c0,
                "shape": list(data.shape),
                "low_hw": list(p.low_hw),
                "out_hw": list(p.out_hw),
                "data": base64.b64encode(zlib.compress(data.tobytes(), 6)).decode("ascii"),
            }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Claim:
        p = d.get("patch")
        patch = None
        if p is not None:
            raw = np.frombuffer(zlib.decompress(base64.b64decode(p["data"])), dtype="<f4")
            patch = LogitPatch(
                raw.reshape(p["shape"]).astype(np.float32),
                int(p["r0"]),
                int(p["c0"]),
                (int(p["low_hw"][0]), int(p["low_hw"][1])),
                (int(p["out_hw"][0]), int(p["out_hw"][1])),
            )
        r0, c0, r1, c1 = (int(v) for v in d["box"])
        return cls(int(d["segment_id"]), int(d["row_off"]), int(d["col_off"]), (r0, c0, r1, c1), patch)

    def values(self, region: Region) -> np.ndarray:
        """Logits on ``region`` (raster pixels): the label's logits inside its box, -inf elsewhere."""
        r0, c0, r1, c1 = region
        out = np.full((r1 - r0, c1 - c0), -np.inf, dtype=np.float32)
        if self.patch is None:
            return out
        br0, bc0, br1, bc1 = self.box
        wr0, wc0 = max(r0 - self.row_off, br0), max(c0 - self.col_off, bc0)
        wr1, wc1 = min(r1 - self.row_off, br1), min(c1 - self.col_off, bc1)
        if wr1 > wr0 and wc1 > wc0:
            out[
                wr0 + self.row_off - r0 : wr1 + self.row_off - r0,
                wc0 + self.col_off - c0 : wc1 + self.col_off - c0,
            ] = self.patch.upsample((wr0, wc0, wr1, wc1))
        return out


# ---------------------------------------------------------------------------------------- across windows


def raster_box(geom: shapely.Geometry, inv: Affine, width: int, height: int) -> Region:
    """Whole raster pixels ``(r0, c0, r1, c1)`` covering a geometry, clipped to the raster."""
    g = shapely.transform(geom, lambda xy: xy @ np.array([[inv.a, inv.d], [inv.b, inv.e]]) + [inv.c, inv.f])
    x0, y0, x1, y1 = shapely.bounds(g)
    c0 = int(np.clip(floor_px(np.array(x0)), 0, width))
    r0 = int(np.clip(floor_px(np.array(y0)), 0, height))
    c1 = int(np.clip(ceil_px(np.array(x1)), 0, width))
    r1 = int(np.clip(ceil_px(np.array(y1)), 0, height))
    return r0, c0, r1, c1


def pixels_of(geom: shapely.Geometry, region: Region, transform: Affine) -> np.ndarray:
    """Pixels of ``region`` (raster pixels) whose centre lies in ``geom`` (map coordinates)."""
    r0, c0, r1, c1 = region
    if r1 <= r0 or c1 <= c0:
        return np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=bool)
    import rasterio.features

    return rasterio.features.geometry_mask(
        [geom], out_shape=(r1 - r0, c1 - c0), transform=transform @ Affine.translation(c0, r0), invert=True
    )


def contested_regions(rects: list[Region]) -> list[Region]:
    """Disjoint pixel rectangles covering ``rects``: rectangles that overlap are merged into their common
    bounding box until none overlap (sorted, so the result does not depend on the input order)."""
    boxes = sorted(set(rects))
    changed = True
    while changed:
        changed = False
        out: list[Region] = []
        for b in boxes:
            for k, o in enumerate(out):
                if b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3]:
                    out[k] = (min(b[0], o[0]), min(b[1], o[1]), max(b[2], o[2]), max(b[3], o[3]))
                    changed = True
                    break
            else:
                out.append(b)
        boxes = sorted(out)
    return boxes


@dataclass
class CrossWindowResult:
    """Labels after the cross-window step, and what it did."""

    labels: gpd.GeoDataFrame
    dropped: list[dict]
    pairs: int = 0  # label pairs from different windows that shared pixels
    pixels_reassigned: int = 0  # contested pixels each loser gave up (summed over losers)
    labels_changed: int = 0


def _clip(box: Region, region: Region) -> Region:
    """``box`` clipped to ``region`` (both raster pixels ``(r0, c0, r1, c1)``); empty boxes keep r1 >= r0."""
    r0, c0 = max(box[0], region[0]), max(box[1], region[1])
    return r0, c0, max(r0, min(box[2], region[2])), max(c0, min(box[3], region[3]))


def resolve_across_windows(
    labels: gpd.GeoDataFrame, claims: Mapping[int, Claim], transform: Affine, width: int, height: int
) -> CrossWindowResult:
    """Resolve pixels claimed by labels of different windows (rule in the module docstring).

    ``labels`` are pixel-aligned polygons in the raster's CRS with ``segment_id`` and ``window_row_off``/
    ``window_col_off``; ``claims`` holds each label's :class:`Claim`. Contested pixels lie where labels of
    different windows intersect; those places are covered by disjoint rectangles
    (:func:`contested_regions`), and in each, every label there claims its pixels, in ``segment_id``
    order. Memory follows the size of the contested places, not of the raster.
    """
    labels = labels.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
    out = CrossWindowResult(labels=labels, dropped=[])
    if len(labels) < 2:
        return out
    geoms = labels.geometry.values
    window = list(
        zip(labels["window_row_off"].astype(int), labels["window_col_off"].astype(int), strict=True)
    )
    px_area = abs(transform.determinant)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = []
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        if (
            a < b
            and window[a] != window[b]
            and shapely.area(shapely.intersection(geoms[a], geoms[b])) > 0.5 * px_area
        ):
            pairs.append((a, b))
    out.pairs = len(pairs)
    if not pairs:
        return out
    inv = ~transform
    lost: dict[int, list[tuple[Region, np.ndarray]]] = {}
    rects = [raster_box(shapely.intersection(geoms[a], geoms[b]), inv, width, height) for a, b in pairs]
    tree = shapely.STRtree(geoms)
    for region in contested_regions(rects):
        r0, c0, r1, c1 = region
        x0, y0 = transform @ (c0, r0)
        x1, y1 = transform @ (c1, r1)
        near = sorted(
            int(i) for i in tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        )
        hw = (r1 - r0, c1 - c0)
        # Each label's arrays cover only its own box within the region (outside it, it claims nothing):
        # chained overlaps can merge into a region as large as the raster, with hundreds of labels near.
        subs = [_clip(raster_box(geoms[i], inv, width, height), region) for i in near]
        claimed = [pixels_of(geoms[i], sub, transform) for i, sub in zip(near, subs, strict=True)]
        values = [
            claims[int(labels[ID_COLUMN].iloc[i])].values(sub) for i, sub in zip(near, subs, strict=True)
        ]
        local = [(a0 - r0, b0 - c0, a1 - r0, b1 - c0) for a0, b0, a1, b1 in subs]
        won = resolve_claims(claimed, values, local, hw)
        for i, sub, c, w in zip(near, subs, claimed, won, strict=True):
            gone = c & ~w
            if gone.any():
                lost.setdefault(i, []).append((sub, gone))
                out.pixels_reassigned += int(gone.sum())
    keep = np.ones(len(labels), dtype=bool)
    new_geoms = list(geoms)
    area_px = labels["area_px"].to_numpy().copy()
    for i, losses in sorted(lost.items()):
        box = raster_box(geoms[i], inv, width, height)
        b0, bc0, _, _ = box
        mask = pixels_of(geoms[i], box, transform)
        for (r0, c0, _, _), gone in losses:
            ys, xs = np.nonzero(gone)
            ys, xs = ys + r0 - b0, xs + c0 - bc0
            ok = (ys >= 0) & (ys < mask.shape[0]) & (xs >= 0) & (xs < mask.shape[1])
            mask[ys[ok], xs[ok]] = False
        lcc = largest_component(mask)
        out.labels_changed += 1
        if lcc is None:
            keep[i] = False
            out.dropped.append(
                {"segment_id": int(labels[ID_COLUMN].iloc[i]), "reason": SKIP_EMPTY_AFTER_EXCLUSIVE}
            )
            continue
        new_geoms[i] = mask_to_polygon(lcc, transform @ Affine.translation(bc0, b0))
        area_px[i] = int(lcc.sum())
    labels = labels.set_geometry(gpd.GeoSeries(new_geoms, index=labels.index, crs=labels.crs))
    labels["area_px"] = area_px
    labels["area"] = labels["area_px"] * px_area
    out.labels = labels[keep].reset_index(drop=True)
    return out


def inside_region(geom_px: shapely.Geometry, region: Region) -> np.ndarray:
    """Pixels of a window ``region`` whose centre lies in a window-pixel-space geometry."""
    r0, c0, r1, c1 = region
    return inside_mask(geom_px, (r1 - r0, c1 - c0), r0, c0)


def geojson(geom: shapely.Geometry) -> dict:
    """The GeoJSON-like mapping of a polygon or multipolygon (any other geometry: shapely's), with each
    ring's coordinates copied out at once (shapely's ``__geo_interface__`` walks them one by one in
    Python: most of the cost of rasterising small polygons with rasterio)."""

    def rings(p: shapely.Polygon) -> list:
        return [shapely.get_coordinates(r).tolist() for r in (p.exterior, *p.interiors)]

    if isinstance(geom, shapely.Polygon):
        return {"type": "Polygon", "coordinates": rings(geom)}
    if isinstance(geom, shapely.MultiPolygon):
        return {"type": "MultiPolygon", "coordinates": [rings(p) for p in geom.geoms]}
    return dict(geom.__geo_interface__)


def inside_regions(
    geoms_px: Sequence[shapely.Geometry | None] | np.ndarray, regions: Sequence[Region]
) -> list[np.ndarray]:
    """:func:`inside_region` of each geometry in its own region, with fewer GDAL calls on fewer pixels:
    geometries whose bounding boxes (grown by a pixel) do not meet are burned together, each with its own
    value, into the bounding box of their boxes, and each is read back in its own region. The same
    pixels: a pixel burns only where its centre lies in the geometry, inside its box, so no two
    geometries of a group burn the same pixel, and none outside its box."""
    out = [np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=bool) for r0, c0, r1, c1 in regions]
    boxes: list[tuple[float, float, float, float]] = []
    extents: dict[int, Region] = {}  # each geometry's box in whole pixels, within its region
    groups: list[list[int]] = []
    for i, (g, (r0, c0, r1, c1)) in enumerate(zip(geoms_px, regions, strict=True)):
        boxes.append((0.0, 0.0, 0.0, 0.0))
        if g is None or g.is_empty or r1 <= r0 or c1 <= c0:
            continue
        x0, y0, x1, y1 = g.bounds
        boxes[i] = b = (x0 - 1, y0 - 1, x1 + 1, y1 + 1)
        e = (
            max(r0, math.floor(b[1])),
            max(c0, math.floor(b[0])),
            min(r1, math.ceil(b[3])),
            min(c1, math.ceil(b[2])),
        )
        if e[2] <= e[0] or e[3] <= e[1]:  # no pixel of the region is near it
            continue
        extents[i] = e
        for group in groups:
            if all(
                b[2] < boxes[j][0] or boxes[j][2] < b[0] or b[3] < boxes[j][1] or boxes[j][3] < b[1]
                for j in group
            ):
                group.append(i)
                break
        else:
            groups.append([i])
    for group in groups:
        ext = np.asarray([extents[i] for i in group], dtype=np.int64).reshape(-1, 4)
        fr0, fc0 = int(ext[:, 0].min()), int(ext[:, 1].min())
        shape = (int(ext[:, 2].max()) - fr0, int(ext[:, 3].max()) - fc0)
        burned = rasterio.features.rasterize(
            [(geojson(geoms_px[i]), k + 1) for k, i in enumerate(group)],
            out_shape=shape,
            transform=Affine.translation(fc0, fr0),
            fill=0,
            dtype="uint16" if len(group) >= 255 else "uint8",
        )
        for k, i in enumerate(group):
            r0, c0, _, _ = regions[i]
            e0, e1, e2, e3 = extents[i]
            out[i][e0 - r0 : e2 - r0, e1 - c0 : e3 - c0] = (
                burned[e0 - fr0 : e2 - fr0, e1 - fc0 : e3 - fc0] == k + 1
            )
    return out
