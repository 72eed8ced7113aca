"""``merge_exports``: several ``crownsam export-coco`` folders (one per flight) as one training set.

Rules (also written to ``export.json["rules"]``):

* **Compatible sources only**: every source has the same exported ``bands``, ``chip`` size and image
  format, and the same categories; otherwise :class:`InputError` names the source that differs.
  Orthophoto stretch, CRS and chip overlap may differ (each flight's chips are already stretched to uint8
  with that flight's own scene-wide stretch).
* **Splits**: the merged ``train`` / ``val`` / ``test`` split is the union of the sources' splits of that
  name; ``test.json`` is written only when some source has a test split.
* **Order and ids**: sources in the order given (a mapping's order, or a list's), images in their
  source order. Image ids and annotation ids are renumbered 1, 2, ... **per split**, so one source's test
  split gets the same ids (and ``test.json`` the same bytes) whatever the other sources' train splits
  hold. Annotations are copied unchanged (RLE, area, bbox, ``source_id``) apart from ``id`` and
  ``image_id``.
* **Files**: chips are hard-linked (copied across file systems) to
  ``images/<split>/<source>_<file name>``; each image's ``crownsam`` record gains ``flight`` (the source
  name, e.g. the flight id) and ``source_image_id``.
* **Atomic**: built in a temporary folder beside ``out_dir`` and renamed onto it when complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from crownsam.coco.export import SPLITS, check_out_dir
from crownsam.common.atomic import atomic_dir
from crownsam.common.errors import InputError

MERGED_FORMAT = "crownsam-coco-merged/1"
NAME = re.compile(r"[A-Za-z0-9._-]+")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(path, f"{what} not found; is this a `crownsam export-coco` folder?") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not readable JSON ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise InputError(path, f"{what} must be a JSON object")
    return data


def _named(sources: Sequence[str | Path] | Mapping[str, str | Path]) -> list[tuple[str, Path]]:
    """``(name, folder)`` pairs; a list's names are the folders' names. Names must be unique and usable
    in file names."""
    pairs = (
        [(str(k), Path(v)) for k, v in sources.items()]
        if isinstance(sources, Mapping)
        else [(Path(s).name, Path(s)) for s in sources]
    )
    if not pairs:
        raise InputError(None, "nothing to merge: no export folders given")
    seen: set[str] = set()
    for name, folder in pairs:
        if not NAME.fullmatch(name):
            raise InputError(folder, f"source name {name!r} may only use letters, digits, '.', '_' and '-'")
        if name in seen:
            raise InputError(folder, f"source name {name!r} given twice")
        seen.add(name)
    return pairs


def _link(src: Path, dst: Path) -> None:
    """Hard link ``src`` to ``dst`` (a copy when linking is not possible)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def merge_exports(
    sources: Sequence[str | Path] | Mapping[str, str | Path], out_dir: str | Path
) -> dict[str, Any]:
    """Merge export folders into ``out_dir`` (see the module docstring); return the new ``export.json``.

    ``sources``: a mapping ``name -> folder`` (e.g. flight id -> export) or a list of folders (named after
    the folders). Every input is read and checked before anything is written.
    """
    pairs = _named(sources)
    out = Path(out_dir)
    check_out_dir(out)

    # -- read and check everything first
    exports: list[dict[str, Any]] = []
    cocos: list[dict[str, dict[str, Any]]] = []
    for _, folder in pairs:
        if not folder.is_dir():
            raise InputError(folder, "export folder not found")
        ex = _read_json(folder / "export.json", "export.json")
        for key in ("bands", "chip"):
            if key not in ex:
                raise InputError(folder / "export.json", f"has no {key!r}; re-run `crownsam export-coco`")
        splits = {}
        for split in SPLITS:
            path = folder / f"{split}.json"
            if path.is_file():
                splits[split] = _read_json(path, f"{split}.json")
            elif split != "test":
                raise InputError(path, f"{split}.json not found; is this a `crownsam export-coco` folder?")
        exports.append(ex)
        cocos.append(splits)
    ref_name, ref = pairs[0][0], exports[0]
    ref_categories = cocos[0]["train"].get("categories")
    for (_, folder), ex, splits in zip(pairs, exports, cocos, strict=True):
        for key, what in (("bands", "bands"), ("chip", "chip size"), ("image_format", "image format")):
            if ex.get(key) != ref.get(key):
                raise InputError(
                    folder / "export.json",
                    f"{what} {ex.get(key)!r} differs from {ref.get(key)!r} in {ref_name}: exports to merge "
                    "need the same bands and chip size (re-export with the same --bands and --chip)",
                )
        for split, coco in splits.items():
            if coco.get("categories") != ref_categories:
                raise InputError(folder / f"{split}.json", f"categories differ from those of {ref_name}")
            ids = {img["id"] for img in coco.get("images", [])}
            for ann in coco.get("annotations", []):
                if ann.get("image_id") not in ids:
                    raise InputError(
                        folder / f"{split}.json", f"annotation {ann.get('id')} refers to unknown image"
                    )
            for img in coco.get("images", []):
                if not (folder / img["file_name"]).is_file():
                    raise InputError(folder / img["file_name"], "chip listed in the COCO file is missing")

    # -- write
    counts: dict[str, dict[str, Any]] = {}
    by_source: dict[str, dict[str, dict[str, int]]] = {name: {} for name, _ in pairs}
    present = [s for s in SPLITS if any(s in c for c in cocos)]
    with atomic_dir(out) as tmp:
        for split in present:
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            images: list[dict[str, Any]] = []
            anns: list[dict[str, Any]] = []
            for (name, folder), splits in zip(pairs, cocos, strict=True):
                found = splits.get(split)
                if found is None:
                    continue
                coco = found
                id_map: dict[Any, int] = {}
                for img in coco.get("images", []):
                    new_id = len(images) + 1
                    id_map[img["id"]] = new_id
                    file_name = f"images/{split}/{name}_{PurePosixPath(img['file_name']).name}"
                    _link(folder / img["file_name"], tmp / file_name)
                    extra = dict(img.get("crownsam") or {})
                    extra |= {"flight": name, "source_image_id": img["id"]}
                    images.append(img | {"id": new_id, "file_name": file_name, "crownsam": extra})
                n_anns = 0
                for ann in coco.get("annotations", []):
                    anns.append(ann | {"id": len(anns) + 1, "image_id": id_map[ann["image_id"]]})
                    n_anns += 1
                by_source[name][split] = {"chips": len(id_map), "annotations": n_anns}
            merged = {
                "info": {
                    "description": f"crownsam merged COCO export, {split} split",
                    "version": MERGED_FORMAT,
                },
                "licenses": [],
                "categories": ref_categories,
                "images": images,
                "annotations": anns,
            }
            (tmp / f"{split}.json").write_text(json.dumps(merged, separators=(",", ":")) + "\n")
            counts[split] = {
                "json": f"{split}.json",
                "images": f"images/{split}",
                "chips": len(images),
                "annotations": len(anns),
            }
        crs = {ex.get("crs") for ex in exports}
        overlaps = {ex.get("overlap") for ex in exports}
        summary = {
            "format": MERGED_FORMAT,
            "bands": ref["bands"],
            "chip": ref["chip"],
            "image_format": ref.get("image_format"),
            "crs": crs.pop() if len(crs) == 1 else None,
            "overlap": overlaps.pop() if len(overlaps) == 1 else None,
            # No single stretch: each source's chips carry their own scene's stretch (see sources).
            "stretch": {"rule": "per source: each source's own 2-98 % scene-wide stretch; see sources"},
            "splits": counts,
            "sources": {
                name: {
                    "path": str(folder),
                    "splits": by_source[name],
                    "crs": ex.get("crs"),
                    "stretch": ex.get("stretch"),
                    "inputs": ex.get("inputs"),
                    "test_area": ex.get("test_area"),
                    "params": ex.get("params"),
                }
                for (name, folder), ex in zip(pairs, exports, strict=True)
            },
            "rules": {
                "sources": "same bands, chip size, image format and categories in every source",
                "splits": "each split is the union of the sources' splits of that name",
                "ids": "image and annotation ids renumbered 1, 2, ... per split, sources in the order given",
                "files": "chips linked to images/<split>/<source>_<file name>; image records gain "
                "crownsam.flight (the source name) and crownsam.source_image_id",
            },
        }
        (tmp / "export.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
