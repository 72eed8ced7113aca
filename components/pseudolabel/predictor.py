"""The box-prompt predictor interface, and a deterministic known-answer predictor for geometry tests."""

from __future__ import annotations

from typing import Protocol

import geopandas as gpd
import numpy as np
import rasterio.features
from rasterio import Affine
from scipy import ndimage

from crownsam.tiling.plan import WindowTask


class BoxPredictor(Protocol):
    """What the pseudolabeling loop needs from a segmenter (SAM2, or a known-answer stand-in).

    ``set_image`` once per window, then ``predict_boxes`` any number of times. Boxes are XYXY in window
    pixels; ``regions`` are ``(r0, c0, r1, c1)`` window-pixel crops in which each mask is wanted.
    """

    name: str
    untrained: bool
    forward_seconds: float

    def set_image(self, image: np.ndarray, window: WindowTask) -> None: ...

    def predict_boxes(self, boxes: np.ndarray, regions: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Return one boolean mask per box (shaped like its region) and one score per box."""
        ...


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one XYXY box with each row of ``boxes``."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


class KnownAnswerPredictor:
    """Returns the true crown mask for each box: the truth crown whose bounding box best matches the
    prompt box (highest box IoU), cut to the requested region.

    Rasterises the truth polygons on each window's grid (pixel centres), so a pseudolabel that is off by
    a pixel anywhere in the tiling, box or georeferencing chain no longer matches the truth exactly.
    """

    name = "known-answer"
    untrained = False

    def __init__(self, truth: gpd.GeoDataFrame, transform: Affine) -> None:
        self._truth = truth.reset_index(drop=True)
        self._transform = transform
        self._ids: np.ndarray | None = None
        self.forward_seconds = 0.0

    def set_image(self, image: np.ndarray, window: WindowTask) -> None:
        h, w = image.shape[:2]
        t = self._transform @ Affine.translation(window.col_off, window.row_off)
        shapes = ((g, i + 1) for i, g in enumerate(self._truth.geometry) if g is not None)
        self._ids = rasterio.features.rasterize(shapes, out_shape=(h, w), transform=t, fill=0, dtype="int32")
        found = ndimage.find_objects(self._ids)
        self._labels = np.array([i + 1 for i, sl in enumerate(found) if sl is not None], dtype=np.int64)
        self._bboxes = np.array(
            [[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop] for sl in found if sl is not None],
            dtype=np.float64,
        ).reshape(-1, 4)

    def predict_boxes(self, boxes: np.ndarray, regions: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        assert self._ids is not None, "set_image first"
        masks, scores = [], []
        for box, (r0, c0, r1, c1) in zip(boxes, regions, strict=True):
            iou = box_iou(np.asarray(box, dtype=np.float64), self._bboxes)
            crown = int(self._labels[np.argmax(iou)]) if iou.size and iou.max() > 0 else -1
            masks.append(self._ids[r0:r1, c0:c1] == crown)
            scores.append(float(iou.max()) if crown > 0 else 0.0)
        return masks, np.asarray(scores, dtype=np.float32)
