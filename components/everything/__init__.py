"""Segment everything: multi-pass SAM2 automatic masks over a whole orthophoto, seams merged, and the
objects that no label covers added as new labels (``add-missed``)."""

from crownsam.everything.params import AddMissedParams, EverythingParams

__all__ = ["AddMissedParams", "EverythingParams"]
