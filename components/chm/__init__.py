"""Coarse crown segments from a canopy height model (treetops + marker-controlled watershed)."""

from crownsam.chm.blocks import segment_chm, segment_chm_file
from crownsam.chm.segment import ChmParams

__all__ = ["ChmParams", "segment_chm", "segment_chm_file"]
