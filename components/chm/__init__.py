"""Coarse crown segments from a canopy height model (treetops + marker-controlled watershed)."""
