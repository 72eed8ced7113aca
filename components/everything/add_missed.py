"""add-missed: objects from segment-everything that no label covers and that look like a crown become
new labels (``label_source = amg``).

An object is kept unless the first rule it fails, in this order, names why it is dropped:
1. ``overlaps_label``: at least ``max_overlap`` of its area lies under existing labels (their union);
2. ``too_small`` / ``too_large``: area outside ``[min_area, max_area]`` m²;
3. ``not_compact``: compactness ``A / (pi R^2)`` below ``min_compactness``, with ``R`` the radius of the
   smallest circle enclosing it (1 for a disk, 0.64 for a square, ~0.3 for a 1:4 strip; pixel staircase
   edges do not lower it, unlike a perimeter-based measure);
4. ``no_data``: no valid orthophoto pixel inside (pixel-centre rule);
5. ``low_ndvi``: mean NDVI ``(NIR - red) / (NIR + red)`` of its valid pixels below ``min_ndvi``;
6. with a CHM: ``no_chm_data`` (no valid CHM cell inside) or ``too_low``: the 90th percentile of its CHM
   heights below ``min_height`` m.
Rasters are read one object's bounding window at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import CRS
from rasterio import Affine, features
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from crownsam.common.errors import InputError
from crownsam.common.raster import open_raster, read_error
from crownsam.common.vector import ID_COLUMN, ReadReport, same_crs, to_crs
from crownsam.everything.params import AMG_SOURCE, AddMissedParams, PipelineFindMissed

log = logging.getLogger(__name__)

SOURCE_COLUMN = "label_source"
REASONS = ("empty", "overlaps_label", "too_small", "too_large", "not_compact", "no_data", "low_ndvi")
CHM_REASONS = ("no_chm_data", "too_low")


def compactness(geom: shapely.Geometry) -> float:
    """``A / (pi R^2)``, ``R`` = radius of the smallest enclosing circle (0 for an empty geometry)."""
    r = shapely.minimum_bounding_radius(geom)
    return float(geom.area / (np.pi * r * r)) if r > 0 else 0.0


def overlap_shares(objects: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Share of each object's area under the union of the labels it intersects."""
    tree = shapely.STRtree(labels)
    out = np.zeros(len(objects))
    for i, g in enumerate(objects):
        hits = tree.query(g, predicate="intersects")
        if len(hits) and g.area > 0:
            out[i] = shapely.intersection(g, shapely.union_all(labels[hits])).area / g.area
    return out


def _window(src: rasterio.io.DatasetReader, geom: shapely.Geometry) -> Window | None:
    """The pixels covering the object's bounds, clipped to the raster (None: nothing left)."""
    x0, y0, x1, y1 = geom.bounds
    inv = ~src.transform
    cols, rows = zip(*(inv @ (x, y) for x in (x0, x1) for y in (y0, y1)), strict=True)
    c0, r0 = max(0, int(np.floor(min(cols)))), max(0, int(np.floor(min(rows))))
    c1, r1 = min(src.width, int(np.ceil(max(cols)))), min(src.height, int(np.ceil(max(rows))))
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _inside(src: rasterio.io.DatasetReader, geom: shapely.Geometry, w: Window) -> np.ndarray:
    """Pixels of window ``w`` whose centre lies in ``geom``."""
    t = src.transform @ Affine.translation(w.col_off, w.row_off)
    return features.geometry_mask([geom], out_shape=(int(w.height), int(w.width)), transform=t, invert=True)


def mean_ndvi(src: rasterio.io.DatasetReader, geom: shapely.Geometry, red: int, nir: int) -> float | None:
    """Mean NDVI over the object's valid pixels (None when it has none)."""
    w = _window(src, geom)
    if w is None:
        return None
    try:
        data = src.read([red, nir], window=w).astype(np.float64)
        valid = (src.read_masks(red, window=w) > 0) & (src.read_masks(nir, window=w) > 0)
    except RasterioIOError as exc:
        raise read_error(src.name, exc) from exc
    total = data[0] + data[1]
    sel = _inside(src, geom, w) & valid & (total > 0)
    if not sel.any():
        return None
    return float(np.mean((data[1][sel] - data[0][sel]) / total[sel]))


