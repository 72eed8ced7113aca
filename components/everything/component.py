"""KFP components: the shard list, one segment-everything shard (GPU), the merge of all shards (CPU), and
add-missed (CPU).

The pipeline switch ``find_missed`` (``PipelineFindMissed``) reaches every one of them: when it is off the
shard list has one item, that shard and the merge write nothing but a note (no model is loaded), and
add-missed passes the labels through, because KFP's local runner can neither loop over an empty list nor pick
one of two conditional artifacts.

Every step parameter is a scalar named after its dataclass field's pipeline name, with the dataclass
default (``crownsam.everything.params``); the library builds the dataclass from them by keyword.
"""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from crownsam.common.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def everything_shards_op(shards: int, find_missed: bool = False) -> List[int]:
    """The shard numbers to run: ``0 .. shards-1``, or just ``[0]`` (a no-op shard) when the switch is off."""
    from crownsam.everything.api import shard_numbers
    from crownsam.everything.params import PipelineFindMissed

    return shard_numbers(shards, PipelineFindMissed.from_pipeline(find_missed=find_missed))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def segment_everything_op(
    ortho_uri: str,
    ortho_fingerprint: str,
    shard: int,
    shards: int,
    tiles: Output[Dataset],
    find_missed: bool = False,
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
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
    rgb_bands: str = "3,2,1",
    workers: int = -1,
):
    """Shard ``shard`` of ``shards``: a folder of finished tiles (``tiles/*.json`` + ``shard.json``).
    Parameters: ``EverythingParams``, ``Sam2Params`` and ``WindowLoopParams.workers`` (-1: the task's
    CPUs).

    Finished tiles are kept beside the output (``<tiles>.parts``) so a retried task resumes.
    """
    from crownsam.common.window_pipeline import WindowLoopParams
    from crownsam.everything.api import segment_everything_shard_artifact
    from crownsam.everything.params import EverythingParams, PipelineFindMissed
    from crownsam.pseudolabel.params import Sam2Params

    sam2 = Sam2Params.from_pipeline(
        sam2_model=sam2_model, sam2_checkpoint=sam2_checkpoint, untrained=untrained
    )
    params = EverythingParams.from_pipeline(
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
    )
    switch = PipelineFindMissed.from_pipeline(find_missed=find_missed)
    loop = WindowLoopParams.from_pipeline(workers=workers)
    segment_everything_shard_artifact(
        ortho_uri, tiles.path, tiles.uri, shard, shards, sam2, params, switch, loop
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_everything_op(
    parts: Input[List[Dataset]],
    masks: Output[Dataset],
    metrics: Output[Metrics],
    find_missed: bool = False,
):
    """Merge the shard folders into one folder with masks.gpkg + masks.summary.json."""
    from crownsam.everything.api import merge_everything_artifacts
    from crownsam.everything.params import PipelineFindMissed

    switch = PipelineFindMissed.from_pipeline(find_missed=find_missed)
    for key, value in merge_everything_artifacts([p.path for p in parts], masks.path, switch).items():
        metrics.log_metric(key, value)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def add_missed_op(
    ortho_uri: str,
    ortho_fingerprint: str,
    labels: Input[Dataset],
    masks: Input[Dataset],
    completed: Output[Dataset],
    metrics: Output[Metrics],
    chm_uri: str = "",
    missed_max_overlap: float = 0.2,
    missed_min_area: float = 1.0,
    missed_max_area: float = 60.0,
    missed_min_compactness: float = 0.3,
    missed_min_ndvi: float = 0.6,
    missed_min_height: float = 2.0,
    red_band: int = 0,
    nir_band: int = 0,
    missed_existing_source: str = "pseudo",
    find_missed: bool = False,
):
    """Labels plus the missed crowns (``label_source=amg``): a folder with completed.gpkg + summary; the
    labels unchanged when the switch is off. Parameters: ``AddMissedParams``, ``PipelineFindMissed``."""
    from crownsam.everything.add_missed import add_missed_artifact
    from crownsam.everything.params import AddMissedParams, PipelineFindMissed

    params = AddMissedParams.from_pipeline(
        missed_max_overlap=missed_max_overlap,
        missed_min_area=missed_min_area,
        missed_max_area=missed_max_area,
        missed_min_compactness=missed_min_compactness,
        missed_min_ndvi=missed_min_ndvi,
        missed_min_height=missed_min_height,
        red_band=red_band,
        nir_band=nir_band,
        missed_existing_source=missed_existing_source,
    )
    switch = PipelineFindMissed.from_pipeline(find_missed=find_missed)
    result = add_missed_artifact(labels.path, masks.path, ortho_uri, chm_uri, completed.path, params, switch)
    for key, value in result.items():
        metrics.log_metric(key, value)
