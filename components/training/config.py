"""The training configuration: one dataclass, validated before any data or model is touched."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from crownsam.common.cli_util import bands_arg
from crownsam.common.device import DEVICE_HELP
from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, param

VERSIONS = ("v1", "v2")


def bands_or_all(text: str) -> tuple[int, ...] | None:
    """``auto`` -> None (all exported bands), else a band list such as ``3,2,1,4``."""
    return None if text.strip().lower() == "auto" else bands_arg(text)


@dataclass
class TrainConfig(Params):
    """Everything ``crownsam train`` takes (see ``components/training/README.md``); each field's help says
    what it does. Checked by :meth:`validate` (called by :func:`crownsam.training.train.train`), not when
    built.

    ``model_kwargs``: extra torchvision ``MaskRCNN`` arguments (e.g. ``rpn_pre_nms_top_n_train``).
    """

    validate_on_init: ClassVar[bool] = False

    coco_dir: str = param(
        "", "folder written by `crownsam export-coco`", flag="--coco", pipeline=None, cli_required=True
    )
    out_dir: str = param(
        "",
        "run folder (checkpoints/, metrics.json, run.json)",
        flag="--out",
        pipeline=None,
        cli_required=True,
    )
    label_source: str = param("unknown", "name of the labels, e.g. coarse or pseudo")
    bands: tuple[int, ...] | None = param(
        None, "orthophoto bands to train on, e.g. 3,2,1,4 (default: all exported)", parse=bands_or_all,
        pipeline=None,
    )  # fmt: skip
    model_version: str = param(
        "v2", "torchvision maskrcnn_resnet50_fpn v1 or v2", flag="--model", choices=VERSIONS
    )
    weights: str | None = param(
        None, "starting weights URI: Mask R-CNN (COCO) or ResNet-50 (ImageNet) state dict",
        pipeline="init_weights", unset="",
    )  # fmt: skip
    trainable_layers: int | None = param(
        None, "ResNet stages trained with --weights (default 3)", pipeline=None
    )
    epochs: int = param(20, "epochs")
    max_iters: int | None = param(None, "stop after N optimiser steps in total (default: epochs)", unset=0)
    lr: float = param(0.005, "base learning rate")
    momentum: float = param(0.9, "SGD momentum", flag="", pipeline=None)
    weight_decay: float = param(1e-4, "SGD weight decay", flag="", pipeline=None)
    warmup_iters: int = param(200, "linear warm-up steps", flag="", pipeline=None)
    clip_grad_norm: float | None = param(10.0, "gradient norm clip", flag="", pipeline=None)
    batch_size: int = param(2, "chips per step and process")
    seed: int = param(0, "seed of weights, batches and augmentations", pipeline=None)
    device: str = param("auto", DEVICE_HELP, pipeline=None)
    amp: bool = param(True, "mixed precision (bf16/fp16 autocast) on CUDA", pipeline=None)
    num_workers: int | None = param(None, "data loader workers (default 0 on CPU, 4 on CUDA)", pipeline=None)
    threads: int | None = param(None, "torch CPU threads (default: torch's)", pipeline=None)
    patience: int = param(
        5, "early stopping after N validations without a better val segm AP (0: off)", pipeline=None
    )
    resume: bool = param(False, "continue from OUT/checkpoints/last.pt", pipeline=None)
    tracking: bool = param(True, "log to MLflow", pipeline=None)
    tracking_uri: str | None = param(
        None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else OUT/mlflow.db)",
        pipeline="mlflow_tracking_uri", unset="",
    )  # fmt: skip
    experiment: str = param("crownsam", "MLflow experiment", pipeline="mlflow_experiment")
    run_name: str | None = param(None, "MLflow run name", pipeline=None)
    register_name: str | None = param(
        None,
        "register the model under this name in the MLflow model registry",
        flag="--register",
        pipeline=None,
    )
    tags: dict[str, str] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = param(None, "cache for gs:// and https:// weights", pipeline=None)
    evaluate_test: bool = param(
        True, "COCO statistics and a picture on the test split at the end", flag="", pipeline=None
    )
    progress: bool = param(True, "progress bar", pipeline=None)

    def validate(self) -> None:
        """Raise CrownsamError (one line, exit 2 in the CLI) for values that cannot work."""

        def bad(what: str, problem: str) -> CrownsamError:
            return CrownsamError(None, f"{what}: {problem}")

        if not self.coco_dir or not self.out_dir:
            raise bad("--coco/--out", "the COCO folder and the run folder are needed")
        if self.model_version not in VERSIONS:
            raise bad("--model", f"must be v1 or v2, got {self.model_version!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("--epochs", f"must be a positive integer, got {self.epochs!r}")
        if self.max_iters is not None and (not isinstance(self.max_iters, int) or self.max_iters < 1):
            raise bad("--max-iters", f"must be a positive integer, got {self.max_iters!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise bad("--lr", f"must be a positive number, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", f"must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0 or self.warmup_iters < 0:
            raise bad("weight decay / warmup", "must not be negative")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise bad("clip_grad_norm", f"must be positive or None, got {self.clip_grad_norm}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("--batch-size", f"must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("--seed", f"must be a non-negative integer, got {self.seed!r}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise bad("--device", f"expected auto, cpu or cuda[:N], got {self.device!r}")
        if self.num_workers is not None and self.num_workers < 0:
            raise bad("--num-workers", f"must be >= 0, got {self.num_workers}")
        if self.threads is not None and self.threads < 1:
            raise bad("--threads", f"must be >= 1, got {self.threads}")
        if self.patience < 0:
            raise bad("--patience", f"must be >= 0, got {self.patience}")
        if self.trainable_layers is not None and not 0 <= self.trainable_layers <= 5:
            raise bad("--trainable-layers", f"must be 0..5, got {self.trainable_layers}")
        if self.bands is not None:
            if not self.bands:
                raise bad("--bands", "is empty")
            if any(b < 1 for b in self.bands):
                raise bad("--bands", "band numbers are 1-based (1, 2, ...)")
        if not self.label_source or any(c.isspace() for c in self.label_source):
            raise bad("--label-source", f"must be a name without spaces, got {self.label_source!r}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = list(self.bands) if self.bands is not None else None
        return d


@dataclass(frozen=True)
class InferenceParams(Params):
    """Tiled Mask R-CNN inference over an orthophoto (``predict``, and ``evaluate-model``'s Jaccard)."""

    window: int = param(1024, "window size in px", ge=32, pipeline=None)
    overlap: float = param(0.25, "window overlap fraction", ge=0.0, lt=1.0, pipeline=None)
    score_threshold: float = param(
        0.5, "keep detections scoring at least this", ge=0.0, le=1.0, pipeline=None
    )
    device: str = param("auto", DEVICE_HELP, pipeline=None)
    batch_size: int = param(1, "windows per forward pass", ge=1, pipeline=None)

    def check(self) -> None:
        from crownsam.common.device import check_device_name

        check_device_name(self.device)
