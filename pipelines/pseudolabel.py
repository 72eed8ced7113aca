"""Sub-pipeline: window plan -> pseudolabel shards in parallel (GPU) -> merged pseudolabels (exclusive
across windows where the shards meet)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from crownsam.pseudolabel.component import merge_labels_op, pseudolabel_op
from crownsam.tiling.component import tile_op

# Resources per task on a cluster (ignored by the local runner).
GPU_ACCELERATOR = "nvidia-tesla-t4"
# CPUs of a pseudolabel (GPU) task: its CPU request, and its window pipeline's worker processes
# (``--workers``), so that post-processing keeps up with the GPU without oversubscribing the node. The
# host's work is 28-35 ms of CPU per 1024 px window (benchmarks/bench_pseudolabel.py, which prints the
# CPUs a busy share needs): keeping a 10 ms encoder (hiera tiny) 85 % busy takes about 3 CPUs.
GPU_TASK_CPUS = 4


def gpu_task(task: dsl.PipelineTask, memory: str = "24G", cpu: str = str(GPU_TASK_CPUS)) -> dsl.PipelineTask:
    """One GPU, memory and CPU requests; retries for preempted nodes (the shard resumes its windows)."""
    task.set_accelerator_type(GPU_ACCELERATOR).set_accelerator_limit(1)
    task.set_memory_request(memory).set_memory_limit(memory).set_cpu_request(cpu)
    return task.set_retry(num_retries=2, backoff_duration="60s")


def cpu_task(task: dsl.PipelineTask, memory: str = "4G", cpu: str = "1") -> dsl.PipelineTask:
    task.set_memory_request(memory).set_memory_limit(memory).set_cpu_request(cpu)
    return task.set_retry(num_retries=1, backoff_duration="30s")


@dsl.pipeline(name="crownsam-pseudolabel", description="SAM2 pseudolabels for coarse crown segments")
def pseudolabel_pipeline(
    ortho_uri: str,
    ortho_fingerprint: str,
    segments: Input[Dataset],
    shards: int = 4,
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
    rgb_bands: str = "3,2,1",
    chm_uri: str = "",
    chm_fingerprint: str = "",
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
    window_batch: int = 1,
) -> Dataset:
    """Parameters: ``TileParams``, ``Sam2Params``, ``PseudolabelParams`` and ``window_batch`` of
    ``WindowLoopParams`` (pipeline names; its ``workers`` is the GPU task's CPU count,
    :data:`GPU_TASK_CPUS`); ``chm_uri`` (optional) gives treetops of segments without treetop columns."""
    plan = cpu_task(
        tile_op(
            ortho_uri=ortho_uri,
            ortho_fingerprint=ortho_fingerprint,
            segments=segments,
            shards=shards,
            rgb_bands=rgb_bands,
        ).set_display_name("tile")
    )
    with dsl.ParallelFor(plan.outputs["Output"], name="shards") as shard:
        part = gpu_task(
            pseudolabel_op(
                ortho_uri=ortho_uri,
                ortho_fingerprint=ortho_fingerprint,
                segments=segments,
                plan=plan.outputs["plan"],
                shard=shard,
                shards=shards,
                chm_uri=chm_uri,
                chm_fingerprint=chm_fingerprint,
                sam2_model=sam2_model,
                sam2_checkpoint=sam2_checkpoint,
                untrained=untrained,
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
                workers=GPU_TASK_CPUS,
                window_batch=window_batch,
            ).set_display_name("pseudolabel shard")
        )
    merged = cpu_task(
        merge_labels_op(parts=dsl.Collected(part.outputs["labels"])).set_display_name("merge shards")
    )
    return merged.outputs["labels"]
