"""SESSRS for crown instances: predicted crowns take the outlines of the SAM objects that support them.

The rule (README "sessrs", next to the paper's wording). ``P`` is a predicted crown, ``S`` a SAM object,
``|.|`` an area (pixels of the orthophoto's grid; areas of pixel-aligned polygons), ``U`` the union of all
predicted crowns:

1. **Eligible objects.** ``S`` takes part when the predictions cover more than ``t1`` of it:
   ``|S ∩ U| / |S| > t1`` (the reference gives an object the class that covers most of it when that share
   exceeds t1; here the classes are "crown" and "background").
2. **One crown per object.** ``S`` can only support the crown it overlaps most (largest ``|P ∩ S|``; ties
   to the crown listed first, see *priority* below).
3. **Support.** ``S`` supports that crown when ``|P ∩ S| / |S| > t1`` or ``|P ∩ S| / |P| > t2``.
4. **Replacement.** With ``T`` the objects that support ``P`` and ``n = |T|``:
   ``n = 0``: P stays (``no_support``); ``n > max_objects``: P stays (``too_many_objects``; the reference
   stops at 9); ``n >= 2``: P becomes ``∪T`` when ``|∪T ∩ P| / |P| > t2``, else it stays
   (``objects_cover_too_little``); ``n = 1``: P becomes ``S`` when ``t2·|P| < |S|`` and ``t1·|S| < |P|``
   (the object is of comparable size), else it stays (``size_not_comparable``).
5. **Exclusive result.** A pixel (centre rule) claimed by several output crowns goes to the highest
   claim: ``2`` for a crown replaced by SAM objects, plus ``1`` where the crown's own prediction covers
   the pixel; equal claims go to the crown of higher *priority* (higher prediction ``score``, then lower
   ``crown_id``). A crown that lost pixels is traced again on the pixel grid. Every crown then keeps its
   largest part (4-connected on the grid; the largest polygon otherwise); a crown left with nothing is
   dropped (``absorbed``: another crown's SAM objects took all of it, e.g. the smaller half of a split
   crown).

Steps 1-3 need the overlaps only, computed once (:func:`overlaps`); the thresholds only decide
(:func:`decide`), so a grid search (``--tune``) costs one decision and one exclusive pass per pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from rasterio import Affine

from crownsam.common.vector import largest_polygon
from crownsam.pseudolabel.exclusive import Region, contested_regions, pixels_of, raster_box, resolve_claims
from crownsam.pseudolabel.masks import largest_component, mask_to_polygon

NO_SUPPORT = "no_support"
TOO_MANY = "too_many_objects"
COVER_TOO_LITTLE = "objects_cover_too_little"
SIZE_NOT_COMPARABLE = "size_not_comparable"
ABSORBED = "absorbed"


@dataclass
class Overlaps:
    """Areas the rule needs, independent of the thresholds. Crowns ``i`` and objects ``j`` are indices
    into the arrays given to :func:`overlaps`."""

    crown_area: np.ndarray  # (n,) |P_i|
    object_area: np.ndarray  # (m,) |S_j|
    covered: np.ndarray  # (m,) |S_j ∩ U|
    crown_of: np.ndarray  # (m,) the crown S_j overlaps most, -1 for none
    inter: np.ndarray  # (m,) |S_j ∩ P_crown_of(j)|


Geometries = Sequence[shapely.Geometry] | np.ndarray


def as_geometries(geoms: Geometries) -> np.ndarray:
    """An object array of geometries."""
    return np.asarray(geoms, dtype=object)


def overlaps(crowns: Geometries, objects: Geometries) -> Overlaps:
    """Overlap areas of crowns (in priority order) and objects, in one CRS (vector areas)."""
    crowns, objects = as_geometries(crowns), as_geometries(objects)
    n, m = len(crowns), len(objects)
    out = Overlaps(
        crown_area=shapely.area(crowns).astype(float) if n else np.zeros(0),
        object_area=shapely.area(objects).astype(float) if m else np.zeros(0),
        covered=np.zeros(m),
        crown_of=np.full(m, -1, dtype=np.int64),
        inter=np.zeros(m),
    )
    if not n or not m:
        return out
    obj_idx, crown_idx = shapely.STRtree(crowns).query(objects, predicate="intersects")
    if not len(obj_idx):
        return out
    pieces = shapely.intersection(objects[obj_idx], crowns[crown_idx])
    areas = shapely.area(pieces)
    for j in np.unique(obj_idx):
        sel = np.flatnonzero(obj_idx == j)
        a = areas[sel]
        if not (a > 0).any():
            continue
        order = np.lexsort((crown_idx[sel], -a))  # largest overlap, ties to the crown listed first
        best = sel[order[0]]
        out.crown_of[j] = crown_idx[best]
        out.inter[j] = areas[best]
        out.covered[j] = a[0] if len(sel) == 1 else shapely.area(shapely.union_all(pieces[sel]))
    return out


def supports(os_: np.ndarray, op: np.ndarray, t1: float, t2: float) -> np.ndarray:
    """Step 3: ``|P∩S|/|S| > t1`` or ``|P∩S|/|P| > t2``."""
    return (os_ > t1) | (op > t2)


def comparable(object_area: float, crown_area: float, t1: float, t2: float) -> bool:
    """Step 4 for one supporting object: ``t2·|P| < |S|`` and ``t1·|S| < |P|``."""
    return t2 * crown_area < object_area and t1 * object_area < crown_area


@dataclass
class Decision:
    """Per crown: the objects it becomes (empty: it stays), and why it stays."""

    objects: list[list[int]]
    reason: list[str]
    supporters: list[int] = field(default_factory=list)  # number of supporting objects per crown

    @property
    def replaced(self) -> np.ndarray:
        return np.array([bool(t) for t in self.objects], dtype=bool)


def decide(
    ov: Overlaps,
    crowns: Geometries,
    objects: Geometries,
    t1: float,
    t2: float,
    max_objects: int,
    cache: dict | None = None,
) -> Decision:
    """Steps 1-4 of the module docstring. ``cache`` (optional) keeps union coverages between calls with
    the same crowns and objects (a grid search)."""
    n = len(ov.crown_area)
    cache = {} if cache is None else cache
    has = ov.crown_of >= 0
    safe = np.maximum(ov.object_area, 1e-12)
    eligible = has & (ov.covered / safe > t1)
    p_area = np.where(has, ov.crown_area[np.maximum(ov.crown_of, 0)], 1.0)
    sup = eligible & supports(ov.inter / safe, ov.inter / np.maximum(p_area, 1e-12), t1, t2)
    by_crown: list[list[int]] = [[] for _ in range(n)]
    for j in np.flatnonzero(sup):
        by_crown[int(ov.crown_of[j])].append(int(j))
    result = Decision(objects=[[] for _ in range(n)], reason=[""] * n, supporters=[len(t) for t in by_crown])
    for i, t in enumerate(by_crown):
        p = ov.crown_area[i]
        if not t:
            result.reason[i] = NO_SUPPORT
        elif len(t) > max_objects:
            result.reason[i] = TOO_MANY
        elif len(t) == 1:
            if comparable(float(ov.object_area[t[0]]), float(p), t1, t2):
                result.objects[i] = t
            else:
                result.reason[i] = SIZE_NOT_COMPARABLE
        else:
            key = (i, tuple(t))
            if key not in cache:
                union = shapely.union_all(np.asarray([objects[j] for j in t], dtype=object))
                cache[key] = shapely.area(shapely.intersection(union, crowns[i])) / max(p, 1e-12)
            if cache[key] > t2:
                result.objects[i] = t
            else:
                result.reason[i] = COVER_TOO_LITTLE
    return result


def region_transform(transform: Affine, region: Region) -> Affine:
    """The affine transform of a raster region ``(r0, c0, r1, c1)``: its top-left pixel at (0, 0)."""
    return transform @ Affine.translation(region[1], region[0])


@dataclass
class Exclusive:
    """The exclusive crowns: one geometry per crown (None: dropped), and what the step did."""

    geoms: list[shapely.Geometry | None]
    retraced: np.ndarray  # (n,) bool: traced again on the pixel grid after losing pixels
    pairs: int = 0
    pixels_reassigned: int = 0


def make_exclusive(
    claims: Geometries,
    predictions: Geometries,
    refined: np.ndarray,
    transform: Affine,
    width: int,
    height: int,
) -> Exclusive:
    """Step 5 of the module docstring. ``claims`` are the crowns after replacement and ``predictions``
    the crowns as predicted, both in priority order, in the raster's CRS; ``refined`` says which were
    replaced. Only the places where two crowns share more than half a pixel are rasterised."""
    n = len(claims)
    geoms = np.asarray(claims, dtype=object)
    preds = np.asarray(predictions, dtype=object)
    out = Exclusive(geoms=[largest_polygon(g) or None for g in geoms], retraced=np.zeros(n, dtype=bool))
    if n < 2:
        return out
    px_area = abs(transform.determinant)
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    pairs = [
        (a, b)
        for a, b in zip(left.tolist(), right.tolist(), strict=True)
        if a < b and shapely.area(shapely.intersection(geoms[a], geoms[b])) > 0.5 * px_area
    ]
    out.pairs = len(pairs)
    if not pairs:
        return out
    inv = ~transform
    rects = [raster_box(shapely.intersection(geoms[a], geoms[b]), inv, width, height) for a, b in pairs]
    lost: dict[int, list[tuple[Region, np.ndarray]]] = {}
    for region in contested_regions(rects):
        r0, c0, r1, c1 = region
        x0, y0 = transform @ (c0, r0)
        x1, y1 = transform @ (c1, r1)
        near = sorted(
            int(i) for i in tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        )
        hw = (r1 - r0, c1 - c0)
        claimed = [pixels_of(geoms[i], region, transform) for i in near]
        values = [2.0 * float(refined[i]) + pixels_of(preds[i], region, transform) for i in near]
        won = resolve_claims(claimed, values, [(0, 0, hw[0], hw[1])] * len(near), hw)
        for i, c, w in zip(near, claimed, won, strict=True):
            gone = c & ~w
            if gone.any():
                lost.setdefault(i, []).append((region, gone))
                out.pixels_reassigned += int(gone.sum())
    for i, losses in sorted(lost.items()):
        box = raster_box(geoms[i], inv, width, height)
        mask = pixels_of(geoms[i], box, transform)
        for (r0, c0, _, _), gone in losses:
            ys, xs = np.nonzero(gone)
            ys, xs = ys + r0 - box[0], xs + c0 - box[1]
            ok = (ys >= 0) & (ys < mask.shape[0]) & (xs >= 0) & (xs < mask.shape[1])
            mask[ys[ok], xs[ok]] = False
        lcc = largest_component(mask)
        out.retraced[i] = True
        out.geoms[i] = None if lcc is None else mask_to_polygon(lcc, region_transform(transform, box))
    return out


@dataclass
class SessrsResult:
    """Per crown (priority order): its final geometry (None: dropped), whether SAM objects replaced it,
    why not, how many objects supported it; and the run's figures."""

    geoms: list[shapely.Geometry | None]
    refined: np.ndarray
    reason: list[str]
    supporters: list[int]
    stats: dict[str, int]


