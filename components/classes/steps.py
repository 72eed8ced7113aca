"""Pseudo-classes as a pipeline step: an orthophoto URI and a label artifact in, a folder artifact (the
classed GeoPackage, its centres JSON and report) out, with flat metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

from crownsam.classes.api import output_paths, pseudo_classes
from crownsam.classes.params import ClassesParams
from crownsam.common import storage
from crownsam.evaluation.steps import label_file

OUT_NAME = "pseudo_classes.gpkg"


def classes_step(
    ortho_uri: str, labels_artifact: str, out_dir: str, report_html: str, params: ClassesParams
) -> dict[str, float]:
    """Classify the crowns of a label artifact (a .gpkg or a folder holding one) into
    ``out_dir/pseudo_classes.gpkg`` (+ centres JSON and report beside it); copy the report to
    ``report_html``; return numbers for KFP's Metrics (counts per class, silhouette of the chosen K)."""
    out = str(Path(out_dir) / OUT_NAME)
    s = pseudo_classes(str(storage.fetch(ortho_uri, what="raster")), label_file(labels_artifact), out, params)
    Path(report_html).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(output_paths(out)[1], report_html)
    metrics = {"crowns": float(s["crowns"]), "classified": float(s["classified"]), "k": float(s["k"])}
    metrics["silhouette"] = float(s["silhouette"].get(str(s["k"]), float("nan")))
    metrics |= {f"class_{c}_crowns": float(n) for c, n in enumerate(s["counts"])}
    return {k: v for k, v in metrics.items() if v == v}  # KFP's Metrics take finite numbers only
