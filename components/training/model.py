"""Mask R-CNN R50-FPN for tree crowns: building, widening to more bands, starting weights, metadata.

The network is torchvision's ``maskrcnn_resnet50_fpn`` (v1) or ``maskrcnn_resnet50_fpn_v2`` (v2), built the
way torchvision's builders build it, with two classes (0 = background, 1 = tree), or one more per
pseudo-class of a multi-class export (``num_classes`` = 1 + the export's categories).

* **Bands.** The first convolution (``backbone.body.conv1``) takes ``n`` input bands. For ``n > 3`` the
  first three input channels keep the RGB filters and every extra channel starts from the mean of the
  three RGB filters; for ``n < 3`` every channel starts from that mean times ``3 / n`` (the response to a
  grey image is kept). Normalisation (``transform.image_mean/std``) keeps the ImageNet values for the first
  three bands and uses their mean for the others. The first three selected bands are treated as R, G, B.
* **Scale.** ``transform.min_size = max_size = chip`` and every input is padded to ``chip`` pixels, so the
  model never resizes: one input pixel is one orthophoto pixel, in training and in inference.
* **Starting weights** (``weights_uri``): a Mask R-CNN state dict (e.g. torchvision's COCO weights; the
  91-class predictor layers, whose shapes differ, are left at their initial values), an ImageNet ResNet-50
  state dict (loaded into ``backbone.body``; ``fc`` ignored), or a crownsam checkpoint. With starting
  weights the backbone follows torchvision's fine-tuning recipe: frozen batch norm (v1) and only
  ``trainable_layers`` (default 3) of the ResNet stages trained; from scratch everything is trained.
* **Metadata.** The model carries a plain dict ``model.crownsam_meta`` (bands, stretch, chip size,
  version, ...) that survives pickling, so a model loaded back from MLflow knows how to read an orthophoto.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crownsam.common.errors import FILE_ERRORS, InputError
from crownsam.training.config import VERSIONS

log = logging.getLogger(__name__)

NUM_CLASSES = 2  # background, tree
META_ATTR = "crownsam_meta"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Layers whose shape depends on the number of classes: not taken from COCO weights.
HEAD_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")


def build_model(
    version: str,
    num_bands: int = 3,
    *,
    chip: int = 1024,
    pretrained: bool = False,
    trainable_layers: int | None = None,
    num_classes: int = NUM_CLASSES,
    **kwargs: Any,
) -> nn.Module:
    """A Mask R-CNN R50-FPN (torchvision ``v1`` or ``v2``) with ``num_classes`` classes (background
    included; default background + tree) for ``num_bands`` inputs, with random weights. ``pretrained``
    picks torchvision's fine-tuning backbone set-up (see the module docstring) for weights loaded
    afterwards with :func:`load_weights`. ``kwargs`` go to torchvision's ``MaskRCNN`` (e.g.
    ``rpn_pre_nms_top_n_train``, ``box_detections_per_img``)."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import misc as misc_nn_ops

    if version not in VERSIONS:
        raise InputError(None, f"model version must be v1 or v2, got {version!r}")
    if num_bands < 1:
        raise InputError(None, f"the model needs at least one band, got {num_bands}")
    if num_classes < 2:
        raise InputError(None, f"the model needs background and at least one class, got {num_classes}")
    layers = trainable_layers if trainable_layers is not None else (3 if pretrained else 5)
    if not 0 <= layers <= 5:
        raise InputError(None, f"trainable backbone layers must be 0..5, got {layers}")
    kwargs = {"min_size": chip, "max_size": chip, **kwargs}
    if version == "v1":
        norm = misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
        backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=norm), layers)
        model = MaskRCNN(backbone, num_classes=num_classes, **kwargs)
    else:
        from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, RPNHead, _default_anchorgen
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

        backbone = _resnet_fpn_extractor(resnet50(weights=None), layers, norm_layer=nn.BatchNorm2d)
        anchors = _default_anchorgen()
        model = MaskRCNN(
            backbone,
            num_classes=num_classes,
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0], conv_depth=2),
            box_head=FastRCNNConvFCHead(
                (backbone.out_channels, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d
            ),
            mask_head=MaskRCNNHeads(backbone.out_channels, [256] * 4, 1, norm_layer=nn.BatchNorm2d),
            **kwargs,
        )
    if num_bands != 3:
        widen_first_conv(model, num_bands)
    return model


