"""SAM2 behind the BoxPredictor interface: model registry, checkpoint loading, batched box prompts."""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch

from crownsam.common.errors import CrownsamError, InputError
from crownsam.pseudolabel.masks import upsample_crop
from crownsam.tiling.plan import WindowTask

log = logging.getLogger(__name__)

# model name -> (packaged hydra config, official checkpoint file name)
MODELS: dict[str, tuple[str, str]] = {
    "sam2.1_hiera_t": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "sam2.1_hiera_s": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "sam2.1_hiera_b+": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "sam2.1_hiera_l": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}

UNTRAINED_WARNING = (
    "UNTRAINED SAM2: random weights, no checkpoint. Masks are meaningless; use this only to test "
    "plumbing and speed, never to judge label quality."
)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CrownsamError(None, f"--device {device}: no CUDA device is available here; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise CrownsamError(None, f"--device {device}: expected auto, cpu or cuda[:N]")
    return torch.device(device)


def load_state_dict(path: Path, source: str) -> dict[str, torch.Tensor]:
    """Read a SAM2 checkpoint (``{"model": state_dict}`` or a bare state dict) with a clear error."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
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


class Sam2BoxPredictor:
    """SAM2ImagePredictor with batched box prompts and crop-only mask upsampling.

    ``set_image`` runs the image encoder once; ``predict_boxes`` runs the prompt encoder and mask decoder
    for a batch of boxes and upsamples each 256x256 low-resolution logit map only inside its region
    (the same numbers ``SAM2ImagePredictor.predict`` would give there, without full-window masks).
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

    def _autocast(self) -> AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def set_image(self, image: np.ndarray, window: WindowTask | None = None) -> None:
        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            self.predictor.set_image(image)
        self._sync()
        self.forward_seconds += time.perf_counter() - t0

    def low_res_logits(self, boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder for a batch of XYXY boxes: (B, 256, 256) logits, (B,) scores."""
        p = self.predictor
        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            _, _, _, box = p._prep_prompts(None, None, boxes, None, normalize_coords=True)
            labels = torch.tensor([[2, 3]], dtype=torch.int, device=box.device).repeat(box.shape[0], 1)
            sparse, dense = p.model.sam_prompt_encoder(
                points=(box.reshape(-1, 2, 2), labels), boxes=None, masks=None
            )
            low_res, iou, _, _ = p.model.sam_mask_decoder(
                image_embeddings=p._features["image_embed"][-1].unsqueeze(0),
                image_pe=p.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
                repeat_image=box.shape[0] > 1,
                high_res_features=[f[-1].unsqueeze(0) for f in p._features["high_res_feats"]],
            )
        self._sync()
        self.forward_seconds += time.perf_counter() - t0
        return low_res[:, 0].float().cpu(), iou[:, 0].float().cpu()

    def predict_boxes(self, boxes: np.ndarray, regions: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        logits, scores = self.low_res_logits(np.asarray(boxes, dtype=np.float32))
        out_hw = tuple(self.predictor._orig_hw[-1])
        thr = self.predictor.mask_threshold
        masks = [
            (upsample_crop(logits[i], out_hw, tuple(int(v) for v in regions[i])) > thr).numpy()
            for i in range(len(boxes))
        ]
        return masks, scores.numpy()
