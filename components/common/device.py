"""Where a model runs: ``auto``, ``cpu`` or ``cuda[:N]``, checked before anything is loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crownsam.common.errors import CrownsamError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto|cpu|cuda[:N]: auto takes the GPU when there is one"


def check_device_name(name: str) -> str:
    """``name`` when it is ``auto``, ``cpu`` or ``cuda[:N]``; else a one-line error."""
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise CrownsamError(None, f"--device {name}: expected auto, cpu or cuda[:N]")


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error. Under torchrun
    (``local_rank`` given) a CUDA process takes GPU ``local_rank``."""
    import torch

    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CrownsamError(None, f"--device {name}: no CUDA device is available here; use --device cpu")
        if local_rank is not None:
            return torch.device("cuda", local_rank)
    return torch.device(name)
