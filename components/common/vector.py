"""Vector I/O: reading crown polygons with validation, writing GeoPackages atomically."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from crownsam.common.atomic import atomic_path
from crownsam.common.errors import InputError, vector_errors

log = logging.getLogger(__name__)

ID_COLUMN = "segment_id"


@dataclass
class ReadReport:
    """What reading a polygon file changed or noticed, for the run summary."""

    reprojected_from: str | None = None
    ids_assigned: bool = False
    repaired: list[int] = field(default_factory=list)
    exploded: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_polygons(path: str | Path, what: str = "polygons") -> gpd.GeoDataFrame:
    """Read a vector file or raise InputError (missing, unreadable, empty, no CRS, not polygons)."""
    p = Path(path)
    if not p.exists():
        raise InputError(path, f"{what} file not found")
    try:
        gdf = gpd.read_file(p)
    except vector_errors() as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"not a readable vector file ({first})") from exc
    if len(gdf) == 0:
        raise InputError(path, f"{what} file is empty (no features)")
    if gdf.crs is None:
        raise InputError(path, f"{what} have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:3067)")
    kinds = set(gdf.geometry.geom_type.dropna())
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(path, f"{what} must be polygons, found {', '.join(sorted(kinds))}")
    return gdf


def crs_label(crs: CRS) -> str:
    """Short name for messages: ``EPSG:3067`` when there is a code, else the CRS name."""
    code = crs.to_epsg(min_confidence=70)
    return f"EPSG:{code}" if code else crs.name


def same_crs(a: CRS, b: CRS) -> bool:
    """Equal CRSs, ignoring axis order and WKT flavour differences (GPKG vs GeoTIFF encodings)."""
    if a.equals(b, ignore_axis_order=True):
        return True
    ca, cb = a.to_epsg(min_confidence=70), b.to_epsg(min_confidence=70)
    return ca is not None and ca == cb


def to_crs(gdf: gpd.GeoDataFrame, crs_text: str, path: str | Path, report: ReadReport) -> gpd.GeoDataFrame:
    """Reproject to the raster's CRS when needed, and record that it happened."""
    target = CRS.from_user_input(crs_text)
    source = CRS.from_user_input(gdf.crs)
    if same_crs(source, target):
        return gdf
    report.reprojected_from = crs_label(source)
    msg = f"{path}: reprojected from {crs_label(source)} to the raster's CRS {crs_label(target)}"
    report.notes.append(msg)  # callers log the notes: one warning line
    return gdf.to_crs(target)