def widen_first_conv(model: Any, num_bands: int) -> None:
    """Give ``model`` a first convolution for ``num_bands`` inputs and matching normalisation, in place.

    Rule: new channel ``i < 3`` keeps RGB filter ``i``; new channel ``i >= 3`` gets the mean of the RGB
    filters. With fewer than three bands every channel gets that mean times ``3 / num_bands``.
    Normalisation: mean/std of band ``i`` = the current value for ``i < 3``, else the mean of the three.
    """
    body = model.backbone.body
    old: nn.Conv2d = body.conv1
    w = old.weight.detach()
    if w.shape[1] != 3:
        raise ValueError(f"first convolution already takes {w.shape[1]} bands")
    mean = w.mean(dim=1, keepdim=True)
    if num_bands >= 3:
        new_w = torch.cat([w, mean.expand(-1, num_bands - 3, -1, -1)], dim=1)
    else:
        new_w = (mean * (3.0 / num_bands)).expand(-1, num_bands, -1, -1)
    conv = nn.Conv2d(
        num_bands,
        old.out_channels,
        old.kernel_size,  # type: ignore[arg-type]  # (kh, kw) of a 2-d convolution
        old.stride,  # type: ignore[arg-type]
        old.padding,  # type: ignore[arg-type]
        bias=old.bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(new_w)
    conv.weight.requires_grad_(True)  # extra bands must be learnt, even when conv1 was frozen
    body.conv1 = conv
    t = model.transform
    mean_v, std_v = list(t.image_mean[:3]), list(t.image_std[:3])
    m, s = sum(mean_v) / 3.0, sum(std_v) / 3.0
    t.image_mean = [mean_v[i] if i < 3 else m for i in range(num_bands)]
    t.image_std = [std_v[i] if i < 3 else s for i in range(num_bands)]
    if num_bands < 3:
        t.image_mean, t.image_std = [m] * num_bands, [s] * num_bands


def _strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in sd.items()}


def read_state_dict(path: Path, source: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pt``/``.pth`` file: a bare state dict, a crownsam checkpoint
    (``{"model": ...}``), or ``{"state_dict": ...}``/``{"model_state_dict": ...}``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FILE_ERRORS as exc:
        raise InputError(source, f"not a readable PyTorch weights file ({type(exc).__name__})") from exc
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(source, "holds no state dict of tensors")
    return _strip_prefix(obj, "module.")


def load_weights(model: Any, uri: str, cache_dir: str | None = None) -> dict[str, int]:
    """Load starting weights from ``uri`` (local path, ``gs://``, ``https://``) into a 3-band ``model``.

    Detects the kind by its keys: ``backbone.body.*`` = a whole Mask R-CNN, ``layer1.*`` and ``conv1.*``
    = an ImageNet ResNet-50. Tensors whose shapes differ (the class-dependent predictor layers) are
    skipped. Returns counts {"loaded", "skipped_shape", "missing"}; raises InputError when nothing fits.
    """
    from crownsam.common.storage import fetch

    path = fetch(uri, cache_dir, what="weights")
    sd = read_state_dict(path, uri)
    if any(k.startswith("backbone.body.") for k in sd):
        target, kind = model, "Mask R-CNN"
    elif "conv1.weight" in sd and any(k.startswith("layer1.") for k in sd):
        target, kind = model.backbone.body, "ResNet-50 backbone"
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    else:
        raise InputError(uri, "neither a Mask R-CNN nor a ResNet-50 state dict (no backbone/conv1 keys)")
    own = target.state_dict()
    fit = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    skipped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    unexpected = [k for k in sd if k not in own]
    if not fit:
        raise InputError(uri, f"no tensor of this {kind} state dict fits the model")
    target.load_state_dict(fit, strict=False)
    missing = [k for k in own if k not in fit and not k.endswith("num_batches_tracked")]
    log.info(
        "%s: loaded %d tensors as %s weights; %d skipped (shape differs: %s), %d unexpected, %d left at "
        "initial values",
        uri,
        len(fit),
        kind,
        len(skipped),
        ", ".join(sorted({k.rsplit(".", 1)[0] for k in skipped})[:4]) or "none",
        len(unexpected),
        len(missing),
    )
    return {"loaded": len(fit), "skipped_shape": len(skipped), "missing": len(missing)}


def set_meta(model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Attach crownsam metadata (plain JSON-like values) to the model; it is pickled with it."""
    model.__dict__[META_ATTR] = dict(meta)


def get_meta(model: nn.Module) -> dict[str, Any]:
    """The metadata set by :func:`set_meta`, or ``{}``."""
    return dict(getattr(model, META_ATTR, None) or {})


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> nn.Module:
    """Rebuild the model stored in a crownsam checkpoint (``{"model", "meta"}``), in eval mode."""
    meta = ckpt["meta"]
    model = build_model(
        meta["version"],
        len(meta["bands"]),
        chip=int(meta["chip"]),
        pretrained=bool(meta.get("pretrained", False)),
        trainable_layers=meta.get("trainable_layers"),
        num_classes=len(meta.get("classes") or ("background", "tree")),
        **meta.get("model_kwargs", {}),
    )
    model.load_state_dict(ckpt["model"])
    set_meta(model, meta)
    return model.eval()


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, nn.Module)
    return inner