def height_p90(src: rasterio.io.DatasetReader, geom: shapely.Geometry) -> float | None:
    """90th percentile of the CHM cells (pixel-centre rule) inside the object (None when none is valid)."""
    w = _window(src, geom)
    if w is None:
        return None
    try:
        data = src.read(1, window=w, masked=True)
    except RasterioIOError as exc:
        raise read_error(src.name, exc) from exc
    sel = _inside(src, geom, w) & ~np.ma.getmaskarray(data) & np.isfinite(data.filled(np.nan))
    if not sel.any():
        return None
    return float(np.percentile(np.asarray(data)[sel], 90))


@dataclass
class Decision:
    """Per object: the reason it is dropped ('' = kept) and the figures measured on it."""

    reason: list[str] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)


def judge_one(
    g: shapely.Geometry,
    share: float,
    ortho: rasterio.io.DatasetReader,
    chm: rasterio.io.DatasetReader | None,
    to_chm: Callable[[shapely.Geometry], shapely.Geometry],
    params: AddMissedParams,
) -> tuple[str, dict[str, Any]]:
    """The first rule of the module docstring that ``g`` fails ('' if none), and what was measured."""
    fig: dict[str, Any] = {"overlap": round(share, 4), "area": round(g.area, 4)}
    if share >= params.max_overlap:
        return "overlaps_label", fig
    if g.area < params.min_area:
        return "too_small", fig
    if g.area > params.max_area:
        return "too_large", fig
    fig["compactness"] = round(compactness(g), 4)
    if fig["compactness"] < params.min_compactness:
        return "not_compact", fig
    assert params.red_band is not None and params.nir_band is not None  # checked by judge
    ndvi = mean_ndvi(ortho, g, params.red_band, params.nir_band)
    if ndvi is None:
        return "no_data", fig
    fig["ndvi"] = round(ndvi, 4)
    if ndvi < params.min_ndvi:
        return "low_ndvi", fig
    if chm is None:
        return "", fig
    h = height_p90(chm, to_chm(g))
    if h is None:
        return "no_chm_data", fig
    fig["height_p90"] = round(h, 3)
    return ("too_low" if h < params.min_height else ""), fig


def judge(
    masks: gpd.GeoDataFrame,
    labels: gpd.GeoDataFrame,
    ortho: rasterio.io.DatasetReader,
    chm: rasterio.io.DatasetReader | None,
    params: AddMissedParams,
) -> Decision:
    """Apply the rules of the module docstring to every object (masks and labels in the ortho's CRS; the
    NDVI bands in ``params`` resolved, see ``vegetation.ndvi_bands``)."""
    if params.red_band is None or params.nir_band is None:
        raise ValueError("judge needs the red and NIR band numbers (resolve them with ndvi_bands)")
    geoms = masks.geometry.values
    lg = labels.geometry.values
    lg = lg[~(shapely.is_missing(lg) | shapely.is_empty(lg))]
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    shares = overlap_shares(np.where(empty, shapely.Polygon(), geoms), lg)
    chm_crs = chm.crs.to_wkt() if chm is not None else None
    same = chm_crs is None or same_crs(CRS.from_user_input(masks.crs), CRS.from_user_input(chm_crs))

    def to_chm(g: shapely.Geometry) -> shapely.Geometry:
        return g if same else gpd.GeoSeries([g], crs=masks.crs).to_crs(chm_crs).values[0]

    out = Decision()
    for i, g in enumerate(geoms):
        fig: dict[str, float]
        if empty[i]:
            reason, fig = "empty", {}
        else:
            reason, fig = judge_one(g, float(shares[i]), ortho, chm, to_chm, params)
        out.reason.append(reason)
        out.figures.append(fig)
    return out


