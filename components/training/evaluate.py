"""COCO evaluation of a Mask R-CNN on an export split, and a picture of its predictions.

* **Predictions on chips**: the model sees each chip (selected bands, zero-padded to the model's chip
  size), in eval mode; a mask is the model's mask probability >= 0.5, cropped to the chip.
* **COCO statistics**: pycocotools ``COCOeval`` for ``segm`` and ``bbox`` with its defaults (IoU
  0.50:0.05:0.95, maxDets 1/10/100, COCO area ranges). The 12 numbers of ``COCOeval.stats`` become flat
  keys ``<iou_type>_<name>`` with names :data:`STAT_NAMES` (``segm_AP``, ``bbox_AP50``, ...); -1 means
  "no ground truth in that range", as in COCO. No detections at all gives AP = AR = 0 (not an error).
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
PLOT_MAX_PX = 2000

Prediction = dict[str, np.ndarray]  # boxes (N, 4) xyxy, scores (N,), masks (N, H, W) bool


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


def _detections(preds: Mapping[int, Prediction], iou_type: str) -> list[dict[str, Any]]:
    from pycocotools import mask as mask_util

    anns: list[dict[str, Any]] = []
    for image_id, p in preds.items():
        for k in range(len(p["scores"])):
            x0, y0, x1, y1 = (float(v) for v in p["boxes"][k])
            ann: dict[str, Any] = {
                "image_id": image_id,
                "category_id": 1,
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


def coco_stats(gt: Mapping[str, Any], preds: Mapping[int, Prediction], iou_type: str) -> dict[str, float]:
    """``COCOeval`` of ``preds`` against the COCO dict ``gt`` for one IoU type: ``{"<type>_AP": ...}``."""
    from pycocotools.cocoeval import COCOeval

    gt_coco = coco_api(dict(gt))
    dt = {
        "images": list(gt["images"]),
        "categories": list(gt.get("categories") or [{"id": 1, "name": "tree"}]),
        "annotations": _detections(preds, iou_type),
    }
    dt_coco = coco_api(dt)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt_coco, dt_coco, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {f"{iou_type}_{n}": float(v) for n, v in zip(STAT_NAMES, ev.stats, strict=True)}


def coco_metrics(gt: Mapping[str, Any], preds: Mapping[int, Prediction]) -> dict[str, float]:
    """segm and bbox statistics together (24 flat keys)."""
    out: dict[str, float] = {}
    for t in IOU_TYPES:
        out |= coco_stats(gt, preds, t)
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
