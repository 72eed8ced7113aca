"""Tiny COCO exports in the ``crownsam export-coco`` format, built at run time for the training tests.

A georeferenced uint16 orthophoto (EPSG:3067, 2.5 cm) of bright elliptical crowns on a darker textured
ground, its true crowns as polygons, and ``chip``-px chips cut on a grid: the last chip row is the test
split, one chip of the first row the val split, the rest train. Chips are stretched with the scene-wide
2-98 % stretch exactly as the exporter does; masks are pixel-centre-in-ellipse, pycocotools RLE.
Also the tests' small training configuration (:func:`small_config`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from PIL import Image
from rasterio import Affine

from crownsam.training.config import TrainConfig

CRS = "EPSG:3067"
GSD = 0.025
ORIGIN = (385000.0, 6672000.0)
TRANSFORM = Affine(GSD, 0.0, ORIGIN[0], 0.0, -GSD, ORIGIN[1])


@dataclass
class Ellipse:
    cx: float  # pixel column of the centre
    cy: float  # pixel row of the centre
    a: float  # half-axis along columns (px)
    b: float  # half-axis along rows (px)

    def mask(self, height: int, width: int, row_off: int = 0, col_off: int = 0) -> np.ndarray:
        rows, cols = np.mgrid[0:height, 0:width]
        x = (cols + col_off + 0.5 - self.cx) / self.a
        y = (rows + row_off + 0.5 - self.cy) / self.b
        return x * x + y * y <= 1.0

    def polygon(self, transform: Affine = TRANSFORM) -> shapely.Polygon:
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        cols, rows = self.cx + self.a * np.cos(t), self.cy + self.b * np.sin(t)
        return shapely.Polygon([transform @ (c, r) for c, r in zip(cols, rows, strict=True)])


@dataclass
class Synth:
    root: Path  # the COCO export folder
    ortho: Path
    truth: Path  # all crowns (GeoPackage, segment_id)
    area: Path  # the test area (last chip row)
    manual: Path  # crowns whose centroid lies in the test area
    crowns: list[Ellipse]
    bands: tuple[int, ...]
    chip: int


def place_crowns(height: int, width: int, rng: np.random.Generator, spacing: int = 42) -> list[Ellipse]:
    """Crowns on a jittered grid, none touching another."""
    out = []
    for cy in range(spacing // 2, height - 8, spacing):
        for cx in range(spacing // 2, width - 8, spacing):
            a, b = rng.uniform(9, 16), rng.uniform(9, 16)
            out.append(Ellipse(cx + rng.uniform(-4, 4), cy + rng.uniform(-4, 4), a, b))
    return out


def write_ortho(path: Path, height: int, width: int, count: int, crowns: list[Ellipse], seed: int) -> None:
    rng = np.random.default_rng(seed)
    inside = np.zeros((height, width), dtype=bool)
    for e in crowns:
        inside |= e.mask(height, width)
    data = np.empty((count, height, width), dtype=np.uint16)
    for b in range(count):
        ground = 900 + 150 * b + rng.normal(0, 120, (height, width))
        crown = 2600 + 200 * b + rng.normal(0, 250, (height, width))
        data[b] = np.clip(np.where(inside, crown, ground), 0, 4000).astype(np.uint16)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": "uint16",
        "crs": CRS,
        "transform": TRANSFORM,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def make_export(
    base: Path,
    *,
    chip: int = 128,
    grid: tuple[int, int] = (2, 3),
    count: int = 3,
    bands: tuple[int, ...] | None = None,
    seed: int = 0,
    empty_train_labels: bool = False,
    classes: int = 0,
) -> Synth:
    """Write ``base/ortho.tif``, ``base/truth.gpkg``, ``base/area.gpkg``, ``base/manual.gpkg`` and the COCO
    export ``base/coco``. ``grid = (chip rows, chip columns)``; ``bands`` are the exported orthophoto
    bands (default 1..count; PNG for 3 bands, TIFF otherwise). ``classes`` > 1: categories
    ``class_0..`` as ``export-coco --class-column`` writes them, crown k in class k mod ``classes`` (every
    split, the test split too, as when the test crowns carry the class column)."""
    from pycocotools import mask as mask_util

    from crownsam.common.raster import apply_stretch, compute_stretch

    base.mkdir(parents=True, exist_ok=True)
    rows, cols = grid
    height, width = rows * chip, cols * chip
    bands = tuple(bands or range(1, count + 1))
    rng = np.random.default_rng(seed)
    crowns = place_crowns(height, width, rng)
    ortho = base / "ortho.tif"
    write_ortho(ortho, height, width, count, crowns, seed)
    stretch = compute_stretch(ortho, bands)
    with rasterio.open(ortho) as src:
        data = src.read(list(bands))
    root = base / "coco"
    cats = (
        [
            {"id": c + 1, "name": f"class_{c}", "supercategory": "tree", "class_value": c}
            for c in range(classes)
        ]
        if classes > 1
        else [{"id": 1, "name": "tree", "supercategory": "tree"}]
    )
    splits: dict[str, dict] = {
        s: {"images": [], "annotations": [], "categories": [dict(c) for c in cats]}
        for s in ("train", "val", "test")
    }
    ext = "png" if len(bands) == 3 else "tif"
    ann_id = 1
    for r in range(rows):
        for c in range(cols):
            split = "test" if r == rows - 1 else "val" if (r, c) == (0, cols - 1) else "train"
            image_id = r * cols + c + 1
            ro, co = r * chip, c * chip
            img = apply_stretch(data[:, ro : ro + chip, co : co + chip], stretch)
            name = f"images/{split}/r{ro}_c{co}.{ext}"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            if ext == "png":
                Image.fromarray(img, "RGB").save(root / name)
            else:
                import tifffile

                tifffile.imwrite(root / name, img, photometric="minisblack", planarconfig="contig")
            t = TRANSFORM @ Affine.translation(co, ro)
            splits[split]["images"].append(
                {
                    "id": image_id,
                    "file_name": name,
                    "width": chip,
                    "height": chip,
                    "crownsam": {
                        "row_off": ro,
                        "col_off": co,
                        "transform": list(t)[:6],
                        "crs": CRS,
                        "bands": list(bands),
                        "split": split,
                    },
                }
            )
            if empty_train_labels and split == "train":
                continue
            for k, e in enumerate(crowns):
                m = e.mask(chip, chip, ro, co)
                if m.sum() < 20:
                    continue
                rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                ys, xs = np.nonzero(m)
                splits[split]["annotations"].append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": k % classes + 1 if classes > 1 else 1,
                        "segmentation": rle,
                        "area": int(m.sum()),
                        "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
                        "iscrowd": 0,
                        "source_id": k + 1,
                    }
                )
                ann_id += 1
    for s, d in splits.items():
        (root / f"{s}.json").write_text(json.dumps(d))
    summary = {
        "format": "crownsam-coco/1",
        "crs": CRS,
        "bands": list(bands),
        "chip": chip,
        "image_format": ext,
        "stretch": {
            "percentiles": [2.0, 98.0],
            "per_band": [
                {"band": b, "low": lo, "high": hi} for b, (lo, hi) in zip(bands, stretch, strict=True)
            ],
        },
    }
    (root / "export.json").write_text(json.dumps(summary, indent=2))
    polys = [e.polygon() for e in crowns]
    truth = base / "truth.gpkg"
    gpd.GeoDataFrame({"segment_id": np.arange(1, len(polys) + 1)}, geometry=polys, crs=CRS).to_file(truth)
    area_geom = shapely.box(*(TRANSFORM @ (0, height)), *(TRANSFORM @ (width, height - chip)))
    area = base / "area.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[area_geom], crs=CRS).to_file(area)
    inside = [i for i, p in enumerate(polys) if area_geom.covers(p.centroid)]
    manual = base / "manual.gpkg"
    gpd.GeoDataFrame(
        {"tree_id": np.arange(1, len(inside) + 1)}, geometry=[polys[i] for i in inside], crs=CRS
    ).to_file(manual)
    return Synth(root, ortho, truth, area, manual, crowns, bands, chip)


REGISTERED = "crownsam-test-maskrcnn"
# Smaller proposal and detection budgets than torchvision's defaults: same code paths, less CPU.
TEST_MODEL_KWARGS: dict[str, Any] = {
    "rpn_pre_nms_top_n_train": 300,
    "rpn_post_nms_top_n_train": 150,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "box_batch_size_per_image": 128,
    "box_detections_per_img": 10,
}


def small_config(synth: Synth, out: Path, **kw: Any) -> TrainConfig:
    """The tests' training configuration: 2 steps of batch 1 on 128-px chips."""
    base = {
        "coco_dir": str(synth.root),
        "out_dir": str(out),
        "label_source": "synthetic",
        "max_iters": 2,
        "batch_size": 1,
        "seed": 3,
        "device": "cpu",
        "progress": False,
        "model_kwargs": dict(TEST_MODEL_KWARGS),
        "experiment": "crownsam-tests",
    }
    return TrainConfig(**(base | kw))
