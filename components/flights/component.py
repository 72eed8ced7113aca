"""KFP component: the flight's coarse segments (copied, or derived from the CHM when there are none)."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl
from kfp.dsl import Dataset, Output

from crownsam.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_segments_op(
    coarse_uri: str, coarse_fingerprint: str, chm_uri: str, chm_fingerprint: str, segments: Output[Dataset]
):
    """Coarse segments as an artifact (a folder holding ``segments.gpkg``: GDAL wants the extension); runs
    CHM crown segmentation when the flight has no coarse file."""
    from crownsam.flights.segments import prepare_segments

    info = prepare_segments(coarse_uri, chm_uri, f"{segments.path}/segments.gpkg")
    segments.metadata.update({k: v for k, v in info.items() if isinstance(v, (str, int, float))})
