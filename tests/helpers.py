"""Small test-data builders shared by the tests: GeoTIFFs, polygon files, bad geometries, damaged files.

Everything is written at run time (into pytest's ``tmp_path``) and is deterministic. Defaults match the
synthetic scene: EPSG:3067, 0.025 m pixels, top-left corner at ``ORIGIN``.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio import Affine

CRS = "EPSG:3067"
GSD = 0.025  # metres per pixel
ORIGIN = (385000.0, 6672000.0)  # top-left corner (x, y) in EPSG:3067

Box = tuple[float, float, float, float]


def write_raster(
    path: str | Path,
    width: int = 600,
    height: int = 500,
    bands: int = 6,
    crs: str | None = CRS,
    *,
    gsd: float = GSD,
    origin: tuple[float, float] = ORIGIN,
    dtype: str = "uint16",
    nodata: float | None = None,
    seed: int = 0,
) -> Path:
    """Write a north-up GeoTIFF of smooth noise (values 0..4000) and return its path.

    ``crs=None`` writes a raster without georeferencing CRS. The pixel grid starts at ``origin``
    (top-left corner) with square ``gsd`` pixels; see :func:`pixel_box` for map coordinates.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    data = np.empty((bands, height, width), dtype=dtype)
    for b in range(bands):
        wave = np.sin(cols / (17.0 + 3 * b)) * np.cos(rows / (23.0 + 2 * b))
        data[b] = np.clip(2000 + 1500 * wave + rng.normal(0, 200, (height, width)), 0, 4000).astype(dtype)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": dtype,
        "transform": Affine(gsd, 0.0, origin[0], 0.0, -gsd, origin[1]),
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return Path(path)


def write_array(
    path: str | Path,
    data: np.ndarray,
    nodata: float | None = None,
    mask: np.ndarray | None = None,
    **creation,
) -> str:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF on the synthetic scene's grid, with ``nodata``, an
    internal ``mask`` band (255 valid, 0 not) and any GDAL creation options (``tiled``, ``blockxsize``,
    ``interleave``, ``compress``, ...); return its path."""
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype,
        "nodata": nodata,
        "crs": CRS,
        "transform": Affine(GSD, 0.0, ORIGIN[0], 0.0, -GSD, ORIGIN[1]),
    }
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **(profile | creation)) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(mask)
    return str(path)


def pixel_box(
    col0: float,
    row0: float,
    col1: float,
    row1: float,
    *,
    gsd: float = GSD,
    origin: tuple[float, float] = ORIGIN,
) -> shapely.Polygon:
    """The map-coordinate rectangle covering pixel columns ``col0..col1`` and rows ``row0..row1``
    of a raster written by :func:`write_raster` with the same ``gsd`` and ``origin``."""
    x0, y0 = origin
    return shapely.box(x0 + col0 * gsd, y0 - row1 * gsd, x0 + col1 * gsd, y0 - row0 * gsd)


def bowtie(
    col: float, row: float, size: float = 40, *, gsd: float = GSD, origin: tuple[float, float] = ORIGIN
) -> shapely.Polygon:
    """A self-intersecting (invalid) bow-tie polygon spanning pixels ``col..col+size``, ``row..row+size``."""
    corners = [(col, row), (col + size, row + size), (col + size, row), (col, row + size), (col, row)]
    return shapely.Polygon([(origin[0] + c * gsd, origin[1] - r * gsd) for c, r in corners])


def two_part(
    col: float, row: float, size: float = 30, *, gsd: float = GSD, origin: tuple[float, float] = ORIGIN
) -> shapely.MultiPolygon:
    """A valid two-part MultiPolygon: two ``size``-pixel squares side by side, one square apart."""
    a = pixel_box(col, row, col + size, row + size, gsd=gsd, origin=origin)
    b = pixel_box(col + 2 * size, row, col + 3 * size, row + size, gsd=gsd, origin=origin)
    return shapely.MultiPolygon([a, b])


def write_segments(
    path: str | Path,
    geoms_or_boxes: Iterable[shapely.Geometry | Box],
    crs: str | None = CRS,
    *,
    ids: Sequence[int] | None = None,
    layer: str = "segments",
    driver: str | None = None,
) -> Path:
    """Write polygons (shapely geometries or ``(xmin, ymin, xmax, ymax)`` boxes, already in ``crs``) and
    return the path.

    A ``segment_id`` column 1..n is written unless ``ids`` gives other values (``ids=()`` with geometries
    writes no id column). ``crs=None`` writes a file without a CRS; no geometries writes a layer with zero
    features. The driver follows the suffix (GPKG for ``.gpkg``) unless ``driver`` is given.
    """
    geoms = [g if isinstance(g, shapely.Geometry) else shapely.box(*g) for g in geoms_or_boxes]
    columns: dict[str, object] = {}
    if ids is None:
        columns["segment_id"] = np.arange(1, len(geoms) + 1, dtype=np.int64)
    elif len(ids):
        columns["segment_id"] = np.asarray(ids, dtype=np.int64)
    gdf = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)
    kwargs = {"driver": driver} if driver else {}
    if not geoms:
        kwargs["geometry_type"] = "Polygon"  # an empty layer still needs a declared geometry type
    with warnings.catch_warnings():  # pyogrio warns when a file gets no CRS: that is the point here
        warnings.filterwarnings("ignore", message=".*crs.*not provided", category=UserWarning)
        gdf.to_file(path, layer=layer, **kwargs)
    return Path(path)


def write_random_bytes(path: str | Path, size: int = 4096, seed: int = 0) -> Path:
    """Write ``size`` random bytes (a corrupt file under any name) and return the path."""
    Path(path).write_bytes(np.random.default_rng(seed).bytes(size))
    return Path(path)


def truncate_copy(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a file cut off mid-write)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def files_in(folder: str | Path) -> list[str]:
    """Names of everything directly in ``folder`` (hidden temporary files included), sorted."""
    return sorted(p.name for p in Path(folder).iterdir())


# ---------------------------------------------------------------------------------------------- browser


def chromium() -> str:
    """Debian's chromium, which the browser checks of reports use."""
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(exe).exists(), "Debian's chromium is needed for the report test (make system-deps)"
    return exe


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a throwaway profile under ``tmp`` (``--dump-dom URL``, ``--screenshot=...``)."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG file's bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])
