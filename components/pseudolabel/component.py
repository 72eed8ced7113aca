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
    sam2_model: str = "sam2.1_hiera_t",
    sam2_checkpoint: str = "",
    untrained: bool = False,
):
    """Pseudolabel shard ``shard`` of ``shards``; writes a folder with pseudolabels.gpkg + summary.
    Parameters: ``Sam2Params`` and ``PseudolabelParams``.

    Finished windows are kept beside the output (``<labels>.parts``) so a retried task resumes.
    """
    from crownsam.common.artifacts import label_file
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
        params=PseudolabelParams.from_pipeline(),
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_labels_op(parts: Input[List[Dataset]], labels: Output[Dataset], metrics: Output[Metrics]):
    """Gather the shard folders into one folder with pseudolabels.gpkg + pseudolabels.summary.json."""
    from crownsam.pseudolabel.merge import merge_shard_artifacts

    for key, value in merge_shard_artifacts([p.path for p in parts], labels.path).items():
        metrics.log_metric(key, value)
