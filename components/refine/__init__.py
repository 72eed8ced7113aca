"""Refinement of predicted crowns with SAM2: box re-prompting and SESSRS (``crownsam refine``)."""
