"""COCO export as a pipeline step: URIs and label artifacts in, an export folder out."""

from __future__ import annotations

from crownsam.coco.export import export_coco
from crownsam.common import storage
from crownsam.common.raster import parse_bands
from crownsam.evaluation.steps import label_file


def export_step(
    ortho_uri: str,
    labels_artifact: str,
    test_area_uri: str,
    manual_uri: str,
    out_dir: str,
    chip: int,
    overlap: float,
    bands: str,
    val_fraction: float,
    buffer_m: float,
    val_block: int = 4,
) -> dict[str, int]:
    """Run :func:`export_coco` on fetched inputs; return chip and annotation counts per split."""
    summary = export_coco(
        str(storage.fetch(ortho_uri, what="raster")),
        label_file(labels_artifact),
        out_dir,
        holdout=str(storage.fetch(test_area_uri, what="test area")) if test_area_uri else None,
        manual=str(storage.fetch(manual_uri, what="manual crowns")) if manual_uri else None,
        chip=chip,
        overlap=overlap,
        bands=parse_bands(bands),
        val_fraction=val_fraction,
        buffer_m=buffer_m,
        val_block=val_block,
    )
    return {
        f"{split}_{k}": int(v)
        for split, c in summary["splits"].items()
        for k, v in c.items()
        if isinstance(v, int)
    }
