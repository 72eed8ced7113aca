"""Georeferenced crowns on COCO chips: COCO statistics of predicted and refined crowns alike, and the
crowns of a COCO split back as polygons (the validation labels ``--tune`` can use).

* **Crowns on chips.** A chip's pixels are given by its ``crownsam.transform`` and size (``crownsam
  export-coco`` writes them). Each crown that meets the chip becomes a detection there: its mask holds
  the chip pixels whose centre lies in the crown, its box is the mask's pixel extent, its score the
  crown's ``score`` (1 without one). Crowns without a pixel on a chip are left out. The statistics are
  ``crownsam.training.evaluate.coco_metrics`` (pycocotools COCOeval, segm and bbox).
* **Split crowns.** Each annotation's RLE mask is traced on its chip's grid and the pieces of one source
  crown (``source_id``; chips overlap) are joined; the split's area is the union of its chips.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
from rasterio import Affine

from crownsam.common.errors import InputError


def chip_frame(image: Mapping[str, Any], source: str) -> tuple[Affine, int, int]:
    """(transform, width, height) of a COCO image written by ``crownsam export-coco``."""
    meta = image.get("crownsam") or {}
    if "transform" not in meta:
        raise InputError(source, f"image {image.get('id')} has no crownsam.transform (not from export-coco?)")
    return Affine(*[float(v) for v in meta["transform"][:6]]), int(image["width"]), int(image["height"])


def chips_have_frames(gt: Mapping[str, Any]) -> bool:
    """Whether every image of a COCO dict carries its georeference (then crowns can be scored on it)."""
    return bool(gt.get("images")) and all("transform" in (im.get("crownsam") or {}) for im in gt["images"])


def crowns_on_chips(gt: Mapping[str, Any], crowns: gpd.GeoDataFrame, source: str) -> dict[int, dict]:
    """Detections per COCO image id (``boxes`` xyxy, ``scores``, ``masks``) of georeferenced crowns (in
    the chips' CRS); rule in the module docstring."""
    geoms = crowns.geometry.values
    scores = crowns["score"].to_numpy(dtype=float) if "score" in crowns.columns else np.ones(len(crowns))
    tree = shapely.STRtree(geoms)
    out: dict[int, dict] = {}
    for image in gt["images"]:
        t, w, h = chip_frame(image, source)
        x0, y0 = t @ (0, 0)
        x1, y1 = t @ (w, h)
        near = sorted(
            int(i) for i in tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        )
        masks, boxes, sc = [], [], []
        for i in near:
            m = rasterio.features.geometry_mask([geoms[i]], out_shape=(h, w), transform=t, invert=True)
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            masks.append(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            sc.append(scores[i])
        out[int(image["id"])] = {
            "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.asarray(sc, dtype=np.float32),
            "masks": np.asarray(masks, dtype=bool).reshape(-1, h, w),
        }
    return out


def crowns_coco_metrics(gt: Mapping[str, Any], crowns: gpd.GeoDataFrame, source: str) -> dict[str, float]:
    """COCO segm and bbox statistics of georeferenced crowns on the chips of ``gt``."""
    from crownsam.training.evaluate import coco_metrics

    return coco_metrics(gt, crowns_on_chips(gt, crowns, source))


def split_crowns(gt: Mapping[str, Any], crs: str, source: str) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The crowns of a COCO split as polygons (``tree_id`` = ``source_id``) and the split's area (one
    polygon), in ``crs`` (the export's CRS); rule in the module docstring."""
    from pycocotools import mask as mask_util

    frames = {int(im["id"]): chip_frame(im, source) for im in gt.get("images", [])}
    if not frames:
        raise InputError(source, "the split has no chips")
    pieces: dict[int, list[shapely.Geometry]] = {}
    for k, ann in enumerate(gt.get("annotations", [])):
        t, w, h = frames[int(ann["image_id"])]
        seg = ann["segmentation"]
        rle = mask_util.frPyObjects(seg, h, w) if isinstance(seg, list) else dict(seg)
        if isinstance(rle, list):
            rle = mask_util.merge(rle)
        if isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode("ascii")
        m = mask_util.decode(rle).astype(np.uint8)
        shapes = [
            shapely.geometry.shape(g) for g, v in rasterio.features.shapes(m, mask=m > 0, transform=t) if v
        ]
        sid = int(ann.get("source_id", -(k + 1)))
        pieces.setdefault(sid, []).extend(shapes)
    ids = sorted(pieces)
    crowns = gpd.GeoDataFrame(
        {"tree_id": ids},
        geometry=[shapely.make_valid(shapely.union_all(pieces[i])) for i in ids],
        crs=crs,
    )
    boxes = []
    for t, w, h in frames.values():
        x0, y0 = t @ (0, 0)
        x1, y1 = t @ (w, h)
        boxes.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    area = gpd.GeoDataFrame(geometry=[shapely.union_all(boxes)], crs=crs)
    return crowns, area
