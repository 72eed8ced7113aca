"""Multi-class Mask R-CNN on pseudo-classes: class-agnostic AP that compares with single-class runs,
per-class AP next to it (unit tests with known detections), a real multi-class training run of a few
CPU steps that writes per-class AP to MLflow, and ``crownsam predict`` writing a class per crown."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from mlflow.tracking import MlflowClient
from pycocotools import mask as mask_util
from pycocotools.cocoeval import COCOeval
from rasterio.windows import Window

from crownsam import cli
from crownsam.training.data import coco_api
from crownsam.training.evaluate import STAT_NAMES, coco_metrics
from crownsam.training.train import train

try:
    from .synth import TEST_MODEL_KWARGS, Synth, make_export, small_config
except ImportError:
    from synth import TEST_MODEL_KWARGS, Synth, make_export, small_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

SIDE = 64
# three crowns on one 64 x 64 chip: (row0, col0, row1, col1), class
CROWNS = [((4, 4, 20, 20), 0), ((30, 8, 50, 26), 1), ((10, 36, 30, 60), 1)]
TWO_CLASSES = [{"id": c + 1, "name": f"class_{c}", "supercategory": "tree", "class_value": c} for c in (0, 1)]


def square(r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
    m = np.zeros((SIDE, SIDE), bool)
    m[r0:r1, c0:c1] = True
    return m


def gt_dict(categories: list[dict[str, Any]]) -> dict[str, Any]:
    """The three crowns as COCO ground truth (category class + 1, or 1 with one category)."""
    anns = []
    for i, (box, c) in enumerate(CROWNS):
        rle = mask_util.encode(np.asfortranarray(square(*box).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        r0, c0, r1, c1 = box
        anns.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": c + 1 if len(categories) > 1 else 1,
                "segmentation": rle,
                "area": float((r1 - r0) * (c1 - c0)),
                "bbox": [c0, r0, c1 - c0, r1 - r0],
                "iscrowd": 0,
            }
        )
    return {
        "images": [{"id": 1, "file_name": "x.png", "width": SIDE, "height": SIDE}],
        "annotations": anns,
        "categories": categories,
    }


def preds_of(dets: list[tuple[int, float, int]]) -> dict[int, dict[str, np.ndarray]]:
    """Detections (crown index, score, model label) as exact copies of the crowns' masks."""
    boxes = [[CROWNS[i][0][1], CROWNS[i][0][0], CROWNS[i][0][3], CROWNS[i][0][2]] for i, _, _ in dets]
    return {
        1: {
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "scores": np.asarray([s for _, s, _ in dets], np.float32),
            "labels": np.asarray([lab for _, _, lab in dets], np.int64),
            "masks": np.stack([square(*CROWNS[i][0]) for i, _, _ in dets]),
        }
    }


def plain_cocoeval(gt: dict[str, Any], preds: dict[int, dict[str, np.ndarray]], iou_type: str) -> list[float]:
    """pycocotools on its own: every detection in category 1, no NMS of ours."""
    dets = []
    p = preds[1]
    for k in range(len(p["scores"])):
        x0, y0, x1, y1 = (float(v) for v in p["boxes"][k])
        rle = mask_util.encode(np.asfortranarray(p["masks"][k].astype(np.uint8)))
        dets.append(
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": 1,
                "score": float(p["scores"][k]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(mask_util.area(rle)) if iou_type == "segm" else (x1 - x0) * (y1 - y0),
                **({"segmentation": rle} if iou_type == "segm" else {}),
            }
        )
    dt = coco_api({"images": gt["images"], "categories": gt["categories"], "annotations": dets})
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_api(gt), dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_single_class_numbers_are_a_plain_cocoeval() -> None:
    """A single-class model's detections are not touched, even two overlapping ones: the numbers are
    pycocotools' own, as before multi-class support (24 keys, no per-class keys)."""
    gt = gt_dict([{"id": 1, "name": "tree", "supercategory": "tree"}])
    preds = preds_of([(0, 0.9, 1), (0, 0.8, 1), (1, 0.7, 1), (2, 0.3, 1)])
    m = coco_metrics(gt, preds, [1])
    assert set(m) == {f"{t}_{n}" for t in ("segm", "bbox") for n in STAT_NAMES}
    for t in ("segm", "bbox"):
        assert [m[f"{t}_{n}"] for n in STAT_NAMES] == plain_cocoeval(gt, preds, t)
    assert m["segm_AP"] < 1.0  # the duplicate at 0.8 ranks before a true crown: a false positive


