"""KFP component: pseudo-classes of a label set (CPU image; SAM2 features also run there, on CPU)."""

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
    k: int = 0,
    k_range: str = "2..8",
    features: str = "spectral",
    band_names: str = "",
    indices: str = "ndvi,ndre,gndvi,gcc",
    percentiles: str = "10.0,90.0",
    texture_px: int = 5,
    min_pixels: int = 16,
    seed: int = 0,
    restarts: int = 10,
    batch_size: int = 1024,
    silhouette_sample: int = 5000,
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
    rgb_bands: str = "3,2,1",
    device: str = "auto",
):
    """A folder with pseudo_classes.gpkg (+ .centres.json, .report.html), the report, and metrics."""
    from crownsam.classes.params import ClassesParams
    from crownsam.classes.steps import classes_step

    params = ClassesParams.from_pipeline(
        k=k,
        k_range=k_range,
        features=features,
        band_names=band_names,
        indices=indices,
        percentiles=percentiles,
        texture_px=texture_px,
        min_pixels=min_pixels,
        seed=seed,
        restarts=restarts,
        batch_size=batch_size,
        silhouette_sample=silhouette_sample,
        sam2_model=sam2_model,
        sam2_checkpoint=sam2_checkpoint,
        untrained=untrained,
        rgb_bands=rgb_bands,
        device=device,
    )
    for key, value in classes_step(ortho_uri, labels.path, classed.path, report.path, params).items():
        metrics.log_metric(key, value)
