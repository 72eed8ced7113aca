"""Crown polygon -> COCO instance annotation for one chip: clipping, the sliver rule, RLE masks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely
from pycocotools import mask as mask_util
from rasterio import Affine

from crownsam.common.vector import polygonal

CATEGORY = {"id": 1, "name": "tree", "supercategory": "tree"}


@dataclass(frozen=True)
class SliverRule:
    """Which clipped crowns are kept.

    A crown cut by the chip edge (or, in test chips, by the test region) is kept when its clipped
    part keeps at least ``min_fraction`` of the crown's full area (map units) **and** its mask has at least
    ``min_px`` pixels. An uncut crown is kept when its mask has at least ``min_px`` pixels.
    """

    min_fraction: float = 0.2
    min_px: int = 64

    def describe(self) -> str:
        return (
            f"a crown cut by the chip edge (test chips: by the test region) is dropped as a sliver when "
            f"its clipped part has < {self.min_fraction:g} of the crown's full area or its mask < "
            f"{self.min_px} px; an uncut crown whose mask has < {self.min_px} px is dropped as tiny"
        )


def rasterize_local(geom: shapely.Geometry, transform: Affine, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of ``geom`` (map coordinates) on the grid ``transform``.

    A pixel is in the mask when its centre lies inside the polygon (GDAL's rule). Only the polygon's
    bounding box is rasterised; the rest of the array is False.
    """
    out = np.zeros((height, width), dtype=bool)
    if geom.is_empty:
        return out
    inv = ~transform
    pix = shapely.affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
    xmin, ymin, xmax, ymax = pix.bounds
    c0, r0 = max(math.floor(xmin), 0), max(math.floor(ymin), 0)
    c1, r1 = min(math.ceil(xmax), width), min(math.ceil(ymax), height)
    if c1 <= c0 or r1 <= r0:
        return out
    sub = rasterio.features.rasterize(
        [(pix, 1)], out_shape=(r1 - r0, c1 - c0), transform=Affine.translation(c0, r0), dtype="uint8"
    )
    out[r0:r1, c0:c1] = sub.astype(bool)
    return out


def encode(mask: np.ndarray) -> dict:
    """pycocotools RLE of a boolean mask, with ``counts`` as an ASCII string (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def annotate(
    geom: shapely.Geometry,
    clip: shapely.Geometry,
    transform: Affine,
    height: int,
    width: int,
    rule: SliverRule,
) -> tuple[dict | None, str]:
    """The annotation body (``segmentation``, ``area``, ``bbox``) of crown ``geom`` clipped to ``clip``.

    Returns ``(body, "kept")`` or ``(None, reason)`` with reason ``"outside"`` (no area in the chip),
    ``"sliver"`` or ``"tiny"`` (see :class:`SliverRule`). ``area`` is the mask's pixel count and ``bbox``
    ``[x, y, w, h]`` the mask's pixel extent, both from pycocotools, so they agree with the RLE exactly.
    """
    full = geom.area
    part = polygonal(shapely.intersection(geom, clip))  # drop lines and points where edges touch
    if part.is_empty or part.area <= 0:
        return None, "outside"
    cut = part.area < full * (1.0 - 1e-9)
    if cut and part.area < rule.min_fraction * full:
        return None, "sliver"
    mask = rasterize_local(part, transform, height, width)
    if int(mask.sum()) < rule.min_px:
        return None, "sliver" if cut else "tiny"
    rle = encode(mask)
    coco_rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    area = float(mask_util.area(coco_rle))
    bbox = [float(v) for v in mask_util.toBbox(coco_rle)]
    return {"segmentation": rle, "area": area, "bbox": bbox}, "kept"
