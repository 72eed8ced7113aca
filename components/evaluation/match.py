"""Geometry of the evaluation: cleaning layers, the Jaccard index, and one-to-one crown matching.

All functions are pure (no I/O, no logging); what they change is returned as notes in words.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from scipy.optimize import linear_sum_assignment

from crownsam.common.errors import InputError
from crownsam.common.vector import crs_label, integer_ids, polygonal, same_crs

TREE_ID = "tree_id"


def jaccard(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """Jaccard index J(A, B) = |A ∩ B| / |A ∪ B|, with |A ∪ B| = |A| + |B| - |A ∩ B|; 0 if both are empty."""
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Layer:
    """A cleaned polygon layer in the working CRS: ids and geometries in the same order."""

    ids: np.ndarray  # int64
    geoms: np.ndarray  # shapely geometries, valid, non-empty, polygonal

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def areas(self) -> np.ndarray:
        return shapely.area(self.geoms)


def working_crs(gdf: gpd.GeoDataFrame, source: str) -> tuple[CRS, str | None]:
    """The CRS in which areas are computed: the layer's own CRS when it is projected; for a geographic CRS
    the UTM zone estimated from the layer's extent (``GeoDataFrame.estimate_utm_crs``), with a note."""
    if gdf.crs is None:
        raise InputError(source, "has no CRS; set one (e.g. ogr2ogr -a_srs EPSG:3067)")
    crs = CRS.from_user_input(gdf.crs)
    if crs.is_projected:
        return crs, None
    present = gdf[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    if len(present) == 0:
        raise InputError(source, "has a geographic CRS and no geometry to choose a projected CRS from")
    utm = present.estimate_utm_crs()
    return utm, (
        f"{source}: geographic CRS {crs_label(crs)}; areas are computed in {crs_label(utm)} "
        "(UTM zone of the data), all layers reprojected there"
    )


def clean_layer(
    gdf: gpd.GeoDataFrame,
    source: str,
    crs: CRS,
    id_column: str | None,
    *,
    empty_ok: bool = False,
) -> tuple[Layer, list[str]]:
    """Validate, repair and reproject one layer; return it with notes in words.

    Rules: ids come from ``id_column`` (unique integers, no nulls) or are 1..n in row order when the
    column is missing (noted, unless ``id_column`` is None); null and empty geometries are dropped
    (counted); invalid geometries are repaired with ``shapely.make_valid`` keeping their polygonal parts
    (counted; a repair that leaves nothing is dropped); every layer is reprojected to ``crs`` (noted).
    ``empty_ok`` allows a layer without features.
    """
    notes: list[str] = []
    if len(gdf) == 0:
        if not empty_ok:
            raise InputError(source, "is empty (no features)")
        notes.append(f"{source}: no features; every crown scores J = 0 against it")
        return Layer(np.zeros(0, dtype=np.int64), np.array([], dtype=object)), notes
    if gdf.crs is None:
        raise InputError(source, "has no CRS; set one (e.g. ogr2ogr -a_srs EPSG:3067)")
    if id_column is not None and id_column in gdf.columns:
        ids = integer_ids(gdf[id_column], source, id_column)
    else:
        ids = np.arange(1, len(gdf) + 1, dtype=np.int64)
        if id_column is not None:
            notes.append(f"{source}: no {id_column} column; ids 1..{len(gdf)} assigned in file order")

    geoms = np.asarray(gdf.geometry.values, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    invalid = ~missing & ~shapely.is_valid(geoms)
    fixed = geoms.copy()
    for i in np.flatnonzero(invalid):
        fixed[i] = polygonal(shapely.make_valid(geoms[i]))
    # Non-polygonal geometries (points, lines) cannot have a Jaccard index: keep polygonal parts only.
    for i in np.flatnonzero(~missing & ~invalid):
        if fixed[i].geom_type not in ("Polygon", "MultiPolygon"):
            fixed[i] = polygonal(fixed[i])
    lost = ~missing & (shapely.is_empty(fixed) | (shapely.area(fixed) <= 0))
    keep = ~missing & ~lost
    if missing.any():
        notes.append(f"{source}: {int(missing.sum())} null or empty geometries dropped")
    if invalid.any():
        notes.append(
            f"{source}: {int(invalid.sum())} invalid geometries repaired (make_valid, polygonal parts kept)"
        )
    if lost.any():
        notes.append(f"{source}: {int(lost.sum())} geometries without area dropped")
    out = gpd.GeoSeries(fixed[keep], crs=gdf.crs)
    if not same_crs(CRS.from_user_input(gdf.crs), crs):
        notes.append(
            f"{source}: reprojected from {crs_label(CRS.from_user_input(gdf.crs))} to {crs_label(crs)}"
        )
        out = out.to_crs(crs)
        # Reprojection can, rarely, make a ring self-touch: repair again without counting it.
        bad = ~shapely.is_valid(out.values)
        if bad.any():
            vals = np.asarray(out.values, dtype=object)
            vals[bad] = [polygonal(shapely.make_valid(g)) for g in vals[bad]]
            out = gpd.GeoSeries(vals, crs=crs)
    layer = Layer(ids[keep], np.asarray(out.values, dtype=object))
    if len(layer) == 0 and not empty_ok:
        raise InputError(source, "has no usable polygon (all null, empty or without area)")
    return layer, notes


@dataclass
class Matching:
    """One-to-one matching of manual crowns to labels, aligned with the manual crowns.

    ``label_index`` is the matched label's row in the label layer, -1 for none; ``jaccard`` is 0 for
    unmatched crowns; ``overlaps`` says whether the crown overlaps any label at all (matched or not).
    """

    label_index: np.ndarray  # int, -1 = unmatched
    jaccard: np.ndarray  # float
    intersection: np.ndarray  # float, area of manual ∩ matched label (0 when unmatched)
    overlaps: np.ndarray  # bool


def overlap_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j) of geometries ``a[i]``, ``b[j]`` with an intersection of positive area, and that
    area. Candidates come from an STRtree, so the cost grows with the pairs that touch, not len(a)·len(b)."""
    if len(a) == 0 or len(b) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    tree = shapely.STRtree(b)
    ia, ib = tree.query(a, predicate="intersects")
    inter = shapely.area(shapely.intersection(a[ia], b[ib]))
    keep = inter > 0
    return ia[keep].astype(np.int64), ib[keep].astype(np.int64), inter[keep]


def match_crowns(manual: np.ndarray, labels: np.ndarray) -> Matching:
    """Match every manual crown to at most one label, and every label to at most one crown.

    IoU(i, j) = |M_i ∩ L_j| / (|M_i| + |L_j| - |M_i ∩ L_j|). The matching maximises the total IoU over
    all one-to-one assignments (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment`` on the IoU
    matrix restricted to labels that overlap some crown). Without competition each crown gets its
    highest-IoU label; a label that two crowns want goes where the total is larger, and the other crown
    takes its next best label or none. Pairs with IoU = 0 are never matches: such crowns get J = 0.
    """
    n = len(manual)
    out = Matching(
        label_index=np.full(n, -1, dtype=np.int64),
        jaccard=np.zeros(n),
        intersection=np.zeros(n),
        overlaps=np.zeros(n, dtype=bool),
    )
    ia, ib, inter = overlap_pairs(manual, labels)
    if ia.size == 0:
        return out
    out.overlaps[ia] = True
    cols, col_of = np.unique(ib, return_inverse=True)
    area_m = shapely.area(manual)
    area_l = shapely.area(labels)
    iou = np.zeros((n, cols.size))
    inter_m = np.zeros((n, cols.size))
    iou[ia, col_of] = inter / (area_m[ia] + area_l[ib] - inter)
    inter_m[ia, col_of] = inter
    rows, picked = linear_sum_assignment(iou, maximize=True)
    for r, c in zip(rows, picked, strict=True):
        if iou[r, c] > 0:
            out.label_index[r] = cols[c]
            out.jaccard[r] = iou[r, c]
            out.intersection[r] = inter_m[r, c]
    return out


def inside_fraction(geoms: np.ndarray, area: shapely.Geometry) -> np.ndarray:
    """|G ∩ area| / |G| for each geometry (0 for geometries without area)."""
    if len(geoms) == 0:
        return np.zeros(0)
    frac = np.zeros(len(geoms))
    idx = shapely.STRtree(geoms).query(area, predicate="intersects")
    if idx.size:
        a = shapely.area(geoms[idx])
        inter = shapely.area(shapely.intersection(geoms[idx], area))
        frac[idx] = np.divide(inter, a, out=np.zeros_like(a), where=a > 0)
    return frac