def sessrs(
    crowns: Geometries,
    objects: Geometries,
    t1: float,
    t2: float,
    max_objects: int,
    transform: Affine,
    width: int,
    height: int,
    *,
    ov: Overlaps | None = None,
    cache: dict | None = None,
) -> SessrsResult:
    """The whole rule (module docstring) on crowns in priority order and objects, both in the raster's
    CRS. ``ov`` and ``cache`` let a grid search reuse the overlaps."""
    crowns, objects = as_geometries(crowns), as_geometries(objects)
    ov = ov if ov is not None else overlaps(crowns, objects)
    d = decide(ov, crowns, objects, t1, t2, max_objects, cache)
    replaced = d.replaced
    claims = [shapely.union_all(objects[t]) if t else crowns[i] for i, t in enumerate(d.objects)]
    ex = make_exclusive(claims, crowns, replaced, transform, width, height)
    reason = list(d.reason)
    for i, g in enumerate(ex.geoms):
        if g is None or g.is_empty:
            ex.geoms[i] = None
            reason[i] = ABSORBED
    stats = {
        "objects": len(objects),
        "objects_touching_crowns": int((ov.crown_of >= 0).sum()),
        "crowns_replaced": int(replaced.sum()),
        "crowns_dropped": sum(g is None for g in ex.geoms),
        "exclusive_pairs": ex.pairs,
        "pixels_reassigned": ex.pixels_reassigned,
        "crowns_retraced": int(ex.retraced.sum()),
    }
    return SessrsResult(ex.geoms, replaced, reason, d.supporters, stats)
