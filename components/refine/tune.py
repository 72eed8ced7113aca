"""``--tune``: t1 and t2 of SESSRS chosen on validation crowns, as the SESSRS authors do (a grid search that
keeps the best pair; their ``sessrs_t1_t2.py`` / ``get_best_t1_t2.py``).

* **Validation crowns.** Manual crowns (``--tune-truth``, optionally limited to ``--tune-area``), or the
  labels of a COCO export's ``val`` split traced back to polygons (``--tune-coco``; its area is the union
  of the val chips; ``crownsam.refine.chips.split_crowns``).
* **Score.** For every pair ``(t1, t2)`` of ``t1_grid × t2_grid``, the SESSRS rule runs on the predicted
  crowns that meet the validation area (the extent of the validation crowns without an area), and the
  mean per-crown Jaccard against the validation crowns is computed by ``crownsam.evaluation``
  (Hungarian matching; crowns whose centroid lies in the area).
* **Choice.** The pair with the highest mean Jaccard; ties go to the pair met first in grid order
  (``t1`` ascending, then ``t2`` ascending). The whole grid, the predictions' own mean Jaccard and the
  choice go into the summary (and MLflow).
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from rasterio import Affine

from crownsam.common.errors import InputError
from crownsam.common.vector import read_polygons, same_crs
from crownsam.refine.params import RefineParams
from crownsam.refine.sessrs import overlaps, sessrs


def read_validation(
    truth: str | None, area: str | None, coco: str | None, crs: str
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None, str]:
    """Validation crowns and area in ``crs``, and where they come from in words."""
    if bool(truth) == bool(coco):
        raise InputError(None, "--tune needs validation crowns: --tune-truth FILE or --tune-coco DIR")
    if coco:
        from crownsam.refine.chips import split_crowns
        from crownsam.training.data import load_coco

        path = Path(coco) / "val.json"
        if not path.is_file():
            raise InputError(coco, "no val.json here; is this a `crownsam export-coco` folder?")
        gt = load_coco(path)
        try:
            export = json.loads((Path(coco) / "export.json").read_text())
            export_crs = export["crs"]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(coco, f"export.json with the export's crs is needed ({exc})") from exc
        crowns, region = split_crowns(gt, export_crs, str(path))
        if not len(crowns):
            raise InputError(path, "the val split has no labelled crowns to tune on")
        return _to(crowns, crs), _to(region, crs), f"COCO val labels ({path})"
    assert truth is not None
    crowns = read_polygons(truth, "validation crowns")
    region = read_polygons(area, "validation area") if area else None
    return _to(crowns, crs), _to(region, crs) if region is not None else None, f"validation crowns ({truth})"


def _to(gdf: gpd.GeoDataFrame, crs: str) -> gpd.GeoDataFrame:
    if not same_crs(CRS.from_user_input(gdf.crs), CRS.from_user_input(crs)):
        return gdf.to_crs(crs)
    return gdf


def tune(
    crowns: gpd.GeoDataFrame,
    objects: np.ndarray,
    truth: gpd.GeoDataFrame,
    area: gpd.GeoDataFrame | None,
    params: RefineParams,
    transform: Affine,
    width: int,
    height: int,
) -> dict:
    """Grid search of the module docstring. ``crowns`` are in priority order with ``crown_id``, in the
    raster's CRS like ``objects``, ``truth`` and ``area``."""
    from crownsam.evaluation.api import evaluate_label_sets

    region = shapely.union_all(area.geometry.values) if area is not None else shapely.box(*truth.total_bounds)
    near = crowns[crowns.geometry.intersects(region)].reset_index(drop=True)
    if not len(near):
        raise InputError(None, "no predicted crown meets the validation area: nothing to tune on")
    geoms = near.geometry.values
    objs = np.asarray(objects, dtype=object)
    if len(objs):
        bounds = shapely.box(*near.total_bounds)
        objs = objs[shapely.intersects(objs, bounds)]
    ids = near["crown_id"].to_numpy()

    def score(kept: list[shapely.Geometry | None]) -> tuple[float, float]:
        keep = [i for i, g in enumerate(kept) if g is not None]
        gdf = gpd.GeoDataFrame({"crown_id": ids[keep]}, geometry=[kept[i] for i in keep], crs=crowns.crs)
        ev = evaluate_label_sets(truth, {"refined": gdf}, area, label_id_column="crown_id", n_boot=1)
        return float(ev.metrics["jaccard_mean/refined"]), float(ev.metrics["f1/refined"])

    raw_j, raw_f1 = score(list(geoms))
    ov = overlaps(geoms, objs)
    cache: dict = {}
    grid = []
    for t1 in sorted(params.t1_grid):
        for t2 in sorted(params.t2_grid):
            res = sessrs(
                geoms, objs, t1, t2, params.max_objects, transform, width, height, ov=ov, cache=cache
            )
            j, f1 = score(res.geoms)
            grid.append(
                {"t1": t1, "t2": t2, "jaccard_mean": j, "f1": f1, "crowns_replaced": int(res.refined.sum())}
            )
    best = max(range(len(grid)), key=lambda k: (grid[k]["jaccard_mean"], -k))
    n_trees = int(len(truth) if area is None else truth.centroid.within(region).sum())
    return {
        "t1": grid[best]["t1"],
        "t2": grid[best]["t2"],
        "jaccard_mean": grid[best]["jaccard_mean"],
        "prediction_jaccard_mean": raw_j,
        "prediction_f1": raw_f1,
        "crowns": len(near),
        "validation_crowns": n_trees,
        "grid": grid,
    }
