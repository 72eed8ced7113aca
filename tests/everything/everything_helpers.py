"""One synthetic scene and one known-answer segment-everything run over it (used by the fixtures).

The known-answer model (``crownsam.everything.known_answer``) answers every point prompt with the true
object under it, through SAM2's own automatic mask generator, our multi-pass loop and our seam merge.
Objects: the true crowns (predicted IoU 0.90 for every third tree, 0.96 otherwise, so some crowns pass only
after one relaxation of the thresholds), the roofs and the road of the scene's layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio

from crownsam.everything.api import EverythingRequest, base_summary, prepare, summary_path, write_outputs
from crownsam.everything.known_answer import KnownAnswerGenerator
from crownsam.everything.params import EverythingParams
from crownsam.everything.run import LAYER, segment_tiles, write_merged
from crownsam.everything.store import TileStore, run_key
from crownsam.synthetic import generate_scene
from crownsam.synthetic.scene import ScenePaths, scene_layout

SIZE, SEED = 1536, 3
# 3 x 3 tiles of 512 px (+64 px context); 16 x 16 points per tile: one point every ~40 px (1 m)
PARAMS = EverythingParams(tile=512, padding=64, points_per_side=16)
LOW_SCORE, HIGH_SCORE = 0.90, 0.96


@dataclass
class KnownRun:
    scene: ScenePaths
    truth: gpd.GeoDataFrame
    layout_objects: gpd.GeoDataFrame  # roofs and road
    masks: gpd.GeoDataFrame  # merged (the product)
    unmerged: gpd.GeoDataFrame  # the same tiles, seam merge switched off
    summary: dict
    masks_path: Path


def objects_for(scene: ScenePaths, truth: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The known-answer objects: crowns with their scores, plus roofs and the road (score 0.96)."""
    layout = scene_layout(SIZE, SEED)
    extra = gpd.GeoDataFrame(
        {"kind": ["road"] + ["roof"] * len(layout.roofs)},
        geometry=[layout.road.intersection(layout.valid)] + [r.polygon for r in layout.roofs],
        crs=truth.crs,
    )
    crowns = truth.assign(kind="crown", score=np.where(truth["tree_id"] % 3 == 0, LOW_SCORE, HIGH_SCORE))
    objects = pd.concat([crowns, extra.assign(score=HIGH_SCORE)], ignore_index=True)
    objects = gpd.GeoDataFrame(objects, crs=truth.crs)
    return objects, extra


def build_known_run(d: Path) -> KnownRun:
    """Run the known-answer model over the scene in ``d``: merged output, and the same tiles unmerged."""
    scene = generate_scene(d / "scene", size=SIZE, seed=SEED)
    truth = gpd.read_file(scene.truth)
    objects, extra = objects_for(scene, truth)
    with rasterio.open(scene.ortho) as src:
        gen = KnownAnswerGenerator(objects, src.transform, PARAMS)
    out = d / "masks.gpkg"
    req = EverythingRequest(ortho=str(scene.ortho), out=str(out), params=PARAMS, progress=False)
    # the steps of run_segment_everything, keeping the tiles so that they can also be written unmerged
    prep = prepare(req)
    key = run_key(prep.info, prep.stretch, PARAMS, gen.name, None, False)
    store = TileStore(str(d / "parts"), key)
    run = segment_tiles(prep.ortho, prep.grid, prep.tiles, gen, PARAMS, prep.stretch, store)
    summary = base_summary(req, prep, gen, key) | {"tiles_planned": len(prep.tiles)}
    summary = write_outputs(str(out), summary_path(str(out)), summary, prep.grid, store.get, run.tiles, None)
    unmerged = d / "unmerged.gpkg"
    write_merged(
        prep.grid,
        store.get,
        unmerged,
        transform=prep.info.affine,
        crs=prep.info.crs or "",
        model=gen.name,
        untrained=False,
        match=False,
    )
    written = json.loads(Path(summary_path(str(out))).read_text())
    assert written == json.loads(json.dumps(summary, default=str))
    return KnownRun(
        scene=scene,
        truth=truth,
        layout_objects=extra,
        masks=gpd.read_file(out, layer=LAYER),
        unmerged=gpd.read_file(unmerged, layer=LAYER),
        summary=summary,
        masks_path=out,
    )
