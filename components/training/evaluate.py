"""COCO evaluation of a Mask R-CNN on an export split, and a picture of its predictions.

* **Predictions on chips**: the model sees each chip (selected bands, zero-padded to the model's chip
  size), in eval mode; a mask is the model's mask probability >= 0.5, cropped to the chip.
* **COCO statistics**: pycocotools ``COCOeval`` for ``segm`` and ``bbox`` with its defaults (IoU
  0.50:0.05:0.95, maxDets 1/10/100, COCO area ranges). The 12 numbers of ``COCOeval.stats`` become flat
  keys ``<iou_type>_<name>`` with names :data:`STAT_NAMES` (``segm_AP``, ``bbox_AP50``, ...); -1 means
  "no ground truth in that range", as in COCO. No detections at all gives AP = AR = 0 (not an error).
* **Classes.** Those keys are always **class-agnostic**, so a multi-class model compares with a
  single-class one: every ground-truth crown and detection counts as one category, tree, after
  detections of *different* classes that overlap (box IoU > :data:`AGNOSTIC_NMS_IOU`, torchvision's
  own per-class NMS threshold) are reduced to the highest-scoring one (``torchvision.ops.nms``), so a
  crown is one detection, as in a single-class model. A single-class model's detections already passed
  that NMS inside the model and are left as they are: its numbers are exactly those of a plain COCOeval.
  When the model and the ground truth both have two or more categories, ``COCOeval`` with categories
  adds per class ``<iou_type>_AP/<class>`` and ``<iou_type>_AP50/<class>`` (area all, maxDets 100,
  -1 without ground truth of that class) and ``<iou_type>_mAP``, their mean (COCO's AP).
* **Picture**: the split's chips placed at their orthophoto offsets (``crownsam.row_off/col_off``),
  ground truth outlined in cyan and predictions with score >= 0.5 in red, downsampled to at most
  :data:`PLOT_MAX_PX` pixels on the longer side.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from crownsam.common.atomic import atomic_path
from crownsam.training.data import CocoChips, coco_api, pad_to

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("segm", "bbox")
MASK_THRESHOLD = 0.5
AGNOSTIC_NMS_IOU = 0.5  # torchvision's box_nms_thresh default
PLOT_MAX_PX = 2000

Prediction = dict[str, np.ndarray]  # boxes (N, 4) xyxy, scores (N,), labels (N,), masks (N, H, W) bool


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor],
    device: torch.device,
    *,
    pad: int | None = None,
    amp: bool = False,
) -> list[Prediction]:
    """Run the model on (C, H, W) float images in [0, 1]; masks are cropped back to each image's size."""
    model.eval()
    batch = [(pad_to(im, pad) if pad else im).to(device) for im in images]
    ctx = torch.autocast("cuda") if amp and device.type == "cuda" else contextlib.nullcontext()
    with ctx:
        outs = model(batch)
    preds = []
    for im, out in zip(images, outs, strict=True):
        h, w = im.shape[-2:]
        masks = out["masks"][:, 0, :h, :w].float() >= MASK_THRESHOLD if "masks" in out else None
        boxes = out["boxes"].float().cpu().numpy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        preds.append(
            {
                "boxes": boxes,
                "scores": out["scores"].float().cpu().numpy(),
                "labels": out["labels"].cpu().numpy().astype(np.int64),
                "masks": masks.cpu().numpy() if masks is not None else np.zeros((0, h, w), bool),
            }
        )
    return preds


def predict_split(
    model: torch.nn.Module,
    ds: CocoChips,
    device: torch.device,
    *,
    batch_size: int = 1,
    amp: bool = False,
    progress: bool = False,
) -> dict[int, Prediction]:
    """Predictions for every chip of a split, keyed by COCO image id."""
    from crownsam.common.progress import progress_bar

    out: dict[int, Prediction] = {}
    idx = list(range(len(ds)))
    bar = progress_bar(total=len(idx), desc="chips", unit="chip", enabled=progress, leave=False)
    for start in range(0, len(idx), batch_size):
        part = idx[start : start + batch_size]
        preds = predict_images(model, [ds.image_tensor(i) for i in part], device, pad=ds.chip, amp=amp)
        for i, p in zip(part, preds, strict=True):
            out[int(ds.images[i]["id"])] = p
        bar.update(len(part))
    bar.close()
    return out


