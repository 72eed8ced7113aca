"""Deliberately degraded "predictions" made from true crowns, by a stated recipe (test data).

Crown ``k`` (0-based, in ``tree_id`` order), with ``r = sqrt(area / pi)`` its equivalent radius:

* ``k % 4 == 0``: **eroded** by ``0.2 r`` (``buffer(-0.2 r)``; area about 0.64 of the crown);
* ``k % 4 == 1``: **dilated** by ``0.2 r`` (area about 1.44; it may cover its neighbours);
* ``k % 4 == 2``: **shifted** by ``0.3 r`` east and ``0.2 r`` south;
* ``k % 4 == 3``: **split** into its west and east halves by the north-south line through its centroid
  (two predictions; the west half keeps the crown's order).

Each prediction gets ``score = 0.5 + 0.4 * ((37 k + 11 j) % 100) / 100`` (``j`` = 0, or 1 for the east
half), so priorities are mixed, and a ``truth_id`` column (the crown it came from; the refinement never
reads it). Parts smaller than 1 % of the crown are dropped (none on the synthetic scenes).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from crownsam.common.vector import largest_polygon
from crownsam.synthetic import ScenePaths, generate_scene

KINDS = ("eroded", "dilated", "shifted", "split")


def degrade(truth: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The recipe of the module docstring; columns ``truth_id``, ``kind``, ``score``."""
    rows, geoms = [], []
    t = truth.sort_values("tree_id", kind="stable").reset_index(drop=True)
    for k, (tid, g) in enumerate(zip(t["tree_id"], t.geometry, strict=True)):
        r = float(np.sqrt(g.area / np.pi))
        kind = KINDS[k % 4]
        if kind == "eroded":
            parts = [g.buffer(-0.2 * r)]
        elif kind == "dilated":
            parts = [g.buffer(0.2 * r)]
        elif kind == "shifted":
            parts = [shapely.affinity.translate(g, 0.3 * r, -0.2 * r)]
        else:
            cx = g.centroid.x
            x0, y0, x1, y1 = g.bounds
            parts = [
                g.intersection(shapely.box(x0 - 1, y0 - 1, cx, y1 + 1)),
                g.intersection(shapely.box(cx, y0 - 1, x1 + 1, y1 + 1)),
            ]
        for j, p in enumerate(parts):
            p = largest_polygon(shapely.make_valid(p))
            if p.is_empty or p.area < 0.01 * g.area:
                continue
            rows.append(
                {"truth_id": int(tid), "kind": kind, "score": 0.5 + 0.4 * ((37 * k + 11 * j) % 100) / 100}
            )
            geoms.append(p)
    return gpd.GeoDataFrame(rows, geometry=geoms, crs=truth.crs)


def degraded_scene(folder: Path, size: int, seed: int) -> tuple[ScenePaths, gpd.GeoDataFrame]:
    """A synthetic scene in ``folder / "scene"``, its true crowns, and their :func:`degrade` written to
    ``folder / "pred.gpkg"``."""
    scene = generate_scene(folder / "scene", size=size, seed=seed)
    truth = gpd.read_file(scene.truth)
    degrade(truth).to_file(folder / "pred.gpkg")
    return scene, truth
