"""Reading a ``crownsam export-coco`` folder: splits, chips, masks, augmentation, fingerprints.

Folder layout (written by :func:`crownsam.coco.export.export_coco`)::

    DIR/images/{train,val,test}/<chip>.png|.tif   uint8, already stretched (PNG: 3 bands, TIFF: H x W x bands)
    DIR/train.json, DIR/val.json, DIR/test.json    COCO instances: category 1 = tree, or one per class
    DIR/export.json                                summary with "bands" and "stretch"

Chips hold the exported orthophoto bands in ``export.json["bands"]`` order. ``bands`` here are orthophoto
band numbers (1-based, as in export.json); each must be one of the exported bands, and the model reads
the chip channels that hold them, in the order given.

Augmentation (training only), chosen per sample from ``numpy.random.default_rng([seed, epoch, index])``
(so it does not depend on workers, ranks or resuming): horizontal flip (p = 0.5), vertical flip
(p = 0.5), rotation by k x 90° (k uniform in 0..3; square chips only), and mild colour jitter: each band
multiplied by its own factor in [0.9, 1.1], then contrast around the chip mean by one factor in
[0.9, 1.1], clipped to [0, 1]. All of them suit nadir imagery (no up direction, no perspective).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crownsam.common.errors import FILE_ERRORS, InputError
from crownsam.common.vector import file_sha256

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class ExportInfo:
    """What the training needs from ``export.json``."""

    root: Path
    bands: tuple[int, ...]  # orthophoto band numbers, in chip channel order
    stretch: list[tuple[float, float]] | None  # (low, high) per exported band, same order
    chip: int | None
    crs: str | None
    raw: dict[str, Any]


def parse_stretch(value: Any, bands: Sequence[int]) -> list[tuple[float, float]] | None:
    """The stretch in ``export.json``: ``{"per_band": [{"band", "low", "high"}, ...]}`` or a list of
    ``[low, high]`` pairs in band order. Returns pairs in ``bands`` order, or None when absent/unusable."""
    try:
        if isinstance(value, dict) and "per_band" in value:
            by_band = {int(e["band"]): (float(e["low"]), float(e["high"])) for e in value["per_band"]}
            return [by_band[int(b)] for b in bands]
        if isinstance(value, list) and len(value) == len(bands):
            return [(float(lo), float(hi)) for lo, hi in value]
    except (KeyError, TypeError, ValueError):
        return None
    return None


def read_export(root: str | Path) -> ExportInfo:
    """Check the folder and read ``export.json`` (bands, stretch) or raise InputError."""
    root = Path(root)
    if not root.exists():
        raise InputError(root, "COCO folder not found")
    if not root.is_dir():
        raise InputError(root, "expected the folder written by `crownsam export-coco`")
    if not (root / "train.json").is_file():
        raise InputError(root, "no train.json here; is this a `crownsam export-coco` folder?")
    summary_path = root / "export.json"
    raw: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            raw = json.loads(summary_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(summary_path, f"not readable JSON ({exc})") from exc
    bands: tuple[int, ...] | None = tuple(int(b) for b in raw["bands"]) if raw.get("bands") else None
    if bands is None:  # fall back on the first image's record
        images = load_coco(root / "train.json")["images"]
        first = images[0].get("crownsam", {}) if images else {}
        if first.get("bands"):
            bands = tuple(int(b) for b in first["bands"])
    if bands is None:
        raise InputError(summary_path, "no band list (export.json 'bands'); re-run `crownsam export-coco`")
    stretch = parse_stretch(raw.get("stretch"), bands)
    return ExportInfo(
        root=root,
        bands=bands,
        stretch=stretch,
        chip=int(raw["chip"]) if raw.get("chip") else None,
        crs=raw.get("crs"),
        raw=raw,
    )


def load_coco(path: str | Path) -> dict[str, Any]:
    """Read one COCO instances JSON and check its structure (images, annotations, ids)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(path, "COCO file not found") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not readable COCO JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(path, "not a COCO instances file (no 'images' list)")
    anns = data.setdefault("annotations", [])
    if not isinstance(anns, list):
        raise InputError(path, "'annotations' must be a list")
    ids = set()
    for img in data["images"]:
        for key in ("id", "file_name", "width", "height"):
            if key not in img:
                raise InputError(path, f"an image record has no {key!r}")
        ids.add(img["id"])
    for a in anns:
        if "segmentation" not in a or "image_id" not in a:
            raise InputError(path, f"annotation {a.get('id')} has no segmentation or image_id")
        if a["image_id"] not in ids:
            raise InputError(path, f"annotation {a.get('id')} refers to unknown image {a['image_id']}")
    data.setdefault("categories", [{"id": 1, "name": "tree"}])
    return data


