"""KFP component: the window plan, and the shard indices the pseudolabel fan-out iterates over."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from crownsam.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def tile_op(
    ortho_uri: str,
    ortho_fingerprint: str,
    segments: Input[Dataset],
    plan: Output[Dataset],
    shards: int = 4,
    rgb_bands: str = "3,2,1",
) -> List[int]:
    """Plan 1024-px windows (stride 512); returns the shard indices [0..k-1] for the fan-out, with
    k = effective_shards(shards, windows with segments). Parameters: ``TileParams``.

    ``ortho_fingerprint`` is unused here: it is an input so that KFP's cache key changes with the data.
    """
    from crownsam.common.artifacts import label_file
    from crownsam.tiling.params import TileParams
    from crownsam.tiling.plan import tile_files

    tile = TileParams.from_pipeline(shards=shards, rgb_bands=rgb_bands)
    return tile_files(ortho_uri, label_file(segments.path), plan.path, tile)
