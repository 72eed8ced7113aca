"""KFP components shared by every pipeline: input fingerprints (cache keys that follow the data)."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl

from crownsam.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fingerprint_op(uri: str) -> str:
    """Content fingerprint of a gs:// object (generation + hashes) or local file (sha256); '' for ''.

    Big rasters travel as URIs, not artifacts; feeding this fingerprint into the tasks that read them makes
    KFP's cache key change when the data changes. Never cached itself.
    """
    from crownsam.common.storage import fingerprint

    return fingerprint(uri) if uri else ""
