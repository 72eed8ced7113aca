"""The prompt-predictor interface, and a deterministic known-answer predictor for geometry tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import geopandas as gpd
import numpy as np
import rasterio.features
from rasterio import Affine
from scipy import ndimage

from crownsam.common.raster import BandWindow
from crownsam.pseudolabel.masks import LogitPatch, floor_px, region_tuple, support
from crownsam.tiling.plan import WindowTask

POSITIVE, NEGATIVE, PAD = 1, 0, -1  # point labels, as SAM2's prompt encoder reads them

# A window's image: stretched uint8 (H, W, 3), or as read (a predictor that stretches on its device)
WindowImage = np.ndarray | BandWindow


@dataclass(frozen=True)
class PromptBatch:
    """Prompts for one decoder call, in window pixels (continuous: x = column, y = row, a pixel's centre
    at ``+0.5``). ``boxes``: (B, 4) XYXY or None; ``points``: (B, N, 2) or None, with ``labels`` (B, N):
    1 positive, 0 negative, -1 padding (ignored)."""

    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.boxes is None and self.points is None:
            raise ValueError("a prompt needs a box or points")
        if (self.points is None) != (self.labels is None):
            raise ValueError("points and labels go together")

    def __len__(self) -> int:
        return len(self.boxes) if self.boxes is not None else len(self.points)  # type: ignore[arg-type]


class PromptPredictor(Protocol):
    """What the pseudolabeling loop needs from a segmenter (SAM2, or a known-answer stand-in).

    ``set_image`` once per window, then ``predict`` any number of times. ``regions`` are ``(r0, c0, r1,
    c1)`` window-pixel crops in which each mask is wanted; each answer is a :class:`LogitPatch` that
    covers its region (mask = logits > 0) and a score (the predictor's own quality estimate).

    The image is stretched uint8 (H, W, 3), unless the predictor has a true ``stretches_on_device``
    attribute: then it gets the window as read (:class:`~crownsam.common.raster.BandWindow`), to stretch
    on its accelerator, off the host (:func:`image_for`).
    """

    name: str
    untrained: bool
    forward_seconds: float

    def set_image(self, image: WindowImage, window: WindowTask) -> None: ...

    def predict(self, prompts: PromptBatch, regions: np.ndarray) -> tuple[list[LogitPatch], np.ndarray]: ...


class BatchPromptPredictor(PromptPredictor, Protocol):
    """A :class:`PromptPredictor` that embeds several windows in one call (SAM2's ``set_image_batch``),
    then answers prompts on window ``i`` of the batch after ``use_image(i)``."""

    def set_image_batch(self, images: list[WindowImage]) -> None: ...

    def use_image(self, i: int) -> None: ...


BoxPredictor = PromptPredictor  # the name this interface had when it took boxes only


def stretches_on_device(predictor: object) -> bool:
    """Whether ``predictor`` takes windows as read and stretches them itself (on its accelerator)."""
    return bool(getattr(predictor, "stretches_on_device", False))


def image_for(predictor: object, image: WindowImage) -> WindowImage:
    """``image`` as ``predictor`` takes it: stretched here unless it stretches on its device."""
    if isinstance(image, BandWindow) and not stretches_on_device(predictor):
        return image.rgb()
    return image


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one XYXY box with each row of ``boxes``."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def point_pixel(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the pixel holding each continuous point ``(x, y)``: ``floor`` of each coordinate
    (a point on a pixel edge, within :data:`~crownsam.pseudolabel.masks.SNAP_PX`, belongs to the pixel
    to its right or below)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return floor_px(xy[:, 1]).astype(np.int64), floor_px(xy[:, 0]).astype(np.int64)


class KnownAnswerPredictor:
    """Returns true crowns, so that any pixel of disagreement comes from our own geometry code.

    Rule, per prompt: the crown is the truth crown holding the first positive point (its pixel by
    :func:`point_pixel`; none when that pixel holds no crown); without a positive point, the crown whose
    bounding box best matches the prompt box (highest box IoU). Crowns holding a negative point are
    removed. Logits are +1 on the answer and -1 elsewhere, cut to the requested region; the score is 1
    when a crown was found, else 0.

    Rasterises the truth polygons on each window's grid (pixel centres), so a pseudolabel that is off by
    a pixel anywhere in the tiling, box, point or georeferencing chain no longer matches the truth exactly.
    """

    name = "known-answer"
    untrained = False

    def __init__(self, truth: gpd.GeoDataFrame, transform: Affine) -> None:
        self._truth = truth.reset_index(drop=True)
        self._transform = transform
        self._ids: np.ndarray | None = None
        self.forward_seconds = 0.0

    def set_image(self, image: WindowImage, window: WindowTask) -> None:
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

    def crown_at(self, xy: np.ndarray) -> np.ndarray:
        """Truth crown id (1-based, 0 for none) at each window-pixel point."""
        assert self._ids is not None, "set_image first"
        rows, cols = point_pixel(xy)
        h, w = self._ids.shape
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        out = np.zeros(len(rows), dtype=np.int64)
        out[inside] = self._ids[rows[inside], cols[inside]]
        return out

    def crown_of_box(self, box: np.ndarray) -> int:
        """The crown whose bounding box best matches ``box`` (highest box IoU), or 0 for none."""
        iou = box_iou(np.asarray(box, dtype=np.float64), self._bboxes)
        return int(self._labels[np.argmax(iou)]) if iou.size and iou.max() > 0 else 0

    def answer(self, prompts: PromptBatch, i: int) -> tuple[set[int], set[int]]:
        """(crowns the prompt ``i`` asks for, crowns its negative points exclude)."""
        positive: set[int] = set()
        negative: set[int] = set()
        if prompts.points is not None and prompts.labels is not None:
            ids = self.crown_at(prompts.points[i])
            labels = prompts.labels[i]
            pos = ids[labels == POSITIVE]
            if pos.size:
                positive = {int(pos[0])} - {0}
            negative = {int(c) for c in ids[labels == NEGATIVE]} - {0}
            if pos.size:
                return positive, negative
        if prompts.boxes is not None:
            positive = {self.crown_of_box(prompts.boxes[i])} - {0}
        return positive, negative

    def logits(self, crowns: set[int], region: tuple[int, int, int, int]) -> LogitPatch:
        """+1 on ``crowns`` and -1 elsewhere, in ``region``, as a full-resolution patch."""
        assert self._ids is not None, "set_image first"
        r0, c0, r1, c1 = region
        hw = (int(self._ids.shape[0]), int(self._ids.shape[1]))
        y0, y1 = support(r0, r1, hw[0], hw[0])
        x0, x1 = support(c0, c1, hw[1], hw[1])
        sub = self._ids[y0:y1, x0:x1]
        data = np.where(np.isin(sub, list(crowns)), 1.0, -1.0).astype(np.float32)
        return LogitPatch(data, y0, x0, hw, hw)

    def predict(self, prompts: PromptBatch, regions: np.ndarray) -> tuple[list[LogitPatch], np.ndarray]:
        patches, scores = [], []
        for i, region in enumerate(regions):
            positive, negative = self.answer(prompts, i)
            wanted = positive - negative
            patches.append(self.logits(wanted, region_tuple(region)))
            scores.append(1.0 if wanted else 0.0)
        return patches, np.asarray(scores, dtype=np.float32)

    def predict_boxes(self, boxes: np.ndarray, regions: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Masks (boolean, one per region) for box prompts."""
        patches, scores = self.predict(PromptBatch(boxes=np.asarray(boxes)), regions)
        return [p.upsample(region_tuple(r)) > 0 for p, r in zip(patches, regions, strict=True)], scores
