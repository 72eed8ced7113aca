"""The training configuration: one dataclass, validated before any data or model is touched."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from crownsam.common.errors import CrownsamError
from crownsam.training.model import VERSIONS


@dataclass
class TrainConfig:
    """Everything ``crownsam train`` takes, as plain values (see ``components/training/README.md``).

    ``bands``: orthophoto band numbers to train on (each must be in the export's bands), None = all
    exported bands. ``max_iters``: stop after this many optimiser steps in total (tests, benchmarks),
    None = ``epochs`` full epochs. ``patience``: stop when validation segm AP has not improved for this
    many validations (0 = never). ``tracking``: False runs without MLflow (no run id).
    ``model_kwargs``: extra torchvision ``MaskRCNN`` arguments (e.g. ``rpn_pre_nms_top_n_train``).
    """

    coco_dir: str
    out_dir: str
    label_source: str = "unknown"
    bands: tuple[int, ...] | None = None
    model_version: str = "v1"
    weights: str | None = None
    trainable_layers: int | None = None
    epochs: int = 20
    max_iters: int | None = None
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 200
    clip_grad_norm: float | None = 10.0
    batch_size: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int | None = None  # None: 0 on CPU, min(4, cores) on CUDA
    threads: int | None = None  # torch CPU threads; None: torch's default (cores / processes under torchrun)
    patience: int = 5
    resume: bool = False
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str = "crownsam"
    run_name: str | None = None
    register_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    evaluate_test: bool = True  # COCO statistics and a picture on the test split at the end
    progress: bool = True

    def validate(self) -> None:
        """Raise CrownsamError (one line, exit 2 in the CLI) for values that cannot work."""

        def bad(what: str, problem: str) -> CrownsamError:
            return CrownsamError(None, f"{what}: {problem}")

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