def test_class_agnostic_ap_ignores_the_class_and_per_class_ap_sees_it() -> None:
    gt = gt_dict(TWO_CLASSES)
    right = coco_metrics(gt, preds_of([(0, 0.9, 1), (1, 0.8, 2), (2, 0.7, 2)]), [1, 2])
    swapped = coco_metrics(gt, preds_of([(0, 0.9, 2), (1, 0.8, 1), (2, 0.7, 1)]), [1, 2])
    assert right["segm_AP"] == swapped["segm_AP"] == pytest.approx(1.0)
    assert right["bbox_AP"] == swapped["bbox_AP"] == pytest.approx(1.0)
    for t in ("segm", "bbox"):
        for c in ("class_0", "class_1"):
            assert right[f"{t}_AP/{c}"] == pytest.approx(1.0) and right[f"{t}_AP50/{c}"] == pytest.approx(1.0)
            assert swapped[f"{t}_AP/{c}"] == pytest.approx(0.0)
        assert right[f"{t}_mAP"] == pytest.approx(1.0) and swapped[f"{t}_mAP"] == pytest.approx(0.0)


def test_a_crown_detected_in_two_classes_counts_once_in_the_agnostic_ap() -> None:
    """Crown 0 found as class 0 (0.9) and class 1 (0.8): one crown, so the class-agnostic AP is 1.0, as a
    single-class model's would be. Without the cross-class NMS the copy would be a false positive ranked
    before crowns 1 and 2 (AP < 1, the single-class test above)."""
    gt = gt_dict(TWO_CLASSES)
    preds = preds_of([(0, 0.9, 1), (0, 0.8, 2), (1, 0.7, 2), (2, 0.6, 2)])
    m = coco_metrics(gt, preds, [1, 2])
    assert m["segm_AP"] == pytest.approx(1.0) and m["bbox_AP"] == pytest.approx(1.0)
    assert plain_cocoeval(gt_dict([{"id": 1, "name": "tree"}]), preds, "segm")[0] < 0.99
    assert m["segm_AP/class_0"] == pytest.approx(1.0)  # per class, the copy is in the other class


def test_multi_class_model_on_single_class_ground_truth_is_class_agnostic_only() -> None:
    """Manual test crowns without classes: only the comparable class-agnostic numbers."""
    gt = gt_dict([{"id": 1, "name": "tree", "supercategory": "tree"}])
    m = coco_metrics(gt, preds_of([(0, 0.9, 1), (1, 0.8, 2), (2, 0.7, 2)]), [1, 2])
    assert m["segm_AP"] == pytest.approx(1.0) and not [k for k in m if "/" in k or "mAP" in k]


# ------------------------------------------------------------------------- a real multi-class run