def integer_ids(values: pd.Series, source: str | Path, column: str) -> np.ndarray:
    """The values of an id column as int64, or InputError naming the file, the column and one bad value:
    every value must be a whole number (integers, or floats with no fraction, as some GIS tools write
    them); text, booleans, empty values, fractions and infinities are refused. Duplicates are refused
    too (ids link labels to segments)."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        example = repr(values.iloc[0]) if len(values) else "nothing"
        raise InputError(source, f"column {column} must hold integers; found {example} (not a number)")
    numeric = values.to_numpy(dtype=np.float64, na_value=np.nan)
    whole = np.isfinite(numeric) & (np.mod(numeric, 1) == 0)
    if not whole.all():
        bad = values.iloc[int(np.flatnonzero(~whole)[0])]
        what = "an empty value" if pd.isna(bad) else str(bad)
        raise InputError(source, f"column {column} must hold whole numbers; found {what}")
    ids = numeric.astype(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(
            source, f"{column} values must be unique; {int(uniq[counts > 1][0])} appears more than once"
        )
    return ids


def ensure_ids(gdf: gpd.GeoDataFrame, path: str | Path, report: ReadReport) -> gpd.GeoDataFrame:
    """Check ``segment_id`` (unique integers) or assign 1..n in file order when the column is missing."""
    if ID_COLUMN not in gdf.columns:
        gdf = gdf.copy()
        gdf[ID_COLUMN] = np.arange(1, len(gdf) + 1, dtype=np.int64)
        report.ids_assigned = True
        report.notes.append(f"{path}: no {ID_COLUMN} column; assigned 1..{len(gdf)} in file order")
        return gdf
    ids = integer_ids(gdf[ID_COLUMN], path, ID_COLUMN)
    gdf = gdf.copy()
    gdf[ID_COLUMN] = ids
    return gdf


def polygon_parts(geom: shapely.Geometry | None) -> list[shapely.Polygon]:
    """The polygons with area inside any geometry (collections searched; lines and points dropped)."""
    if geom is None:
        return []
    parts, stack = [], [geom]
    while stack:
        g = stack.pop()
        if g.geom_type == "Polygon":
            if g.area > 0:
                parts.append(g)
        elif hasattr(g, "geoms"):
            stack.extend(reversed(list(g.geoms)))
    return parts


def polygonal(geom: shapely.Geometry | None) -> shapely.Geometry:
    """The polygonal part of any geometry (e.g. a ``make_valid`` result or an intersection): one Polygon,
    their union as a MultiPolygon, or an empty Polygon when there is none."""
    parts = polygon_parts(geom)
    if not parts:
        return shapely.Polygon()
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)


def largest_polygon(geom: shapely.Geometry | None) -> shapely.Polygon:
    """The largest polygon inside any geometry; an empty (falsy) Polygon if there is none."""
    parts = polygon_parts(geom)
    return max(parts, key=lambda q: q.area) if parts else shapely.Polygon()


def check_geometries(
    gdf: gpd.GeoDataFrame, path: str | Path, report: ReadReport, fix: bool
) -> gpd.GeoDataFrame:
    """Refuse (or, with ``fix``, repair) invalid and multi-part (two or more parts) polygons.

    Repair: ``shapely.make_valid`` then keep polygon parts; a multi-part result keeps its largest part.
    Null or empty geometries are left for the caller to skip with a reason.
    """
    geoms = gdf.geometry.values
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    invalid = present & ~shapely.is_valid(geoms)
    # One-part MultiPolygons are plain polygons (GPKG writers promote mixed layers to Multi): not flagged.
    multi = present & (shapely.get_type_id(geoms) == shapely.GeometryType.MULTIPOLYGON)
    multi &= shapely.get_num_geometries(geoms) > 1
    if not fix:
        for mask, problem in ((invalid, "invalid"), (multi, "multi-part")):
            if mask.any():
                ids = gdf.loc[mask, ID_COLUMN].head(5).tolist()
                raise InputError(
                    path,
                    f"{int(mask.sum())} {problem} geometries (segment_id {', '.join(map(str, ids))}"
                    f"{', ...' if mask.sum() > 5 else ''}); pass --fix-geometries to repair them",
                )
        return gdf
    gdf = gdf.copy()
    fixed = list(geoms)
    for i in np.flatnonzero(invalid | multi):
        g = shapely.make_valid(fixed[i]) if invalid[i] else fixed[i]
        fixed[i] = largest_polygon(g)
        sid = int(gdf[ID_COLUMN].iloc[i])
        (report.repaired if invalid[i] else report.exploded).append(sid)
    gdf = gdf.set_geometry(gpd.GeoSeries(fixed, index=gdf.index, crs=gdf.crs))
    if report.repaired or report.exploded:
        report.notes.append(
            f"{path}: repaired {len(report.repaired)} invalid and reduced {len(report.exploded)} "
            "multi-part geometries to their largest polygon"
        )
    return gdf


def read_segments(
    path: str | Path, crs_text: str, *, fix_geometries: bool = False
) -> tuple[gpd.GeoDataFrame, ReadReport]:
    """Read coarse segments for a raster: validated, in the raster's CRS, with unique ``segment_id``."""
    report = ReadReport()
    gdf = read_polygons(path, "segments")
    gdf = ensure_ids(gdf, path, report)
    gdf = check_geometries(gdf, path, report, fix_geometries)
    gdf = to_crs(gdf, crs_text, path, report)
    return gdf.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True), report


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Stream a file's SHA-256 (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_gpkg(gdf: gpd.GeoDataFrame, target: str | Path, layer: str) -> Path:
    """Write one GeoPackage layer atomically (temporary file, then rename)."""
    with atomic_path(target) as tmp:
        gdf.to_file(tmp, layer=layer, driver="GPKG")
    return Path(target)