def coco_api(data: dict[str, Any]) -> Any:
    """A pycocotools ``COCO`` object built from a dict, without its prints."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


def read_chip(path: Path) -> np.ndarray:
    """A chip as uint8 (H, W, bands): PNG/JPEG through Pillow, TIFF through tifffile."""
    if not path.is_file():
        raise InputError(path, "chip image not found (listed in the COCO JSON)")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
    except FILE_ERRORS as exc:
        raise InputError(path, f"not a readable image ({type(exc).__name__})") from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        raise InputError(path, f"chips must be uint8 (already stretched), got {arr.dtype}")
    return arr


def select_channels(export_bands: Sequence[int], bands: Sequence[int] | None, source: str) -> list[int]:
    """0-based chip channels holding the orthophoto ``bands`` (None: all exported bands)."""
    if bands is None:
        return list(range(len(export_bands)))
    out = []
    for b in bands:
        if b not in export_bands:
            raise InputError(
                source,
                f"band {b} is not in the chips: they hold orthophoto bands "
                f"{','.join(map(str, export_bands))} (export.json 'bands')",
            )
        out.append(list(export_bands).index(b))
    if len(set(out)) != len(out):
        raise InputError(source, f"bands {','.join(map(str, bands))} name a band twice")
    return out


def fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of each split JSON and export.json present (``<name>_sha256``)."""
    out = {}
    for name in (*SPLITS, "export"):
        p = root / f"{name}.json"
        if p.is_file():
            out[f"{name}_sha256"] = file_sha256(p)
    return out


def class_map(categories: Sequence[dict[str, Any]]) -> dict[int, int]:
    """COCO category id -> model label: the categories sorted by id get labels 1..K (0 is background).
    An export's ``tree`` (id 1) is label 1; its ``class_<c>`` (id c + 1) is label c + 1."""
    return {int(c["id"]): i + 1 for i, c in enumerate(sorted(categories, key=lambda c: int(c["id"])))}


def check_categories(data: dict[str, Any], path: str | Path) -> None:
    """Every annotation's ``category_id`` must be one of the file's categories (ids unique)."""
    ids = [int(c["id"]) for c in data["categories"]]
    if len(set(ids)) != len(ids):
        raise InputError(path, "category ids must be unique")
    bad = {a.get("category_id", 1) for a in data["annotations"]} - set(ids)
    if bad:
        raise InputError(path, f"annotations refer to unknown categories {sorted(bad)}")


