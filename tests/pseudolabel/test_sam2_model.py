"""Real SAM2 code (untrained hiera tiny, CPU): checkpoint rules, batched prompts equal SAM2's own predict."""

import numpy as np
import pytest
import torch

from crownsam.common.device import resolve_device
from crownsam.common.errors import CrownsamError, InputError
from crownsam.pseudolabel.masks import neighbourhoods
from crownsam.pseudolabel.params import MODELS
from crownsam.pseudolabel.predictor import NEGATIVE, POSITIVE, PromptBatch
from crownsam.pseudolabel.sam2_model import Sam2BoxPredictor, build_sam2_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return build_sam2_model("sam2.1_hiera_t", None, untrained=True, device=CPU)


def test_untrained_must_be_asked_for() -> None:
    with pytest.raises(CrownsamError, match=r"--checkpoint URI .* or --untrained"):
        build_sam2_model("sam2.1_hiera_t", None, untrained=False, device=CPU)
    with pytest.raises(CrownsamError, match="exclude each other"):
        build_sam2_model("sam2.1_hiera_t", "x.pt", untrained=True, device=CPU)
    with pytest.raises(CrownsamError, match="choose one of"):
        build_sam2_model("sam3", None, untrained=True, device=CPU)


def test_every_model_name_maps_to_a_packaged_config() -> None:
    from importlib.resources import files

    for cfg, _ in MODELS.values():
        assert (files("sam2") / cfg).is_file()


def test_untrained_weights_are_seeded(tiny) -> None:
    again = build_sam2_model("sam2.1_hiera_t", None, untrained=True, device=CPU)
    for (k, a), (_, b) in zip(tiny.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_round_trip_and_mismatch(tiny, tmp_path) -> None:
    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": tiny.state_dict()}, ckpt)
    net = build_sam2_model("sam2.1_hiera_t", str(ckpt), untrained=False, device=CPU, cache_dir=tmp_path)
    k = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(net.state_dict()[k], tiny.state_dict()[k])
    with pytest.raises(InputError, match=r"does not fit sam2\.1_hiera_s"):
        build_sam2_model("sam2.1_hiera_s", str(ckpt), untrained=False, device=CPU)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        build_sam2_model("sam2.1_hiera_t", str(junk), untrained=False, device=CPU)


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CrownsamError):
        resolve_device("tpu")


def test_batched_crop_prompts_equal_sam2_predict(tiny) -> None:
    """Our batched prompt + crop upsampling gives exactly SAM2ImagePredictor.predict's masks and scores."""
    p = Sam2BoxPredictor(tiny, name="sam2.1_hiera_t", untrained=True)
    img = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    p.set_image(img)
    boxes = np.array([[100, 120, 260, 300], [500.5, 40, 700, 220.7], [0, 900, 130, 1024]], dtype=np.float32)
    regions = neighbourhoods(boxes, 1024, 1024)
    masks, scores = p.predict_boxes(boxes, regions)
    with torch.inference_mode():
        ref, ref_scores, _ = p.predictor.predict(box=boxes, multimask_output=False)
    np.testing.assert_allclose(scores, ref_scores[:, 0], rtol=1e-4)
    for m, (r0, c0, r1, c1), full in zip(masks, regions, ref[:, 0], strict=True):
        assert m.shape == (r1 - r0, c1 - c0)
        assert (m != full[r0:r1, c0:c1].astype(bool)).sum() == 0
    assert p.forward_seconds > 0


def test_point_prompts_equal_sam2_predict(tiny) -> None:
    """Box + positive point + negative points (label 0), and points alone, batched through our decoder
    call, give SAM2ImagePredictor.predict's logits and scores for the same prompts. SAM2 reads a point as
    a pixel index and adds half a pixel: our continuous coordinates (pixel centre at +0.5) go in as
    ``x - 0.5``."""
    p = Sam2BoxPredictor(tiny, name="sam2.1_hiera_t", untrained=True)
    img = np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    p.set_image(img)
    boxes = np.array([[100, 120, 260, 300], [500.5, 40, 700, 220.7]], dtype=np.float32)
    points = np.array(
        [[[180.5, 210.5], [250.5, 290.5], [120.5, 130.5]], [[600.5, 130.5], [650.2, 60.7], [510.5, 50.5]]]
    )
    labels = np.array([[POSITIVE, NEGATIVE, NEGATIVE], [POSITIVE, NEGATIVE, NEGATIVE]])
    regions = neighbourhoods(boxes, 1024, 1024)
    for batch in (
        PromptBatch(boxes=boxes, points=points, labels=labels),
        PromptBatch(points=points[:, :1], labels=labels[:, :1]),
    ):
        patches, scores = p.predict(batch, regions)
        with torch.inference_mode():
            ref, ref_scores, _ = p.predictor.predict(
                point_coords=batch.points - 0.5,
                point_labels=batch.labels,
                box=batch.boxes,
                multimask_output=False,
                return_logits=True,
            )
        np.testing.assert_allclose(scores, ref_scores[:, 0], rtol=1e-4)
        for patch, (r0, c0, r1, c1), full in zip(patches, regions, ref[:, 0], strict=True):
            np.testing.assert_allclose(patch.upsample((r0, c0, r1, c1)), full[r0:r1, c0:c1], atol=1e-4)
    # The labels matter: the same points, all positive, give other logits.
    negative, _ = p.predict(PromptBatch(boxes=boxes, points=points, labels=labels), regions)
    positive, _ = p.predict(PromptBatch(boxes=boxes, points=points, labels=np.ones_like(labels)), regions)
    r = tuple(int(v) for v in regions[0])
    assert np.abs(negative[0].upsample(r) - positive[0].upsample(r)).max() > 1e-3


