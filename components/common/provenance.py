"""Which code and which container image produced a result (recorded with models and comparisons).

Images get both at build time (``docker/build.sh`` passes ``--build-arg CROWNSAM_GIT_COMMIT`` and
``CROWNSAM_IMAGE``, the Dockerfiles put them into the environment); outside an image the checkout's HEAD
is the commit and there is no image.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

COMMIT_ENV = "CROWNSAM_GIT_COMMIT"
IMAGE_ENV = "CROWNSAM_IMAGE"


def git_commit() -> str:
    """``$CROWNSAM_GIT_COMMIT`` (set in images), else the checkout's short HEAD, else ``unknown``."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def image_ref() -> str:
    """The container image this process runs in (``$CROWNSAM_IMAGE``, set in images), else ``none``."""
    return os.environ.get(IMAGE_ENV) or "none"