def target_from_anns(
    coco: Any,
    anns: Sequence[dict[str, Any]],
    height: int,
    width: int,
    labels: dict[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """torchvision Mask R-CNN target: masks decoded from RLE/polygons; boxes from the mask extent
    (x0, y0, x1 + 1, y1 + 1); empty masks dropped; labels ``labels[category_id]`` (default all 1)."""
    masks, boxes, classes = [], [], []
    for a in anns:
        if a.get("iscrowd", 0):
            continue
        with warnings.catch_warnings():  # pycocotools' decode under numpy 2: a harmless copy= warning
            warnings.simplefilter("ignore", DeprecationWarning)
            m = coco.annToMask(a)
        if m.shape != (height, width) or not m.any():
            continue
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        masks.append(m)
        classes.append(labels[int(a.get("category_id", 1))] if labels else 1)
    if masks:
        mask_t = torch.from_numpy(np.stack(masks).astype(np.uint8))
        box_t = torch.tensor(boxes, dtype=torch.float32)
    else:
        mask_t = torch.zeros((0, height, width), dtype=torch.uint8)
        box_t = torch.zeros((0, 4), dtype=torch.float32)
    return {"boxes": box_t, "labels": torch.tensor(classes, dtype=torch.int64), "masks": mask_t}


def augment(
    image: torch.Tensor, target: dict[str, torch.Tensor], rng: np.random.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Flips, 90° rotations and mild colour jitter (see the module docstring); image (C, H, W) in [0, 1]."""
    masks = target["masks"]
    if rng.random() < 0.5:
        image, masks = image.flip(-1), masks.flip(-1)
    if rng.random() < 0.5:
        image, masks = image.flip(-2), masks.flip(-2)
    k = int(rng.integers(0, 4)) if image.shape[-1] == image.shape[-2] else 0
    if k:
        image, masks = torch.rot90(image, k, (-2, -1)), torch.rot90(masks, k, (-2, -1))
    brightness = torch.from_numpy(rng.uniform(0.9, 1.1, image.shape[0]).astype(np.float32))
    contrast = float(rng.uniform(0.9, 1.1))
    image = image * brightness[:, None, None]
    mean = image.mean()
    image = ((image - mean) * contrast + mean).clamp(0.0, 1.0)
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    for i, m in enumerate(masks):
        rows, cols = torch.nonzero(m.any(dim=1)).flatten(), torch.nonzero(m.any(dim=0)).flatten()
        boxes[i] = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
    return image.contiguous(), {**target, "masks": masks.contiguous(), "boxes": boxes}


def pad_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a (C, H, W) image at the bottom/right to at least ``size`` x ``size``."""
    c, h, w = image.shape
    if h >= size and w >= size:
        return image
    out = image.new_zeros((c, max(h, size), max(w, size)))
    out[:, :h, :w] = image
    return out


class CocoChips(torch.utils.data.Dataset):
    """One split of an export folder as (image, target) pairs for torchvision's Mask R-CNN.

    Items are keyed ``(epoch, index)`` so augmentation depends only on (seed, epoch, index). Images are
    float (C, H, W) in [0, 1] with the selected channels, zero-padded to ``chip`` pixels.
    """

    def __init__(
        self,
        root: Path,
        data: dict[str, Any],
        channels: Sequence[int],
        chip: int,
        *,
        train: bool = False,
        seed: int = 0,
    ) -> None:
        self.root, self.data, self.channels, self.chip = Path(root), data, list(channels), chip
        self.train, self.seed = train, seed
        self.coco = coco_api(data)
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.labels = class_map(data["categories"])  # category id -> model label

    def __len__(self) -> int:
        return len(self.images)

    def image_tensor(self, i: int) -> torch.Tensor:
        """The chip ``i`` as float (C, H, W) in [0, 1], channels selected, not padded."""
        rec = self.images[i]
        arr = read_chip(self.root / rec["file_name"])
        if max(self.channels) >= arr.shape[2]:
            raise InputError(
                self.root / rec["file_name"], f"has {arr.shape[2]} band(s), expected {max(self.channels) + 1}"
            )
        arr = arr[..., self.channels]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)

    def target(self, i: int) -> dict[str, torch.Tensor]:
        rec = self.images[i]
        anns = self.coco.imgToAnns.get(rec["id"], [])
        t = target_from_anns(self.coco, anns, int(rec["height"]), int(rec["width"]), self.labels)
        t["image_id"] = torch.tensor(rec["id"])
        return t

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        image, target = self.image_tensor(i), self.target(i)
        if self.train:
            image, target = augment(image, target, np.random.default_rng([self.seed, epoch, i]))
        image = pad_to(image, self.chip)
        if target["masks"].shape[-2:] != image.shape[-2:]:
            m = target["masks"]
            padded = m.new_zeros((m.shape[0], *image.shape[-2:]))
            padded[:, : m.shape[1], : m.shape[2]] = m
            target["masks"] = padded
        return image, target


def collate(batch: Sequence[Any]) -> tuple[list, list]:
    """Lists of images and targets (Mask R-CNN takes lists)."""
    return [b[0] for b in batch], [b[1] for b in batch]


def chip_size(splits: dict[str, dict[str, Any]], export: ExportInfo) -> int:
    """The model's input size: export.json 'chip', else the largest chip side in the splits."""
    sides = [max(int(im["width"]), int(im["height"])) for d in splits.values() for im in d["images"]]
    return max([export.chip or 0, *sides])
