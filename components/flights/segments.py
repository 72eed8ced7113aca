"""Coarse crown segments for a flight: the flight's own file, or derived from its CHM."""

from __future__ import annotations

import logging
from pathlib import Path

from crownsam.chm.segment import ChmParams
from crownsam.common import storage
from crownsam.common.errors import InputError
from crownsam.common.vector import ReadReport, ensure_ids, read_polygons, write_gpkg

log = logging.getLogger(__name__)


def prepare_segments(coarse_uri: str, chm_uri: str, out: str, chm: ChmParams | None = None) -> dict:
    """Write the flight's coarse segments to ``out`` (GeoPackage, layer ``segments``, with
    ``segment_id``): a copy of ``coarse_uri`` when given, else crowns segmented from ``chm_uri``."""
    if coarse_uri:
        gdf = read_polygons(storage.fetch(coarse_uri, what="coarse segments file"), "coarse segments")
        gdf = ensure_ids(gdf, coarse_uri, ReadReport())
        write_gpkg(gdf, out, "segments")
        return {"source": "coarse", "uri": coarse_uri, "segments": len(gdf)}
    if not chm_uri:
        raise InputError(None, "a flight needs coarse segments or a CHM to derive them from")
    from crownsam.chm.blocks import segment_chm_file

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    summary = segment_chm_file(str(storage.fetch(chm_uri, what="CHM")), out, chm)
    log.info("segmented %d crowns from the CHM %s", summary["crowns"], chm_uri)
    return {"source": "chm", "uri": chm_uri, "segments": summary["crowns"]} | summary
