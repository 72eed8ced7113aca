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
    overlap: float = 0.25,
    bands: str = "3,2,1",
    val_fraction: float = 0.15,
    buffer_m: float = 10.0,
    val_block: int = 4,
):
    """Chips and train/val/test COCO JSON (test = the held-out area with the manual crowns)."""
    from crownsam.coco.steps import export_step

    coco.metadata.update(
        export_step(
            ortho_uri,
            labels.path,
            test_area_uri,
            manual_uri,
            coco.path,
            chip,
            overlap,
            bands,
            val_fraction,
            buffer_m,
        )
    )
