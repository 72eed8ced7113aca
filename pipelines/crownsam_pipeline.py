"""The crownsam pipeline: a flight in, better labels and a better (registered) model out.

fingerprints -> coarse segments (given, or from the CHM) -> tile -> pseudolabel shards (GPU, parallel)
-> merge -> the crowns the coarse segments missed (``find_missed``: segment-everything shards (GPU) ->
merge -> add-missed; off by default, then the pseudolabels pass through) -> Jaccard evaluation of the label
sets (coarse, pseudo, and completed when ``find_missed`` is on) -> pseudo-classes of the pseudolabels
(``pseudo_classes``: off by default, then the labels pass through) -> per label set: COCO export (one
category per pseudo-class when on) -> Mask R-CNN training (GPU) -> evaluation on the held-out test area
(``refine`` box|sessrs: the predicted crowns also refined by SAM2 and evaluated beside them; off by default)
-> comparison + MLflow registry (champion/challenger).

Big rasters travel as URIs with a content fingerprint (so KFP's cache key follows the data); plans,
labels, metrics, reports and models are artifacts.
"""

from kfp import dsl

from crownsam.classes.component import pseudo_classes_op
from crownsam.coco.component import export_coco_op
from crownsam.common.component import fingerprint_op
from crownsam.comparison.component import compare_op
from crownsam.evaluation.component import evaluate_labels_op
from crownsam.flights.component import prepare_segments_op
from crownsam.pipelines.everything import find_missed_pipeline
from crownsam.pipelines.pseudolabel import cpu_task, gpu_task, pseudolabel_pipeline
from crownsam.training.component import evaluate_model_op, train_op

PIPELINE_NAME = "crownsam"


