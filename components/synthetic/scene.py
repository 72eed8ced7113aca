"""Generate the synthetic forest scene and write it to disk (rasters and GeoPackages, each atomically)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio import features
from shapely.geometry import Polygon, box

from crownsam.common.atomic import atomic_path, check_output_folder
from crownsam.common.errors import InputError
from crownsam.synthetic.coarse import false_segments, plan_segments, vectorise
from crownsam.synthetic.crowns import Tree, place_trees, true_crowns
from crownsam.synthetic.grid import CHM_GSD, CRS, Grid
from crownsam.synthetic.layout import Layout, build_layout
from crownsam.synthetic.noise import smooth_noise
from crownsam.synthetic.render import BANDS, cast_shadows, crown_ids, render_chm, render_ortho

MIN_SIZE = 256
CHM_NODATA = -9999.0
STREAMS = ("layout", "trees", "chm", "ortho", "coarse")


@dataclass(frozen=True)
class ScenePaths:
    """Files of a generated scene."""

    root: Path
    ortho: Path
    chm: Path
    truth: Path
    manual: Path
    test_area: Path
    coarse: Path


def rngs(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per generation stage, all derived from ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, children, strict=True)}


def scene_layout(size: int, seed: int = 0) -> Layout:
    """The layout (valid area, road, roofs) that ``generate_scene(size=size, seed=seed)`` uses."""
    return build_layout(rngs(seed)["layout"], Grid(size))


def place_test_area(grid: Grid, layout: Layout, centroids: np.ndarray, n_manual: int) -> Polygon:
    """Smallest square (side step 0.25 m) around ``(0.4 E, 0.4 E)`` from the top-left holding ``n_manual``
    centroids; it stays 3 % of the scene from the left/top/bottom and 5 % from the nodata edge.

    If no side reaches ``n_manual`` the largest square is used; if that holds no centroid, a small square
    around the centroid nearest the preferred centre.
    """
    xmin, ymin, _, ymax = grid.bounds
    e = grid.extent
    edge = min(x for x, _ in layout.valid.exterior.coords if x > xmin + 0.5 * e)
    lo_x, hi_x = xmin + 0.03 * e, edge - 0.05 * e
    lo_y, hi_y = ymin + 0.03 * e, ymax - 0.03 * e
    cx, cy = xmin + 0.4 * e, ymax - 0.4 * e
    max_side = min(hi_x - lo_x, hi_y - lo_y)

    def square(side: float, x: float, y: float) -> tuple[float, float, float, float]:
        x0 = min(max(x - side / 2, lo_x), hi_x - side)
        y0 = min(max(y - side / 2, lo_y), hi_y - side)
        return x0, y0, x0 + side, y0 + side

    def count(b: tuple[float, float, float, float]) -> int:
        x, y = centroids[:, 0], centroids[:, 1]
        return int(np.count_nonzero((x > b[0]) & (x < b[2]) & (y > b[1]) & (y < b[3])))

    sides = np.arange(1.0, max_side + 1e-9, 0.25)
    for side in sides:
        if count(square(side, cx, cy)) >= n_manual:
            return box(*square(side, cx, cy))
    b = square(sides[-1], cx, cy) if sides.size else square(max_side, cx, cy)
    if count(b) or not len(centroids):
        return box(*b)
    near = centroids[np.argmin(np.hypot(centroids[:, 0] - cx, centroids[:, 1] - cy))]
    return box(*(near[0] - 0.5, near[1] - 0.5, near[0] + 0.5, near[1] + 0.5))


def write_ortho(path: Path, grid: Grid, data: np.ndarray) -> None:
    """The 6-band orthophoto: uint16, nodata 0, 256 px tiles, deflate with horizontal predictor."""
    profile = {
        "width": grid.size,
        "height": grid.size,
        "count": data.shape[0],
        "dtype": "uint16",
        "crs": CRS,
        "transform": grid.transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "num_threads": "ALL_CPUS",
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", driver="GTiff", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(BANDS, start=1):
            dst.set_band_description(i, name)


def write_chm(path: Path, grid: Grid, chm: np.ndarray) -> None:
    """The CHM: float32 metres, nodata -9999, 128 px tiles, deflate with floating-point predictor."""
    n = grid.chm_size
    profile = {
        "width": n,
        "height": n,
        "count": 1,
        "dtype": "float32",
        "crs": CRS,
        "transform": grid.chm_transform,
        "nodata": CHM_NODATA,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "compress": "deflate",
        "predictor": 3,
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", driver="GTiff", **profile) as dst:
        dst.write(chm[None])
        dst.set_band_description(1, "canopy_height_m")


def write_gpkg(path: Path, frame: gpd.GeoDataFrame, layer: str) -> None:
    """Write one GeoPackage layer atomically (the layer is named explicitly, not after the temp file)."""
    with atomic_path(path) as tmp:
        frame.to_file(tmp, driver="GPKG", layer=layer)


def truth_frame(trees: list[Tree], truth: list[Polygon]) -> gpd.GeoDataFrame:
    """Columns tree_id (1..N), height_m, species, area_m2, geometry."""
    return gpd.GeoDataFrame(
        {
            "tree_id": np.arange(1, len(trees) + 1, dtype=np.int64),
            "height_m": [t.height for t in trees],
            "species": [t.species for t in trees],
            "area_m2": [round(p.area, 3) for p in truth],
        },
        geometry=list(truth),
        crs=CRS,
    )


def final_chm(
    rng: np.random.Generator, grid: Grid, layout: Layout, chm: np.ndarray, owner: np.ndarray
) -> np.ndarray:
    """Add noise (crowns +-0.15 m, ground 0..~0.1 m, roofs 0.03 m) and nodata outside the data area.

    A CHM cell is nodata when its centre lies in the orthophoto's nodata strip (or beyond the scene).
    """
    n = grid.chm_size
    noise = smooth_noise(rng, (n, n), 1.5)
    sd = np.where(owner > 0, 0.15, np.where(owner < 0, 0.03, 0.0)).astype(np.float32)
    out = np.maximum(chm + sd * noise, 0.0)
    out = np.where(owner == 0, np.abs(0.04 * noise), out).astype(np.float32)
    valid = features.rasterize(
        [(layout.valid, 1)], out_shape=(n, n), transform=grid.chm_transform, dtype="uint8"
    )
    out[valid == 0] = CHM_NODATA
    return out


def generate_scene(out_dir: str | Path, size: int = 4096, seed: int = 0, n_manual: int = 25) -> ScenePaths:
    """Write a synthetic forest scene of ``size x size`` 2.5 cm pixels into ``out_dir``; seed fixes it all.

    Files: ``ortho.tif`` (6 bands), ``chm.tif`` (0.2 m), ``truth.gpkg`` (visible crowns), ``coarse.gpkg``
    (CHM-like segments with errors), ``test_area.gpkg`` and ``manual.gpkg`` (truth crowns whose centroid
    lies in the test area, about ``n_manual`` of them).
    """
    if not isinstance(size, int | np.integer) or size < MIN_SIZE:
        raise InputError(
            "--size", f"scene size must be an integer of at least {MIN_SIZE} pixels, got {size!r}"
        )
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {seed!r}")
    if not isinstance(n_manual, int | np.integer) or n_manual < 1:
        raise InputError("--n-manual", f"must be a positive integer, got {n_manual!r}")
    check_output_folder(out_dir, "OUT_DIR")
    root = Path(out_dir)
    paths = ScenePaths(
        root=root,
        ortho=root / "ortho.tif",
        chm=root / "chm.tif",
        truth=root / "truth.gpkg",
        manual=root / "manual.gpkg",
        test_area=root / "test_area.gpkg",
        coarse=root / "coarse.gpkg",
    )
    root.mkdir(parents=True, exist_ok=True)
    grid = Grid(int(size))
    rng = rngs(int(seed))
    layout = build_layout(rng["layout"], grid)
    trees, truth = true_crowns(place_trees(rng["trees"], grid, layout), layout.valid)

    chm, owner = render_chm(grid, trees, layout)
    shadow = cast_shadows(chm, owner)
    chm_out = final_chm(rng["chm"], grid, layout, chm, owner)
    write_chm(paths.chm, grid, chm_out)

    cid = crown_ids(grid, trees, truth)
    write_ortho(paths.ortho, grid, render_ortho(rng["ortho"], grid, trees, cid, layout, shadow))
    del cid

    frame = truth_frame(trees, truth)
    write_gpkg(paths.truth, frame, "truth")
    centroids = np.array([[p.centroid.x, p.centroid.y] for p in truth]).reshape(-1, 2)
    area = place_test_area(grid, layout, centroids, n_manual)
    write_gpkg(paths.test_area, gpd.GeoDataFrame({"name": ["test"]}, geometry=[area], crs=CRS), "test_area")
    inside = np.array([area.contains(p.centroid) for p in truth], dtype=bool)
    write_gpkg(paths.manual, frame[inside].reset_index(drop=True), "manual")

    crng = rng["coarse"]
    segs = plan_segments(crng, truth, [t.height for t in trees], list(frame["tree_id"]))
    ground = (owner == 0) & (chm_out != CHM_NODATA)
    road_cells = features.rasterize(
        [(layout.road.buffer(CHM_GSD), 1)], out_shape=owner.shape, transform=grid.chm_transform
    )
    segs = false_segments(crng, grid, layout, ground & (road_cells == 0), len(trees)) + segs
    rows = vectorise(grid, segs, chm_out != CHM_NODATA)
    coarse = gpd.GeoDataFrame(
        {
            "segment_id": np.array([r["segment_id"] for r in rows], dtype=np.int64),
            "source_tree_ids": [r["source_tree_ids"] for r in rows],
            "error": [r["error"] for r in rows],
        },
        geometry=[r["geometry"] for r in rows],
        crs=CRS,
    )
    write_gpkg(paths.coarse, coarse, "coarse")
    return paths
