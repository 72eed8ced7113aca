"""KFP components: one segment-everything shard (GPU), the merge of all shards (CPU), and add-missed (CPU).

Every step parameter is a scalar named after its dataclass field's pipeline name, with the dataclass
default (``crownsam.everything.params``); the library builds the dataclass from them by keyword.
"""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from crownsam.common.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def segment_everything_op(
    ortho_uri: str,
    ortho_fingerprint: str,
    shard: int,
    shards: int,
    tiles: Output[Dataset],
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
):
    """Shard ``shard`` of ``shards``: a folder of finished tiles (``tiles/*.json`` + ``shard.json``).
    Parameters: ``EverythingParams`` and ``Sam2Params``.

    Finished tiles are kept beside the output (``<tiles>.parts``) so a retried task resumes.
    """
    from crownsam.everything.api import segment_everything_shard_artifact
    from crownsam.everything.params import EverythingParams
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
    segment_everything_shard_artifact(ortho_uri, tiles.path, tiles.uri, shard, shards, sam2, params)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_everything_op(parts: Input[List[Dataset]], masks: Output[Dataset], metrics: Output[Metrics]):
    """Merge the shard folders into one folder with masks.gpkg + masks.summary.json."""
    from crownsam.everything.api import merge_everything_artifacts

    for key, value in merge_everything_artifacts([p.path for p in parts], masks.path).items():
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
):
    """Labels plus the missed crowns (``label_source=amg``): a folder with completed.gpkg + summary.
    Parameters: ``AddMissedParams``."""
    from crownsam.everything.add_missed import add_missed_artifact
    from crownsam.everything.params import AddMissedParams

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
    result = add_missed_artifact(labels.path, masks.path, ortho_uri, chm_uri, completed.path, params)
    for key, value in result.items():
        metrics.log_metric(key, value)
