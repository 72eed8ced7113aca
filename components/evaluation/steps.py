"""The evaluation as a pipeline step: URIs and artifact folders in, report + flat metrics out."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from crownsam.common import storage
from crownsam.evaluation.api import evaluate_files

UNTRAINED_BANNER = "UNTRAINED SAM2: these pseudolabels come from random weights and are meaningless"


def label_file(artifact_path: str) -> str:
    """The GeoPackage inside a label artifact: the file itself, or the single .gpkg in a folder."""
    p = Path(artifact_path)
    if p.is_file():
        return str(p)
    found = sorted(p.glob("*.gpkg"))
    if len(found) != 1:
        raise FileNotFoundError(f"{artifact_path}: expected one .gpkg, found {len(found)}")
    return str(found[0])


def evaluate_step(
    manual_uri: str,
    test_area_uri: str,
    ortho_uri: str,
    labels: dict[str, str],
    out_dir: str,
    report_html: str,
    untrained: bool = False,
) -> dict[str, float]:
    """Evaluate label artifacts against the flight's manual crowns; copy the report to ``report_html``;
    return the finite metrics (KFP's Metrics artifact takes numbers only)."""
    ev = evaluate_files(
        str(storage.fetch(manual_uri, what="manual crowns")),
        {name: label_file(path) for name, path in labels.items()},
        out_dir,
        area=str(storage.fetch(test_area_uri, what="test area")) if test_area_uri else None,
        ortho=str(storage.fetch(ortho_uri, what="raster")) if ortho_uri else None,
        banner=UNTRAINED_BANNER if untrained else None,
    )
    Path(report_html).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(out_dir) / "report.html", report_html)
    return {k: float(v) for k, v in ev.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
