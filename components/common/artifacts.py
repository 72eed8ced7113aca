"""KFP artifacts as files: what a label artifact holds."""

from __future__ import annotations

from pathlib import Path

from crownsam.common.errors import InputError


def label_file(artifact_path: str) -> str:
    """The GeoPackage inside a label artifact: the file itself, or the single ``.gpkg`` in a folder."""
    p = Path(artifact_path)
    if p.is_file():
        return str(p)
    found = sorted(p.glob("*.gpkg"))
    if len(found) != 1:
        raise InputError(artifact_path, f"expected one .gpkg in the label artifact, found {len(found)}")
    return str(found[0])