def completed_labels(
    labels: gpd.GeoDataFrame, masks: gpd.GeoDataFrame, decision: Decision, params: AddMissedParams
) -> gpd.GeoDataFrame:
    """The existing labels (``label_source`` filled where missing) plus the kept objects as ``amg``."""
    old = labels.copy()
    if SOURCE_COLUMN not in old:
        old[SOURCE_COLUMN] = params.existing_source
    old[SOURCE_COLUMN] = old[SOURCE_COLUMN].fillna(params.existing_source)
    keep = np.array([r == "" for r in decision.reason], dtype=bool)
    new = gpd.GeoDataFrame(
        {
            SOURCE_COLUMN: AMG_SOURCE,
            "amg_object_id": masks["object_id"].to_numpy()[keep]
            if "object_id" in masks
            else np.flatnonzero(keep) + 1,
            "amg_score": masks["score"].to_numpy()[keep] if "score" in masks else np.nan,
            "amg_pass": masks["pass"].to_numpy()[keep] if "pass" in masks else -1,
            "ndvi": [f.get("ndvi") for f, k in zip(decision.figures, keep, strict=True) if k],
            "height_p90": [f.get("height_p90") for f, k in zip(decision.figures, keep, strict=True) if k],
        },
        geometry=masks.geometry.values[keep],
        crs=labels.crs,
    )
    if ID_COLUMN in old and len(new):
        start = int(old[ID_COLUMN].max()) if len(old) else 0
        new[ID_COLUMN] = np.arange(start + 1, start + 1 + len(new), dtype=np.int64)
    new["area"] = new.geometry.area
    out = pd.concat([old, new], ignore_index=True) if len(new) else old
    return gpd.GeoDataFrame(out, geometry="geometry", crs=labels.crs)


def summarize(decision: Decision, params: AddMissedParams, chm: bool, labels: int) -> dict:
    """Counts by reason, the rules in words, and the parameters."""
    counts = Counter(decision.reason)
    reasons = REASONS + (CHM_REASONS if chm else ())
    return {
        "objects": len(decision.reason),
        "added": counts.get("", 0),
        "labels_before": labels,
        "labels_after": labels + counts.get("", 0),
        "dropped": {r: counts.get(r, 0) for r in reasons},
        "rules": [
            f"overlaps_label: >= {params.max_overlap:g} of its area under existing labels",
            f"too_small / too_large: area outside [{params.min_area:g}, {params.max_area:g}] m²",
            f"not_compact: area / smallest enclosing circle < {params.min_compactness:g}",
            "no_data: no valid orthophoto pixel inside",
            f"low_ndvi: mean NDVI (bands {params.nir_band}, {params.red_band}) < {params.min_ndvi:g}",
            *([f"too_low: 90th percentile CHM height < {params.min_height:g} m"] if chm else []),
        ],
        "params": params.as_dict(),
    }


def in_raster_crs(gdf: gpd.GeoDataFrame, crs: str, path: str) -> gpd.GeoDataFrame:
    """Reproject to the raster's CRS with one warning line when needed."""
    report = ReadReport()
    out = to_crs(gdf, crs, path, report)
    for note in report.notes:
        log.warning(note)
    return out


def check_projected(crs: str, source: str) -> None:
    """Areas in m² need a projected CRS in metres."""
    c = CRS.from_user_input(crs)
    if c.is_geographic:
        raise InputError(source, "raster CRS is geographic; add-missed needs a projected CRS in metres")


LAYER = "labels"


