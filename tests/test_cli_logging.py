"""The CLI's logging: each crownsam message reaches stderr once, also after a library (SAM2) logs through
the module-level ``logging.info``, which would configure the root logger with a second stderr handler."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging
from crownsam.cli import setup_logging
setup_logging(False)
logging.info("Computing image embeddings")  # what sam2_image_predictor does in set_image
logging.getLogger("crownsam.test").warning("a warning of ours")
"""


def test_a_crownsam_warning_is_printed_once_after_a_library_logs_at_module_level() -> None:
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    assert r.stderr.count("a warning of ours") == 1, r.stderr
    assert "crownsam: WARNING: a warning of ours" in r.stderr
    assert "Computing image embeddings" not in r.stderr
