"""KFP component: pseudo-classes of the pseudolabels (CPU image; SAM2 features also run there, on CPU)."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from crownsam.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def pseudo_classes_op(
    ortho_uri: str,
    ortho_fingerprint: str,
    labels: Input[Dataset],
    classed: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    pseudo_classes: str = "off",
    k_range: str = "2..8",
    features: str = "spectral",
    band_names: str = "",
    indices: str = "ndvi,ndre,gndvi,gcc",
    percentiles: str = "10.0,90.0",
    texture_px: int = 5,
    min_pixels: int = 16,
    rgb_bands: str = "3,2,1",
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
):
    """A folder with pseudo_classes.gpkg (+ .centres.json, .report.html), the report, and metrics; with
    ``pseudo_classes = off`` the labels unchanged. Parameters: ``PipelineClasses``, ``ClassesParams``
    and ``Sam2Params``."""
    from crownsam.classes.api import pseudo_classes_artifact
    from crownsam.classes.params import ClassesParams, PipelineClasses
    from crownsam.pseudolabel.params import Sam2Params

    values = pseudo_classes_artifact(
        ortho_uri,
        labels.path,
        classed.path,
        report.path,
        PipelineClasses.from_pipeline(pseudo_classes=pseudo_classes),
        ClassesParams.from_pipeline(
            k_range=k_range,
            features=features,
            band_names=band_names,
            indices=indices,
            percentiles=percentiles,
            texture_px=texture_px,
            min_pixels=min_pixels,
            rgb_bands=rgb_bands,
        ),
        sam2=Sam2Params.from_pipeline(
            sam2_model=sam2_model, sam2_checkpoint=sam2_checkpoint, untrained=untrained
        ),
    )
    for key, value in values.items():
        metrics.log_metric(key, value)