def test_multi_class_targets_and_model_take_one_label_per_class(tmp_path) -> None:
    """Chips of a two-class export give targets with labels 1 and 2 (category id order), and a
    three-class Mask R-CNN (background + 2) learns from them: finite losses, checkpoint round trip."""
    synth = make_export(tmp_path, classes=2, grid=(2, 2))
    from crownsam.training.data import CocoChips, load_coco
    from crownsam.training.model import build_model, model_from_checkpoint

    ds = CocoChips(synth.root, load_coco(synth.root / "train.json"), [0, 1, 2], synth.chip)
    image, target = ds[0]
    anns = ds.coco.imgToAnns[ds.images[0]["id"]]
    assert target["labels"].tolist() == [a["category_id"] for a in anns] and set(
        target["labels"].tolist()
    ) == {1, 2}
    torch.manual_seed(0)
    model = build_model("v2", 3, chip=synth.chip, num_classes=3, **TEST_MODEL_KWARGS)
    losses = model.train()([image], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    meta = {"version": "v2", "bands": [1, 2, 3], "chip": synth.chip, "model_kwargs": TEST_MODEL_KWARGS}
    back = model_from_checkpoint({"model": model.state_dict(), "meta": meta | {"classes": ["bg", "a", "b"]}})
    assert back.roi_heads.box_predictor.cls_score.out_features == 3
    with pytest.raises(RuntimeError, match="size mismatch"):  # the classes decide the head's shape
        model_from_checkpoint({"model": model.state_dict(), "meta": meta})


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Synth, Path, dict[str, Any], str]:
    torch.set_num_threads(2)
    base = tmp_path_factory.mktemp("multi")
    synth = make_export(base, classes=2)
    out = base / "run"
    uri = f"sqlite:///{base / 'mlflow.db'}"
    metrics = train(small_config(synth, out, tracking_uri=uri, label_source="pseudo"))
    return synth, out, metrics, uri


@pytest.mark.slow  # two CPU steps, validation, test evaluation and the MLflow model: about a minute
def test_multi_class_training_writes_per_class_ap_to_mlflow(multi) -> None:
    _, out, metrics, uri = multi
    run = MlflowClient(uri).get_run(metrics["run_id"])
    logged, params = run.data.metrics, run.data.params
    assert params["classes"] == "class_0,class_1"
    for split in ("val", "test"):
        for t in ("segm", "bbox"):
            keys = [
                f"{split}_{t}_AP",
                f"{split}_{t}_mAP",
                f"{split}_{t}_AP/class_0",
                f"{split}_{t}_AP/class_1",
            ]
            for key in keys:
                assert key in logged and (logged[key] == -1.0 or 0.0 <= logged[key] <= 1.0), key
    history = MlflowClient(uri).get_metric_history(metrics["run_id"], "val_segm_AP/class_1")
    assert [h.step for h in history] == [1]
    ckpt = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["classes"] == ["background", "class_0", "class_1"]
    assert ckpt["meta"]["class_values"] == [0, 1]
    assert ckpt["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == 3
    assert ckpt["model"]["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 3


def one_window(ortho: Path, out: Path, side: int = 128) -> Path:
    """The orthophoto's top-left ``side`` px square (one inference window: CPU time)."""
    with rasterio.open(ortho) as src:
        profile = src.profile | {"width": side, "height": side}
        data = src.read(window=Window(0, 0, side, side))
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


@pytest.mark.slow  # the training run above
def test_predict_writes_the_class_and_its_score_per_crown(multi, tmp_path, capsys) -> None:
    synth, out, _, _ = multi
    pred = tmp_path / "pred.gpkg"
    ortho = one_window(synth.ortho, tmp_path / "part.tif")
    argv = ["predict", "--model", str(out), "--ortho", str(ortho), "--out", str(pred)]
    argv += ["--window", "128", "--score-threshold", "0", "--device", "cpu", "--no-progress"]
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    gdf = gpd.read_file(pred)
    assert len(gdf) > 0 and "per class" in stdout
    assert set(gdf["pred_class"]) <= {0, 1} and set(gdf["pred_class_name"]) <= {"class_0", "class_1"}
    assert (gdf["class_score"] == gdf["score"]).all() and gdf["class_score"].between(0, 1).all()
    summary = json.loads(pred.with_suffix(".summary.json").read_text())
    assert sum(summary["crowns_per_class"].values()) == len(gdf)


def test_a_single_class_run_is_unchanged(trained) -> None:
    """The session's single-class run: one class, no per-class keys or parameters."""
    run = MlflowClient(trained.tracking_uri).get_run(trained.run_id)
    assert "classes" not in run.data.params
    assert not [k for k in run.data.metrics if "/" in k or "mAP" in k]
    ckpt = torch.load(trained.out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["classes"] == ["background", "tree"]
    assert ckpt["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2
