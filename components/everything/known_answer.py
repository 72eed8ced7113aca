"""A known-answer model behind SAM2's automatic mask generator, for geometry and mechanics tests.

Only the model is replaced: the point grid, batching, quality filtering (``pred_iou_thresh``,
``stability_score_thresh`` via ``sam2.utils.amg.calculate_stability_score``), box NMS and RLE encoding are
SAM2's own ``SAM2AutomaticMaskGenerator`` code, and our multi-pass loop and seam merge run unchanged. A
one-pixel offset anywhere between the tile grid, the window reads, the point grid, the seam strips and
georeferencing therefore shows up as a mismatch against the true objects.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import rasterio.features
import shapely
import torch
from rasterio import Affine

from crownsam.everything.params import EverythingParams
from crownsam.everything.passes import AmgGenerator, make_amg
from crownsam.everything.tiles import Tile

INSIDE_LOGIT, OUTSIDE_LOGIT = 10, -10
DEFAULT_SCORE = 0.96


class _StandInNet:
    """What ``SAM2ImagePredictor``'s constructor reads from a model (its input size); the predictor it
    builds is then replaced by :class:`KnownAnswerPointModel`."""

    image_size = 1024


class KnownAnswerPointModel:
    """Stands in for SAM2 behind point prompts (the ``SAM2ImagePredictor`` calls that SAM2's generator
    makes: ``set_image``, ``_transforms.transform_coords``, ``_predict``, ``reset_predictor``).

    Rule: a point prompt at pixel ``(floor(x), floor(y))`` of the tile returns the true object whose mask
    holds that pixel (objects rasterised on the tile's read window, pixel-centre rule), as logits +10
    inside and -10 outside (stability score 1), with predicted IoU = the object's ``score`` (default
    0.96). A point on no object returns an empty mask with predicted IoU 0. One mask per point
    (``multimask_output`` is ignored). It answers from the truth, never from the pixels.
    """

    def __init__(self, objects: gpd.GeoDataFrame, transform: Affine, transforms: Any) -> None:
        self._objects = objects.reset_index(drop=True)
        self._index = shapely.STRtree(self._objects.geometry.values)
        scores = self._objects.get("score", DEFAULT_SCORE)
        self._scores = np.concatenate(
            [[0.0], np.broadcast_to(np.asarray(scores, dtype=np.float64), len(self._objects))]
        )
        self._transform = transform
        self._transforms = transforms  # SAM2's own coordinate transform (SAM2Transforms)
        self._ids: torch.Tensor | None = None
        self._orig_hw: list[tuple[int, int]] | None = None
        self.mask_threshold = 0.0
        self.device = torch.device("cpu")
        self.calls = 0

    def start_tile(self, tile: Tile) -> None:
        """Rasterise the objects that reach into the tile's read window (ids 1..n in frame order)."""
        r0, c0, r1, c1 = tile.read
        t = self._transform @ Affine.translation(c0, r0)
        xs, ys = zip(t @ (0, 0), t @ (c1 - c0, r1 - r0), strict=True)
        near = self._index.query(shapely.box(min(xs), min(ys), max(xs), max(ys)))
        shapes = [(self._objects.geometry.values[i], int(i) + 1) for i in sorted(near)]
        ids = (
            rasterio.features.rasterize(
                shapes, out_shape=(r1 - r0, c1 - c0), transform=t, fill=0, dtype="int32"
            )
            if shapes
            else np.zeros((r1 - r0, c1 - c0), dtype=np.int32)
        )
        self._ids = torch.from_numpy(ids)

    def set_image(self, image: np.ndarray) -> None:
        assert self._ids is not None, "start_tile first"
        if tuple(image.shape[:2]) != tuple(self._ids.shape):
            raise ValueError(
                f"image {image.shape[:2]} is not the tile's read window {tuple(self._ids.shape)}"
            )
        self._orig_hw = [tuple(image.shape[:2])]

    def reset_predictor(self) -> None:
        self._orig_hw = None

    def _predict(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self._ids is not None and self._orig_hw is not None, "set_image first"
        self.calls += 1
        h, w = self._orig_hw[0]
        res = float(self._transforms.resolution)
        xy = point_coords[:, 0, :].double()  # (B, 2) in SAM2's 0..resolution frame
        cols = torch.clamp(torch.floor(xy[:, 0] / res * w).long(), 0, w - 1)
        rows = torch.clamp(torch.floor(xy[:, 1] / res * h).long(), 0, h - 1)
        hit = self._ids[rows, cols]  # (B,)
        objects, which = torch.unique(hit, return_inverse=True)
        per_object = (self._ids[None] == objects[:, None, None]) & (objects[:, None, None] > 0)
        logits = per_object[which].to(torch.int8).mul_(INSIDE_LOGIT - OUTSIDE_LOGIT).add_(OUTSIDE_LOGIT)
        logits = logits[:, None]
        if not return_logits:
            logits = logits > self.mask_threshold
        iou = torch.from_numpy(self._scores[hit.numpy()]).float()[:, None]
        low_res = torch.zeros((len(hit), 1, 1, 1))
        return logits, iou, low_res


class KnownAnswerGenerator(AmgGenerator):
    """SAM2's ``SAM2AutomaticMaskGenerator`` with :class:`KnownAnswerPointModel` behind it.

    ``objects``: true objects (polygons in the raster CRS; optional ``score`` column = predicted IoU);
    ``transform``: the raster's affine transform.
    """

    def __init__(self, objects: gpd.GeoDataFrame, transform: Affine, params: EverythingParams) -> None:
        amg = make_amg(_StandInNet(), params)
        amg.predictor = KnownAnswerPointModel(objects, transform, amg.predictor._transforms)
        super().__init__(amg, name="known-answer", untrained=False)

    @property
    def model(self) -> KnownAnswerPointModel:
        return self.amg.predictor

    def start_tile(self, tile: Tile) -> None:
        self.model.start_tile(tile)