def _detections(
    preds: Mapping[int, Prediction], iou_type: str, category_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """COCO results: category 1 for all, or ``category_ids[label - 1]``."""
    from pycocotools import mask as mask_util

    anns: list[dict[str, Any]] = []
    for image_id, p in preds.items():
        labels = p.get("labels")
        for k in range(len(p["scores"])):
            x0, y0, x1, y1 = (float(v) for v in p["boxes"][k])
            cat = 1 if category_ids is None or labels is None else int(category_ids[int(labels[k]) - 1])
            ann: dict[str, Any] = {
                "image_id": image_id,
                "category_id": cat,
                "score": float(p["scores"][k]),
                "iscrowd": 0,
            }
            ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            if iou_type == "segm":
                rle = mask_util.encode(np.asfortranarray(p["masks"][k].astype(np.uint8)))
                ann["segmentation"] = rle
                ann["area"] = float(mask_util.area(rle))
            else:
                ann["area"] = (x1 - x0) * (y1 - y0)
            ann["id"] = len(anns) + 1
            anns.append(ann)
    return anns


def _cocoeval(
    gt: Mapping[str, Any],
    preds: Mapping[int, Prediction],
    iou_type: str,
    category_ids: Sequence[int] | None = None,
) -> Any:
    """A summarised ``COCOeval`` of ``preds`` against the COCO dict ``gt``."""
    from pycocotools.cocoeval import COCOeval

    gt_coco = coco_api(dict(gt))
    dt = {
        "images": list(gt["images"]),
        "categories": list(gt.get("categories") or [{"id": 1, "name": "tree"}]),
        "annotations": _detections(preds, iou_type, category_ids),
    }
    dt_coco = coco_api(dt)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt_coco, dt_coco, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_stats(gt: Mapping[str, Any], preds: Mapping[int, Prediction], iou_type: str) -> dict[str, float]:
    """``COCOeval`` of ``preds`` (all category 1) against ``gt`` for one IoU type: ``{"<type>_AP": ...}``."""
    ev = _cocoeval(gt, preds, iou_type)
    return {f"{iou_type}_{n}": float(v) for n, v in zip(STAT_NAMES, ev.stats, strict=True)}


def one_category(gt: Mapping[str, Any]) -> dict[str, Any]:
    """``gt`` with every annotation in one category, tree (id 1)."""
    anns = [{**a, "category_id": 1} for a in gt.get("annotations", [])]
    return {**gt, "categories": [{"id": 1, "name": "tree", "supercategory": "tree"}], "annotations": anns}


def class_agnostic(preds: Mapping[int, Prediction]) -> dict[int, Prediction]:
    """Per image, detections of different classes that overlap (box IoU > :data:`AGNOSTIC_NMS_IOU`)
    reduced to the highest-scoring one (``torchvision.ops.nms``); images whose detections are all of one
    class (every single-class model's) are returned as they are."""
    from torchvision.ops import nms

    out: dict[int, Prediction] = {}
    for image_id, p in preds.items():
        labels = p.get("labels")
        if labels is None or len(np.unique(labels)) <= 1:
            out[image_id] = p
            continue
        keep = nms(
            torch.from_numpy(np.asarray(p["boxes"], np.float32)),
            torch.from_numpy(np.asarray(p["scores"], np.float32)),
            AGNOSTIC_NMS_IOU,
        ).numpy()
        out[image_id] = {k: v[keep] for k, v in p.items()}
    return out


def per_class_stats(
    gt: Mapping[str, Any], preds: Mapping[int, Prediction], iou_type: str, category_ids: Sequence[int]
) -> dict[str, float]:
    """Per category of ``gt``: ``<type>_AP/<name>`` and ``<type>_AP50/<name>`` (area all, maxDets 100;
    -1 without ground truth of the category), and ``<type>_mAP``, COCO's mean over categories."""
    ev = _cocoeval(gt, preds, iou_type, category_ids)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
    precision = ev.eval["precision"]  # [IoU thresholds, recall points, categories, areas, max dets]
    out: dict[str, float] = {f"{iou_type}_mAP": float(ev.stats[0])}
    for k, cat in enumerate(ev.params.catIds):
        every = precision[:, :, k, 0, -1]
        at50 = precision[0, :, k, 0, -1]
        out[f"{iou_type}_AP/{names[cat]}"] = float(every[every > -1].mean()) if (every > -1).any() else -1.0
        out[f"{iou_type}_AP50/{names[cat]}"] = float(at50[at50 > -1].mean()) if (at50 > -1).any() else -1.0
    return out


def coco_metrics(
    gt: Mapping[str, Any], preds: Mapping[int, Prediction], category_ids: Sequence[int] | None = None
) -> dict[str, float]:
    """segm and bbox statistics together: 24 class-agnostic keys, plus the per-class keys when the model
    (``category_ids``: the COCO category of each model label 1..K) and ``gt`` both have two or more
    categories (rules in the module docstring)."""
    out: dict[str, float] = {}
    agnostic_gt, agnostic = one_category(gt), class_agnostic(preds)
    for t in IOU_TYPES:
        out |= coco_stats(agnostic_gt, agnostic, t)
    if category_ids is not None and len(category_ids) > 1 and len(gt.get("categories") or []) > 1:
        for t in IOU_TYPES:
            out |= per_class_stats(gt, preds, t, category_ids)
    return out


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _block_max(a: np.ndarray, f: int) -> np.ndarray:
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    if f == 1:
        return a
    return a[:h, :w].reshape(h // f, f, w // f, f, *a.shape[2:]).max(axis=(1, 3))


def plot_predictions(
    ds: CocoChips,
    preds: Mapping[int, Prediction],
    out_png: str | Path,
    *,
    title: str = "",
    score_threshold: float = 0.5,
) -> Path:
    """Write a PNG of the split's chips at their orthophoto offsets with ground truth (cyan) and
    predicted (red, score >= ``score_threshold``) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = ds.images
    offs = [
        (int(r.get("crownsam", {}).get("row_off", 0)), int(r.get("crownsam", {}).get("col_off", 0)))
        for r in recs
    ]
    if not any(r.get("crownsam") for r in recs):  # no offsets: chips side by side
        offs = [(0, i * (ds.chip + 8)) for i in range(len(recs))]
    r0 = min((o[0] for o in offs), default=0)
    c0 = min((o[1] for o in offs), default=0)
    height = max((o[0] - r0 + int(r["height"]) for o, r in zip(offs, recs, strict=True)), default=1)
    width = max((o[1] - c0 + int(r["width"]) for o, r in zip(offs, recs, strict=True)), default=1)
    f = max(1, math.ceil(max(height, width) / PLOT_MAX_PX))
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    gt_line = np.zeros((height, width), dtype=bool)
    pr_line = np.zeros((height, width), dtype=bool)
    n_pred = 0
    for i, ((ro, co), rec) in enumerate(zip(offs, recs, strict=True)):
        img = (ds.image_tensor(i)[:3].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
        if img.shape[2] < 3:
            img = np.repeat(img[..., :1], 3, axis=2)
        h, w = img.shape[:2]
        rs, cs = slice(ro - r0, ro - r0 + h), slice(co - c0, co - c0 + w)
        rgb[rs, cs] = img
        for m in ds.target(i)["masks"].numpy().astype(bool):
            gt_line[rs, cs] |= _outline(m)
        p = preds.get(int(rec["id"]))
        if p is not None:
            for m, s in zip(p["masks"], p["scores"], strict=True):
                if s >= score_threshold:
                    pr_line[rs, cs] |= _outline(m)
                    n_pred += 1
    view = rgb[::f, ::f].copy()
    gt_v, pr_v = _block_max(gt_line, f), _block_max(pr_line, f)
    hh, ww = min(view.shape[0], gt_v.shape[0]), min(view.shape[1], gt_v.shape[1])
    view = view[:hh, :ww]
    view[gt_v[:hh, :ww]] = (0, 255, 255)
    view[pr_v[:hh, :ww]] = (255, 0, 0)
    fig, ax = plt.subplots(figsize=(8, 8 * hh / max(ww, 1) + 0.6), dpi=max(100, min(250, ww // 8)))
    ax.imshow(view, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(
        (title + "\n" if title else "")
        + f"{len(recs)} chips; cyan: ground truth; red: {n_pred} predictions (score >= {score_threshold:g})",
        fontsize=9,
    )
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out_png)
