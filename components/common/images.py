"""Container images the KFP components run in (set at compile time; see docker/)."""

from __future__ import annotations

import os

from crownsam import __version__

REGISTRY = os.environ.get("CROWNSAM_REGISTRY", "ghcr.io/crownsam")
# CPU image: geo steps, evaluation, COCO export, comparison. GPU image: SAM2 and Mask R-CNN.
CPU_IMAGE = os.environ.get("CROWNSAM_CPU_IMAGE", f"{REGISTRY}/crownsam-cpu:{__version__}")
GPU_IMAGE = os.environ.get("CROWNSAM_GPU_IMAGE", f"{REGISTRY}/crownsam-gpu:{__version__}")
