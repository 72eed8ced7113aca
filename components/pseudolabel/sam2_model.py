"""SAM2 behind the prompt-predictor interface: model registry, checkpoint loading, batched box and point
prompts."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch

from crownsam.common.device import resolve_device
from crownsam.common.errors import FILE_ERRORS, CrownsamError, InputError
from crownsam.common.raster import BandWindow
from crownsam.pseudolabel.masks import LogitPatch, region_tuple, upsample_crop
from crownsam.pseudolabel.params import MODELS, UNTRAINED_WARNING, Sam2Params
from crownsam.pseudolabel.predictor import PromptBatch, WindowImage
from crownsam.tiling.plan import WindowTask

log = logging.getLogger(__name__)


def load_state_dict(path: Path, source: str) -> dict[str, torch.Tensor]:
    """Read a SAM2 checkpoint (``{"model": state_dict}`` or a bare state dict) with a clear error."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FILE_ERRORS as exc:
        raise InputError(source, f"not a readable PyTorch checkpoint ({type(exc).__name__})") from exc
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise InputError(source, "checkpoint holds no state dict (expected a 'model' entry)")
    return sd


def build_sam2_model(
    model: str,
    checkpoint: str | None,
    *,
    untrained: bool,
    device: torch.device,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> torch.nn.Module:
    """Build SAM2 from its packaged config; load weights from ``checkpoint`` (path, gs://, https://)
    or, only when ``untrained`` is asked for explicitly, keep seeded random weights."""
    if model not in MODELS:
        raise CrownsamError(None, f"--model {model}: choose one of {', '.join(MODELS)}")
    if checkpoint and untrained:
        raise CrownsamError(None, "--checkpoint and --untrained exclude each other")
    if not checkpoint and not untrained:
        raise CrownsamError(
            None, "no SAM2 checkpoint: pass --checkpoint URI (path, gs://, https://) or --untrained"
        )
    sd = None
    if checkpoint:
        from crownsam.common.storage import fetch

        sd = load_state_dict(fetch(checkpoint, cache_dir, what="SAM2 checkpoint"), checkpoint)
    import sam2  # noqa: F401  (initialises hydra's config module on import; kept out of our import time)
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    net = build_sam2(MODELS[model][0], ckpt_path=None, device="cpu", mode="eval")
    if sd is not None:
        try:
            missing, unexpected = net.load_state_dict(sd, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even with strict=False
            raise InputError(
                checkpoint, f"checkpoint does not fit {model}: weight shapes differ (wrong --model?)"
            ) from exc
        if missing or unexpected:
            raise InputError(
                checkpoint,
                f"checkpoint does not fit {model}: {len(missing)} missing and {len(unexpected)} "
                "unexpected weights (wrong --model?)",
            )
    else:
        log.warning(UNTRAINED_WARNING)
    return net.to(device).eval()


def sam2_box_predictor(sam2: Sam2Params, cache_dir: str | Path | None = None) -> Sam2BoxPredictor:
    """SAM2 as ``sam2`` says (model, weights, device), behind the box-prompt interface."""
    device = resolve_device(sam2.device)
    net = build_sam2_model(
        sam2.model, sam2.checkpoint, untrained=sam2.untrained, device=device, cache_dir=cache_dir
    )
    return Sam2BoxPredictor(net, name=sam2.model, untrained=sam2.untrained)


def planes_tensor(images: Sequence[WindowImage], device: torch.device) -> torch.Tensor:
    """``(N, 3, H, W)`` uint8 band planes on ``device``, equal to the images' pixels on the host.

    An (H, W, 3) uint8 image goes over as its three planes (a quarter of the bytes of float32). A
    :class:`BandWindow` of 8- or 16-bit bands goes over as read and is stretched there: its lookup tables,
    validity (a mask, or the nodata value compared there) and padding, as :meth:`BandWindow.rgb` does on
    the host. Pinned and non-blocking on CUDA.
    """
    pin = device.type == "cuda"

    def over(t: torch.Tensor) -> torch.Tensor:
        return (t.pin_memory() if pin else t).to(device, non_blocking=True)

    out = []
    for img in images:
        tables = img.tables() if isinstance(img, BandWindow) else None
        if isinstance(img, BandWindow) and tables is not None:
            data = img.data
            width_bits = 8 * data.dtype.itemsize
            raw = over(torch.from_numpy(data.view(f"i{data.dtype.itemsize}")))  # torch has no uint16 math
            idx = raw.to(torch.int64).bitwise_and_((1 << width_bits) - 1).view(raw.shape[0], -1)  # unsigned
            planes = torch.gather(over(torch.from_numpy(np.stack(tables))), 1, idx).view(raw.shape)
            if img.valid is not None:
                planes.mul_(over(torch.from_numpy(img.valid)))
            elif (nodata := img.nodata_bits()) is not None:
                planes.mul_(raw[0] != nodata)
            height, width, _ = img.shape
            if (height, width) != tuple(planes.shape[1:]):
                padded = planes.new_zeros((planes.shape[0], height, width))
                padded[:, : planes.shape[1], : planes.shape[2]] = planes
                planes = padded
            out.append(planes)
        else:
            rgb = img.rgb() if isinstance(img, BandWindow) else np.asarray(img)
            out.append(over(torch.from_numpy(rgb.transpose(2, 0, 1))))
    return torch.stack(out)


class Sam2BoxPredictor:
    """SAM2ImagePredictor with batched box and point prompts and crop-only mask upsampling.

    ``set_image`` runs the image encoder once; ``predict`` runs the prompt encoder and mask decoder for a
    batch of prompts and keeps, of each 256x256 low-resolution logit map, the part its region needs
    (upsampled there, it gives the numbers ``SAM2ImagePredictor.predict`` would give, without
    full-window masks).
    ``forward_seconds`` accumulates time spent inside SAM2's own forward passes.
    """

    def __init__(self, net: torch.nn.Module, *, name: str, untrained: bool, mask_threshold: float = 0.0):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        with warnings.catch_warnings():  # SAM2Transforms uses torch.jit.script, deprecated in torch 2.14
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            self.predictor = SAM2ImagePredictor(net, mask_threshold=mask_threshold)
        self.name = name
        self.untrained = untrained
        self.device = next(net.parameters()).device
        self.forward_seconds = 0.0
        self._batch: tuple[dict, list] = ({}, [])

    def _autocast(self) -> AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def set_image(self, image: WindowImage, window: WindowTask | None = None) -> None:
        t0 = time.perf_counter()
        self._embed([image])
        self._sync()
        self.forward_seconds += time.perf_counter() - t0

    def set_image_batch(self, images: list[WindowImage]) -> None:
        """Run the image encoder once on several windows (SAM2's ``set_image_batch``); then
        :meth:`use_image` picks the window that :meth:`predict` answers for."""
        t0 = time.perf_counter()
        self._embed(images)
        self._sync()
        self._batch = (self.predictor._features, list(self.predictor._orig_hw))
        self.forward_seconds += time.perf_counter() - t0

    @property
    def stretches_on_device(self) -> bool:
        """Whether :meth:`set_image` should be given windows as read (:class:`BandWindow`), to stretch them
        on the model's device: on CUDA (on the CPU the host's lookup is as fast, and the window pipeline
        does it in its reader thread)."""
        return self.device.type == "cuda"

    def _embed(self, images: Sequence[WindowImage]) -> None:
        """The image encoder on (H, W, 3) uint8 windows or windows as read, leaving the predictor as SAM2's
        ``set_image`` (one window) or ``set_image_batch`` does, with the encoder's input made on the model's
        device (:func:`planes_tensor`), where SAM2's transforms (scaling to [0, 1], resize, normalisation)
        run too, not on the host (18 ms of host CPU per 1024 px window when SAM2 makes its tensor from an
        interleaved image)."""
        p = self.predictor
        p.reset_predictor()
        p._orig_hw = [tuple(int(v) for v in img.shape[:2]) for img in images]
        with torch.inference_mode():
            x = planes_tensor(images, self.device).float().div(255)  # torchvision's to_tensor scaling
            x = p._transforms.transforms(x)  # SAM2's resize and normalisation, in float32 as SAM2 does
        with torch.inference_mode(), self._autocast():
            backbone = p.model.forward_image(x)
            _, feats, _, _ = p.model._prepare_backbone_features(backbone)
            if p.model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + p.model.no_mem_embed
            maps = [
                f.permute(1, 2, 0).view(len(images), -1, *size)
                for f, size in zip(feats[::-1], p._bb_feat_sizes[::-1], strict=True)
            ][::-1]
        p._features = {"image_embed": maps[-1], "high_res_feats": maps[:-1]}
        p._is_image_set, p._is_batch = True, len(images) > 1

    def use_image(self, i: int) -> None:
        """Answer prompts on image ``i`` of the last :meth:`set_image_batch` (its embedding, a view of the
        batch's: nothing is recomputed)."""
        feats, hws = self._batch
        p = self.predictor
        p._features = {
            "image_embed": feats["image_embed"][i : i + 1],
            "high_res_feats": [f[i : i + 1] for f in feats["high_res_feats"]],
        }
        p._orig_hw = [hws[i]]
        p._is_image_set, p._is_batch = True, False

    def low_res_logits(self, prompts: PromptBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder for one batch: (B, 256, 256) logits and (B,) scores.

        Boxes become two corner points (labels 2 and 3) placed before the batch's points, as in
        ``SAM2ImagePredictor._predict``; negative points keep SAM2's label 0 and padding its label -1.
        SAM2 reads a point's coordinates as a pixel index and adds half a pixel itself, so our continuous
        coordinates (a pixel centre at +0.5) are scaled to the model's frame and moved by -0.5.
        ``multimask_output=False`` (SAM2 picks among its multimask outputs itself when a single point is
        ambiguous: ``dynamic_multimask_via_stability``).
        """
        p = self.predictor
        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            coords, labels = [], []
            if prompts.boxes is not None:
                boxes = np.asarray(prompts.boxes, dtype=np.float32)
                _, _, _, box = p._prep_prompts(None, None, boxes, None, normalize_coords=True)
                coords.append(box.reshape(-1, 2, 2))
                labels.append(
                    torch.tensor([[2, 3]], dtype=torch.int, device=box.device).repeat(len(boxes), 1)
                )
            if prompts.points is not None and prompts.labels is not None:
                pts = torch.as_tensor(np.asarray(prompts.points, dtype=np.float32), device=p.device)
                pts = p._transforms.transform_coords(pts, normalize=True, orig_hw=p._orig_hw[-1]) - 0.5
                coords.append(pts)
                labels.append(torch.as_tensor(np.asarray(prompts.labels), dtype=torch.int, device=p.device))
            points = (torch.cat(coords, dim=1), torch.cat(labels, dim=1))
            sparse, dense = p.model.sam_prompt_encoder(points=points, boxes=None, masks=None)
            n = points[0].shape[0]
            low_res, iou, _, _ = p.model.sam_mask_decoder(
                image_embeddings=p._features["image_embed"][-1].unsqueeze(0),
                image_pe=p.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
                repeat_image=n > 1,
                high_res_features=[f[-1].unsqueeze(0) for f in p._features["high_res_feats"]],
            )
        self._sync()
        self.forward_seconds += time.perf_counter() - t0
        return low_res[:, 0].float().cpu(), iou[:, 0].float().cpu()

    def out_hw(self) -> tuple[int, int]:
        """The size of the image given to ``set_image`` (the window, padded)."""
        h, w = self.predictor._orig_hw[-1]
        return int(h), int(w)

    def predict(self, prompts: PromptBatch, regions: np.ndarray) -> tuple[list[LogitPatch], np.ndarray]:
        logits, scores = self.low_res_logits(prompts)
        out_hw = self.out_hw()
        low = logits.numpy() - np.float32(self.predictor.mask_threshold)  # the interface's masks: > 0
        patches = [LogitPatch.from_map(low[i], out_hw, region_tuple(regions[i])) for i in range(len(regions))]
        return patches, scores.numpy()

    def predict_boxes(self, boxes: np.ndarray, regions: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Masks (boolean, one per region) for a batch of XYXY boxes (window pixels)."""
        logits, scores = self.low_res_logits(PromptBatch(boxes=np.asarray(boxes, dtype=np.float32)))
        out_hw = self.out_hw()
        thr = self.predictor.mask_threshold
        masks = [
            (upsample_crop(logits[i], out_hw, region_tuple(regions[i])) > thr).numpy()
            for i in range(len(boxes))
        ]
        return masks, scores.numpy()