def test_embedding_made_on_the_device_equals_sam2s(tiny) -> None:
    """Our image encoder call (uint8 band planes to the device, SAM2's transforms there) leaves exactly the
    features and sizes of SAM2's own ``set_image``, for an interleaved image and for our band-plane view,
    and of ``set_image_batch`` for two windows."""
    p = Sam2BoxPredictor(tiny, name="sam2.1_hiera_t", untrained=True)
    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8) for _ in range(2)]
    with torch.inference_mode():
        p.predictor.set_image(imgs[0])
    ref = p.predictor._features
    planes_view = np.ascontiguousarray(imgs[0].transpose(2, 0, 1)).transpose(1, 2, 0)
    for img in (imgs[0], planes_view):
        p.set_image(img)
        got = p.predictor._features
        assert torch.equal(got["image_embed"], ref["image_embed"])
        assert all(
            torch.equal(a, b) for a, b in zip(got["high_res_feats"], ref["high_res_feats"], strict=True)
        )
        assert p.predictor._orig_hw == [(1024, 1024)] and not p.predictor._is_batch
    with torch.inference_mode():
        p.predictor.set_image_batch(imgs)
    ref = p.predictor._features
    p.set_image_batch(imgs)
    assert torch.equal(p.predictor._features["image_embed"], ref["image_embed"])
    assert p.predictor._is_batch and p.predictor._orig_hw == [(1024, 1024)] * 2


@pytest.mark.parametrize(
    "dtype, nodata, as_mask",
    [
        ("uint16", 0, True),
        ("uint16", 0, False),  # the nodata value, compared on the device
        ("int16", -9999, False),
        ("uint16", 65535, False),  # its bits read as int16 are -1
        ("uint16", -9999.0, False),  # no uint16 equals it: every pixel valid
        ("uint16", 7.5, False),
        ("uint8", None, False),
        ("float32", -1.0, True),
    ],
)
def test_windows_stretched_on_the_device_equal_the_hosts(dtype: str, nodata, as_mask: bool) -> None:
    """``planes_tensor`` of a window as read (lookup on the device, here the CPU; validity from a mask or
    from the nodata value; padding) is exactly its host stretch."""
    from crownsam.common.raster import BandWindow
    from crownsam.pseudolabel.sam2_model import planes_tensor

    rng = np.random.default_rng(4)
    data = rng.integers(-300, 3000, (3, 900, 1000)).astype(dtype)
    representable = nodata is not None and float(nodata).is_integer()
    if representable and dtype != "float32":
        representable = np.iinfo(dtype).min <= nodata <= np.iinfo(dtype).max
    if representable:
        data[:, 100:140, 200:260] = nodata
    valid = data[0] != nodata if nodata is not None and as_mask else None
    stretch = [(-100.0, 2500.0), (0.0, 2000.0), (-200.0, 3000.0)]
    raw = BandWindow(data, stretch, valid, pad_to=1024, nodata=None if as_mask else nodata)
    rgb = raw.rgb()
    if representable:  # the host stretch itself: nodata pixels are 0
        assert not rgb[100:140, 200:260].any()
    got = planes_tensor([raw, rgb], CPU)
    assert got.dtype == torch.uint8 and got.shape == (2, 3, 1024, 1024)
    assert torch.equal(got[0], torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))))
    assert torch.equal(got[0], got[1])
    assert got[0, :, 900:].sum() == 0 and got[0, :, :, 1000:].sum() == 0  # padding


def test_embedding_of_a_window_as_read_equals_the_stretched_one(tiny) -> None:
    from crownsam.common.raster import BandWindow

    p = Sam2BoxPredictor(tiny, name="sam2.1_hiera_t", untrained=True)
    assert not p.stretches_on_device  # on the CPU the window pipeline's reader stretches
    rng = np.random.default_rng(5)
    data = rng.integers(0, 4000, (3, 1000, 1024)).astype(np.uint16)
    raw = BandWindow(data, [(100.0, 3000.0)] * 3, data[0] != 0, pad_to=1024)
    p.set_image(raw.rgb())
    ref = p.predictor._features
    p.set_image(raw)
    assert torch.equal(p.predictor._features["image_embed"], ref["image_embed"])
    assert p.predictor._orig_hw == [(1024, 1024)]