def read_masks(path: str, source: str) -> gpd.GeoDataFrame:
    """segment-everything objects, checked like any polygon file, except that an empty layer is valid
    (there is then nothing to add)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(source, "masks file not found")
    try:
        gdf = gpd.read_file(p)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(source, f"not a readable vector file ({first})") from exc
    if gdf.crs is None:
        raise InputError(source, "masks have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:3067)")
    kinds = set(gdf.geometry.geom_type.dropna())
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(source, f"masks must be polygons, found {', '.join(sorted(kinds))}")
    return gdf


def add_missed_files(
    labels: str,
    masks: str,
    ortho: str,
    out: str,
    *,
    chm: str | None = None,
    params: AddMissedParams | None = None,
    summary: str | None = None,
    cache_dir: str | None = None,
) -> dict:
    """Validate the inputs, judge every object, write the completed labels and a summary (atomically).

    Labels and masks in another CRS than the orthophoto are reprojected to it (one warning line each).
    """
    from crownsam.common import storage
    from crownsam.common.atomic import atomic_paths, check_output_file
    from crownsam.common.raster import raster_info
    from crownsam.common.vector import integer_ids, read_polygons
    from crownsam.pseudolabel.vegetation import ndvi_bands

    params = params or AddMissedParams()
    if not str(out).lower().endswith(".gpkg"):
        raise InputError(out, "output must be a GeoPackage (.gpkg)")
    check_output_file(out, "--out")
    ortho_local = str(storage.fetch(ortho, cache_dir, what="raster"))
    info = raster_info(ortho_local)
    check_projected(info.crs or "", ortho)
    red, nir = ndvi_bands(info, params.red_band, params.nir_band)
    params = params.replace(red_band=red, nir_band=nir)
    chm_local = str(storage.fetch(chm, cache_dir, what="CHM")) if chm else None
    if chm_local:
        raster_info(chm_local)  # readable, with a CRS
    lab = read_polygons(str(storage.fetch(labels, cache_dir, what="labels file")), "labels")
    lab = in_raster_crs(lab, info.crs or "", labels)
    if ID_COLUMN in lab:  # new labels are numbered after the largest id
        lab[ID_COLUMN] = integer_ids(lab[ID_COLUMN], labels, ID_COLUMN)
    msk = read_masks(str(storage.fetch(masks, cache_dir, what="masks file")), masks)
    msk = in_raster_crs(msk, info.crs or "", masks)
    with (
        open_raster(ortho_local) as o,
        open_raster(chm_local) if chm_local else contextlib.nullcontext() as c,
    ):
        decision = judge(msk, lab, o, c, params)
    completed = completed_labels(lab, msk, decision, params)
    result = summarize(decision, params, chm_local is not None, len(lab))
    result |= {"inputs": {"labels": labels, "masks": masks, "ortho": ortho, "chm": chm}}
    if "untrained" in msk and bool(msk["untrained"].fillna(False).astype(bool).any()):
        from crownsam.pseudolabel.sam2_model import UNTRAINED_WARNING

        result["WARNING"] = UNTRAINED_WARNING
        log.warning("%s: masks come from UNTRAINED SAM2; the added labels are meaningless", masks)
    summary_uri = summary or str(out).removesuffix(".gpkg") + ".summary.json"
    with (
        storage.local_output(out, cache_dir) as out_local,
        storage.local_output(summary_uri, cache_dir) as summary_local,
        atomic_paths(out_local, summary_local) as (gpkg_tmp, summary_tmp),
    ):
        completed.to_file(gpkg_tmp, layer=LAYER, driver="GPKG")
        summary_tmp.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    return result


ARTIFACT_COMPLETED = "completed.gpkg"


def add_missed_artifact(
    labels_dir: str,
    masks_dir: str,
    ortho_uri: str,
    chm_uri: str,
    out_dir: str,
    params: AddMissedParams,
    switch: PipelineFindMissed,
) -> dict[str, float]:
    """The KFP step: labels and masks artifacts (folders or files) into ``out_dir/completed.gpkg`` and its
    summary; returns KFP metrics (added, dropped per reason). With the switch off the labels pass through
    unchanged (copied under their own name)."""
    from crownsam.common.artifacts import label_file

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if not switch.find_missed:
        src = label_file(labels_dir)
        shutil.copyfile(src, Path(out_dir) / Path(src).name)
        return {}
    s = add_missed_files(
        label_file(labels_dir),
        label_file(masks_dir),
        ortho_uri,
        str(Path(out_dir) / ARTIFACT_COMPLETED),
        chm=chm_uri or None,
        params=params,
    )
    return {"added": float(s["added"])} | {f"dropped_{k}": float(v) for k, v in s["dropped"].items()}
