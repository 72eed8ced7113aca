"""KFP component: COCO chips + instance JSON for one label set, with the test area held out."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from crownsam.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def export_coco_op(
    ortho_uri: str,
    ortho_fingerprint: str,
    labels: Input[Dataset],
    test_area_uri: str,
    manual_uri: str,
    coco: Output[Dataset],
    chip: int = 1024,
    chip_overlap: float = 0.25,
    rgb_bands: str = "3,2,1",
    val_fraction: float = 0.15,
    holdout_buffer_m: float = 10.0,
    val_block: int = 4,
    pseudo_classes: str = "off",
):
    """Chips and train/val/test COCO JSON (test = the held-out area with the manual crowns); parameters:
    ``ExportParams``; with the switch ``pseudo_classes`` (``PipelineClasses``) on, one category per
    pseudo-class of the labels. The artifact's metadata holds chip and annotation counts per split."""
    from crownsam.classes.params import PipelineClasses
    from crownsam.coco.export import export_coco
    from crownsam.coco.params import ExportParams
    from crownsam.common.artifacts import label_file

    params = ExportParams.from_pipeline(
        chip=chip,
        chip_overlap=chip_overlap,
        rgb_bands=rgb_bands,
        val_fraction=val_fraction,
        holdout_buffer_m=holdout_buffer_m,
        val_block=val_block,
        class_column=PipelineClasses.from_pipeline(pseudo_classes=pseudo_classes).class_column,
    )
    summary = export_coco(
        ortho_uri,
        label_file(labels.path),
        coco.path,
        holdout=test_area_uri or None,
        manual=manual_uri or None,
        params=params,
    )
    for split, counts in summary["splits"].items():
        coco.metadata.update({f"{split}_{k}": v for k, v in counts.items() if isinstance(v, int)})
