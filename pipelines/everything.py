"""Sub-pipeline: the crowns the coarse segments missed. Shards of segment-everything in parallel (GPU) ->
merge -> add-missed onto the labels (``label_source=amg``).

With the switch ``find_missed`` off (the default) it passes the labels through: one no-op shard and merge
write a note, add-missed copies the labels (KFP's local runner can neither loop over an empty list nor pick
one of two conditional artifacts, so the tasks run either way; on a cluster the no-op shard is one short
task on a GPU node).
"""

from kfp import dsl
from kfp.dsl import Dataset, Input

from crownsam.everything.component import (
    add_missed_op,
    everything_shards_op,
    merge_everything_op,
    segment_everything_op,
)
from crownsam.pipelines.pseudolabel import cpu_task, gpu_task


@dsl.pipeline(name="crownsam-find-missed", description="Crowns no coarse segment found, added to the labels")
def find_missed_pipeline(
    ortho_uri: str,
    ortho_fingerprint: str,
    labels: Input[Dataset],
    find_missed: bool = False,
    shards: int = 4,
    chm_uri: str = "",
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
    rgb_bands: str = "3,2,1",
    amg_tile: int = 1024,
    amg_padding: int = 128,
    amg_passes: int = 4,
    amg_pred_iou_start: float = 0.93,
    amg_pred_iou_step: float = 0.05,
    amg_pred_iou_floor: float = 0.6,
    amg_stability_start: float = 0.93,
    amg_stability_step: float = 0.05,
    amg_stability_floor: float = 0.6,
    amg_min_gain: float = 0.001,
    amg_target_coverage: float = 0.99,
    amg_max_overlap: float = 0.5,
    amg_min_mask_px: int = 100,
    amg_points_per_side: int = 32,
    amg_points_per_batch: int = 64,
    amg_box_nms_thresh: float = 0.7,
    missed_max_overlap: float = 0.2,
    missed_min_area: float = 1.0,
    missed_max_area: float = 60.0,
    missed_min_compactness: float = 0.3,
    missed_min_ndvi: float = 0.6,
    missed_min_height: float = 2.0,
    red_band: int = 0,
    nir_band: int = 0,
    missed_existing_source: str = "pseudo",
) -> Dataset:
    """Parameters: ``PipelineFindMissed``, ``Sam2Params``, ``EverythingParams`` and ``AddMissedParams``
    (pipeline names); ``shards`` as for the pseudolabels; ``chm_uri`` (optional) for the height rule."""
    numbers = cpu_task(
        everything_shards_op(shards=shards, find_missed=find_missed).set_display_name(
            "segment-everything shards"
        ),
        memory="1G",
    )
    with dsl.ParallelFor(numbers.output, name="everything-shards") as shard:
        part = gpu_task(
            segment_everything_op(
                ortho_uri=ortho_uri,
                ortho_fingerprint=ortho_fingerprint,
                shard=shard,
                shards=shards,
                find_missed=find_missed,
                sam2_model=sam2_model,
                sam2_checkpoint=sam2_checkpoint,
                untrained=untrained,
                amg_tile=amg_tile,
                amg_padding=amg_padding,
                amg_passes=amg_passes,
                amg_pred_iou_start=amg_pred_iou_start,
                amg_pred_iou_step=amg_pred_iou_step,
                amg_pred_iou_floor=amg_pred_iou_floor,
                amg_stability_start=amg_stability_start,
                amg_stability_step=amg_stability_step,
                amg_stability_floor=amg_stability_floor,
                amg_min_gain=amg_min_gain,
                amg_target_coverage=amg_target_coverage,
                amg_max_overlap=amg_max_overlap,
                amg_min_mask_px=amg_min_mask_px,
                amg_points_per_side=amg_points_per_side,
                amg_points_per_batch=amg_points_per_batch,
                amg_box_nms_thresh=amg_box_nms_thresh,
                rgb_bands=rgb_bands,
            ).set_display_name("segment-everything shard")
        )
    merged = cpu_task(
        merge_everything_op(
            parts=dsl.Collected(part.outputs["tiles"]), find_missed=find_missed
        ).set_display_name("merge segment-everything shards"),
        memory="8G",
    )
    completed = cpu_task(
        add_missed_op(
            ortho_uri=ortho_uri,
            ortho_fingerprint=ortho_fingerprint,
            labels=labels,
            masks=merged.outputs["masks"],
            chm_uri=chm_uri,
            find_missed=find_missed,
            missed_max_overlap=missed_max_overlap,
            missed_min_area=missed_min_area,
            missed_max_area=missed_max_area,
            missed_min_compactness=missed_min_compactness,
            missed_min_ndvi=missed_min_ndvi,
            missed_min_height=missed_min_height,
            red_band=red_band,
            nir_band=nir_band,
            missed_existing_source=missed_existing_source,
        ).set_display_name("add missed crowns (if find_missed)"),
        memory="8G",
    )
    return completed.outputs["completed"]
