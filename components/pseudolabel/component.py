"""KFP components: one pseudolabel shard (GPU), and the merge of all shards (CPU)."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from crownsam.common.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def pseudolabel_op(
    ortho_uri: str,
    ortho_fingerprint: str,
    segments: Input[Dataset],
    plan: Input[Dataset],
    shard: int,
    shards: int,
    labels: Output[Dataset],
    chm_uri: str = "",
    chm_fingerprint: str = "",
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
    min_ndvi: float = -1.0,
    red_band: int = 0,
    nir_band: int = 0,
    prompt: str = "box",
    negative_calibration: bool = False,
    exclusive: bool = True,
    fallback: bool = True,
    fallback_min_area_ratio: float = 0.2,
    fallback_max_area_ratio: float = 8.0,
    fallback_min_iou: float = 0.1,
    fallback_min_score: float = 0.5,
    workers: int = -1,
    window_batch: int = 1,
):
    """Pseudolabel shard ``shard`` of ``shards``; writes a folder with pseudolabels.gpkg + summary (and
    the claims merge-labels needs for exclusive labels). Parameters: ``Sam2Params``,
    ``PseudolabelParams`` and ``WindowLoopParams`` (``workers`` -1: the task's CPUs); ``chm_uri``
    (optional) gives treetops of segments without treetop columns.

    Finished windows are kept beside the output (``<labels>.parts``) so a retried task resumes.
    """
    from crownsam.common.artifacts import label_file
    from crownsam.common.window_pipeline import WindowLoopParams
    from crownsam.pseudolabel.api import pseudolabel_shard_artifact
    from crownsam.pseudolabel.params import PseudolabelParams, Sam2Params

    pseudolabel_shard_artifact(
        ortho_uri,
        label_file(segments.path),
        plan.path,
        labels.path,
        labels.uri,
        shard,
        shards,
        sam2=Sam2Params.from_pipeline(
            sam2_model=sam2_model, sam2_checkpoint=sam2_checkpoint, untrained=untrained
        ),
        params=PseudolabelParams.from_pipeline(
            min_ndvi=min_ndvi,
            red_band=red_band,
            nir_band=nir_band,
            prompt=prompt,
            negative_calibration=negative_calibration,
            exclusive=exclusive,
            fallback=fallback,
            fallback_min_area_ratio=fallback_min_area_ratio,
            fallback_max_area_ratio=fallback_max_area_ratio,
            fallback_min_iou=fallback_min_iou,
            fallback_min_score=fallback_min_score,
        ),
        chm=chm_uri or None,
        loop=WindowLoopParams.from_pipeline(workers=workers, window_batch=window_batch),
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_labels_op(parts: Input[List[Dataset]], labels: Output[Dataset], metrics: Output[Metrics]):
    """Gather the shard folders into one folder with pseudolabels.gpkg + pseudolabels.summary.json."""
    from crownsam.pseudolabel.merge import merge_shard_artifacts

    for key, value in merge_shard_artifacts([p.path for p in parts], labels.path).items():
        metrics.log_metric(key, value)
