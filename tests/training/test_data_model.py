"""Reading exports (PNG and multi-band TIFF chips, band selection), augmentation, step plan, model
widening and starting weights. No training here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crownsam.common.errors import InputError
from crownsam.training import data as D
from crownsam.training.model import build_model, load_weights, widen_first_conv
from crownsam.training.train import Dist, epoch_batches, lr_factor, step_seed

try:
    from .synth import make_export
except ImportError:
    from synth import make_export


def test_png_chips_masks_and_boxes_match_the_crowns(synth):
    info = D.read_export(synth.root)
    assert info.bands == (1, 2, 3) and info.stretch is not None and info.chip == 128
    train = D.load_coco(synth.root / "train.json")
    ds = D.CocoChips(synth.root, train, [0, 1, 2], 128)
    img, target = ds[0]
    assert img.shape == (3, 128, 128) and img.dtype == torch.float32 and img.min() >= 0 and img.max() <= 1
    rec = ds.images[0]["crownsam"]
    expected = [e.mask(128, 128, rec["row_off"], rec["col_off"]) for e in synth.crowns]
    expected = [m for m in expected if m.sum() >= 20]
    assert target["masks"].shape[0] == len(expected)
    got = {m.numpy().astype(bool).tobytes() for m in target["masks"]}
    assert got == {m.tobytes() for m in expected}
    for m, b in zip(target["masks"], target["boxes"], strict=True):
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        assert b.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    # crowns are brighter than the ground in the chip: the chip is the right window of the orthophoto
    inside = target["masks"].any(0).bool()
    assert img[:, inside].mean() > img[:, ~inside].mean() + 0.2


def test_tiff_chips_and_band_selection(tmp_path):
    s = make_export(tmp_path, count=5, bands=(3, 2, 1, 5), grid=(2, 2))
    info = D.read_export(s.root)
    assert info.bands == (3, 2, 1, 5)
    assert D.select_channels(info.bands, (5, 3), "x") == [3, 0]
    with pytest.raises(InputError, match="band 4 is not in the chips"):
        D.select_channels(info.bands, (3, 4), "x")
    train = D.load_coco(s.root / "train.json")
    full = D.CocoChips(s.root, train, [0, 1, 2, 3], 128)
    part = D.CocoChips(s.root, train, [3, 0], 128)
    a, b = full.image_tensor(0), part.image_tensor(0)
    assert a.shape == (4, 128, 128) and b.shape == (2, 128, 128)
    assert torch.equal(b[0], a[3]) and torch.equal(b[1], a[0])


def test_augmentation_is_seeded_and_keeps_masks_and_boxes_together(synth):
    train = D.load_coco(synth.root / "train.json")
    ds = D.CocoChips(synth.root, train, [0, 1, 2], 128, train=True, seed=5)
    plain = D.CocoChips(synth.root, train, [0, 1, 2], 128)
    a1, t1 = ds[(0, 0)]
    a2, t2 = ds[(0, 0)]
    assert torch.equal(a1, a2) and torch.equal(t1["masks"], t2["masks"])
    variants = {ds[(e, 0)][1]["masks"].numpy().tobytes() for e in range(8)}
    assert len(variants) > 2  # flips and rotations happen
    base = plain[0][1]["masks"].sum().item()
    for e in range(4):
        img, t = ds[(e, 0)]
        assert t["masks"].sum().item() == base  # geometric augmentation moves pixels, loses none
        for m, b in zip(t["masks"], t["boxes"], strict=True):
            rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
            assert b.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        assert img.min() >= 0 and img.max() <= 1


def test_epoch_batches_split_steps_between_processes():
    n, batch = 7, 2
    ranks = [epoch_batches(n, batch, Dist(rank=r, world=2), seed=1, epoch=3) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # ceil(7 / (2 x 2))
    seen = [i for r in ranks for step in r for (_, i) in step]
    assert set(seen) == set(range(n)) and len(seen) == 8  # every chip, one wrapped around
    assert epoch_batches(n, batch, Dist(), 1, 3) != epoch_batches(n, batch, Dist(), 1, 4)
    assert step_seed(0, 5, 0) == step_seed(0, 5, 0) != step_seed(0, 5, 1)


def test_lr_schedule_warms_up_and_decays():
    assert lr_factor(0, 90, 10) == pytest.approx(0.001)
    assert lr_factor(10, 90, 10) == 1.0
    assert lr_factor(60, 90, 10) == pytest.approx(0.1)
    assert lr_factor(80, 90, 10) == pytest.approx(0.01)


def test_widening_copies_rgb_filters_and_averages_the_rest():
    torch.manual_seed(0)
    m = build_model("v1", 3, chip=128, rpn_post_nms_top_n_test=50, box_detections_per_img=5)
    rgb = m.backbone.body.conv1.weight.detach().clone()
    widen_first_conv(m, 5)
    w = m.backbone.body.conv1.weight.detach()
    assert w.shape[1] == 5
    assert torch.equal(w[:, :3], rgb)
    mean = rgb.mean(dim=1)
    assert torch.allclose(w[:, 3], mean) and torch.allclose(w[:, 4], mean)
    assert m.transform.image_mean[:3] == [0.485, 0.456, 0.406]
    assert m.transform.image_mean[3] == pytest.approx(np.mean([0.485, 0.456, 0.406]))
    assert len(m.transform.image_std) == 5
    m.eval()
    with torch.no_grad():
        out = m([torch.rand(5, 128, 128)])
    assert "masks" in out[0]


def test_starting_weights_resnet_and_maskrcnn(tmp_path):
    from torchvision.models import resnet50
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(1)
    backbone = resnet50().state_dict()
    torch.save(backbone, tmp_path / "r50.pth")
    m = build_model("v1", 3, chip=128, pretrained=True)
    counts = load_weights(m, str(tmp_path / "r50.pth"))
    assert counts["loaded"] > 250
    assert torch.equal(m.backbone.body.layer3[0].conv1.weight, backbone["layer3.0.conv1.weight"])
    assert not m.backbone.body.layer1[0].conv1.weight.requires_grad  # torchvision's recipe: 3 stages
    coco = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    torch.save({"model": coco.state_dict()}, tmp_path / "coco.pth")
    m2 = build_model("v1", 3, chip=128, pretrained=True)
    counts = load_weights(m2, str(tmp_path / "coco.pth"))
    assert counts["skipped_shape"] == 6  # weight and bias of cls_score, bbox_pred, mask_fcn_logits
    assert torch.equal(m2.rpn.head.conv[0][0].weight, coco.state_dict()["rpn.head.conv.0.0.weight"])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch weights file"):
        load_weights(m2, str(tmp_path / "junk.pth"))
    with pytest.raises(InputError, match="weights not found"):
        load_weights(m2, str(tmp_path / "missing.pth"))