@dsl.pipeline(
    name=PIPELINE_NAME, description="SAM2 pseudolabels for tree crowns, and Mask R-CNN on both label sets"
)
def crownsam_pipeline(
    flight_id: str,
    ortho_uri: str,
    manual_uri: str,
    test_area_uri: str,
    coarse_uri: str = "",
    chm_uri: str = "",
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
    shards: int = 4,
    rgb_bands: str = "3,2,1",
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
    chip: int = 1024,
    chip_overlap: float = 0.25,
    val_fraction: float = 0.15,
    val_block: int = 4,
    holdout_buffer_m: float = 10.0,
    epochs: int = 20,
    max_iters: int = 0,
    lr: float = 0.005,
    batch_size: int = 2,
    model_version: str = "v2",
    init_weights: str = "",
    mlflow_tracking_uri: str = "",
    mlflow_experiment: str = "crownsam",
    registered_model_name: str = "crownsam-maskrcnn",
    pseudo_classes: str = "off",
    window_batch: int = 1,
    find_missed: bool = False,
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
    refine: str = "none",
    refine_t1: float = 0.5,
    refine_t2: float = 0.5,
):
    fp = {}
    for name, uri in (("ortho", ortho_uri), ("coarse", coarse_uri), ("chm", chm_uri), ("manual", manual_uri)):
        fp[name] = cpu_task(fingerprint_op(uri=uri).set_display_name(f"fingerprint {name}"), memory="1G")
        fp[name].set_caching_options(False)  # must see the data as it is now
    segments = cpu_task(
        prepare_segments_op(
            coarse_uri=coarse_uri,
            coarse_fingerprint=fp["coarse"].output,
            chm_uri=chm_uri,
            chm_fingerprint=fp["chm"].output,
        ).set_display_name("coarse segments (given or from CHM)"),
        memory="16G",
    ).outputs["segments"]
    pseudo = pseudolabel_pipeline(
        ortho_uri=ortho_uri,
        ortho_fingerprint=fp["ortho"].output,
        segments=segments,
        shards=shards,
        sam2_model=sam2_model,
        sam2_checkpoint=sam2_checkpoint,
        untrained=untrained,
        rgb_bands=rgb_bands,
        chm_uri=chm_uri,  # treetops of coarse segments given without treetop columns
        chm_fingerprint=fp["chm"].output,
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
        window_batch=window_batch,
    ).set_display_name("SAM2 pseudolabels")
    completed = find_missed_pipeline(
        ortho_uri=ortho_uri,
        ortho_fingerprint=fp["ortho"].output,
        labels=pseudo.output,
        find_missed=find_missed,
        shards=shards,
        chm_uri=chm_uri,
        sam2_model=sam2_model,
        sam2_checkpoint=sam2_checkpoint,
        untrained=untrained,
        rgb_bands=rgb_bands,
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
        missed_max_overlap=missed_max_overlap,
        missed_min_area=missed_min_area,
        missed_max_area=missed_max_area,
        missed_min_compactness=missed_min_compactness,
        missed_min_ndvi=missed_min_ndvi,
        missed_min_height=missed_min_height,
        red_band=red_band,
        nir_band=nir_band,
    ).set_display_name("missed crowns (if find_missed)")
    label_eval = cpu_task(
        evaluate_labels_op(
            manual_uri=manual_uri,
            manual_fingerprint=fp["manual"].output,
            test_area_uri=test_area_uri,
            ortho_uri=ortho_uri,
            ortho_fingerprint=fp["ortho"].output,
            coarse=segments,
            pseudo=pseudo.output,
            completed=completed.output,
            untrained=untrained,
            rgb_bands=rgb_bands,
            find_missed=find_missed,
        ).set_display_name("Jaccard of labels"),
        memory="8G",
    )
    classed = cpu_task(
        pseudo_classes_op(
            ortho_uri=ortho_uri,
            ortho_fingerprint=fp["ortho"].output,
            labels=completed.output,
            pseudo_classes=pseudo_classes,
        ).set_display_name("pseudo-classes (if pseudo_classes)"),
        memory="8G",
    ).outputs["classed"]
    model_evals = {}
    for source, labels in (("coarse", segments), ("pseudo", classed)):
        switch = {"pseudo_classes": pseudo_classes} if source == "pseudo" else {}
        coco = cpu_task(
            export_coco_op(
                ortho_uri=ortho_uri,
                ortho_fingerprint=fp["ortho"].output,
                labels=labels,
                test_area_uri=test_area_uri,
                manual_uri=manual_uri,
                chip=chip,
                chip_overlap=chip_overlap,
                rgb_bands=rgb_bands,
                val_fraction=val_fraction,
                holdout_buffer_m=holdout_buffer_m,
                val_block=val_block,
                **switch,
            ).set_display_name(f"COCO export ({source})"),
            memory="8G",
        ).outputs["coco"]
        model = gpu_task(
            train_op(
                coco=coco,
                label_source=source,
                epochs=epochs,
                max_iters=max_iters,
                lr=lr,
                batch_size=batch_size,
                model_version=model_version,
                init_weights=init_weights,
                mlflow_tracking_uri=mlflow_tracking_uri,
                mlflow_experiment=mlflow_experiment,
                flight_id=flight_id,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                ortho_fingerprint=fp["ortho"].output,
            ).set_display_name(f"train Mask R-CNN ({source})"),
            memory="32G",
            cpu="8",
        )
        model_evals[source] = gpu_task(
            evaluate_model_op(
                model=model.outputs["model"],
                coco=coco,
                manual_uri=manual_uri,
                test_area_uri=test_area_uri,
                ortho_uri=ortho_uri,
                ortho_fingerprint=fp["ortho"].output,
                mlflow_tracking_uri=mlflow_tracking_uri,
                refine=refine,
                refine_t1=refine_t1,
                refine_t2=refine_t2,
                rgb_bands=rgb_bands,
                sam2_model=sam2_model,
                sam2_checkpoint=sam2_checkpoint,
                untrained=untrained,
            ).set_display_name(f"evaluate model ({source})")
        ).outputs["results"]
    cpu_task(
        compare_op(
            label_eval=label_eval.outputs["results"],
            coarse_model_eval=model_evals["coarse"],
            pseudo_model_eval=model_evals["pseudo"],
            manual_uri=manual_uri,
            test_area_uri=test_area_uri,
            registered_model_name=registered_model_name,
            mlflow_tracking_uri=mlflow_tracking_uri,
            flight_id=flight_id,
            ortho_fingerprint=fp["ortho"].output,
            manual_fingerprint=fp["manual"].output,
            untrained=untrained,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("compare + register"),
        memory="8G",
    ).set_caching_options(False)  # the registry state changes between runs
