"""Finished tiles: their objects (pixel-space polygons), seam strips and pass records, kept one small JSON
per tile so that a crashed run resumes, a shard hands its tiles to the merge, and no run holds more than
one tile's pixels. Builds on the pseudolabel window store (``crownsam.pseudolabel.resume``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import shapely

from crownsam.common import storage
from crownsam.common.errors import InputError
from crownsam.common.raster import RasterInfo, Stretch
from crownsam.everything.params import EverythingParams
from crownsam.pseudolabel.resume import WindowResult, WindowStore

log = logging.getLogger(__name__)

SHARD_SUMMARY = "shard.json"
TILES_DIR = "tiles"


@dataclass
class TileResult(WindowResult):
    """One tile: ``rows`` (one per object: label, score, stability, pass, thresholds, ``area_px`` and
    ``strips`` = {neighbour tile key: WKB hex of the mask in the strip both tiles read}), ``geoms`` (each
    object's part inside the pixels this tile owns, in raster pixel coordinates x = column, y = row),
    the passes, why the loop stopped, pixel counts for coverage, and drops by reason."""

    passes: list[dict] = field(default_factory=list)
    stop: str = ""
    valid_px: int = 0
    covered_px: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    model_seconds: float = 0.0

    def strips(self, i: int) -> dict[str, shapely.Geometry]:
        """Object ``i``'s seam strips, decoded."""
        return {k: shapely.from_wkb(v) for k, v in self.rows[i].get("strips", {}).items()}


def run_key(
    info: RasterInfo,
    stretch: Stretch,
    params: EverythingParams,
    model: str,
    checkpoint: str | None,
    untrained: bool,
) -> str:
    """Identity of a run's inputs: tiles saved under another key are ignored (and overwritten)."""
    ident = {
        "grid": [info.width, info.height, list(info.transform)],
        "stretch": [list(s) for s in stretch],
        "params": params.as_dict(),
        "model": model,
        "checkpoint": checkpoint,
        "untrained": untrained,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class TileStore(WindowStore):
    """Saved tiles under ``uri`` for the run ``key``, read one at a time (memory stays flat)."""

    def part_uri(self, tile_key: str) -> str:
        """Where the tile ``tile_key`` is saved."""
        return self._part(tile_key)

    def get(self, tile_key: str) -> TileResult | None:
        """The saved tile, or None when absent, unreadable or from another run."""
        uri = self.part_uri(tile_key)
        if not storage.exists(uri):
            return None
        try:
            key, result = TileResult.from_json(storage.read_bytes(uri))
        except (ValueError, KeyError, TypeError, InputError):
            return None
        return result if key == self.key and isinstance(result, TileResult) else None

    def done(self) -> set[str]:
        """Keys of the tiles an earlier attempt of this same run finished (others noted and ignored)."""
        keys, stale = set(), 0
        for uri in storage.list_prefix(self.uri):
            name = uri.rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                continue
            if self.get(name.removesuffix(".json")) is None:
                stale += 1
            else:
                keys.add(name.removesuffix(".json"))
        if stale:
            log.warning("%s: ignoring %d saved tile(s) from another run or unreadable", self.uri, stale)
        if keys:
            log.info("%s: resuming; %d tile(s) already done", self.uri, len(keys))
        return keys


TileSource = Callable[[str], "TileResult | None"]


def write_shard_folder(out: str, store: TileStore, keys: list[str], summary: dict) -> None:
    """The shard's output folder: ``tiles/<key>.json`` for each finished tile, then ``shard.json``.

    Local: assembled beside ``out`` and renamed onto it (an older shard folder is replaced whole).
    ``gs://``: objects uploaded one by one, ``shard.json`` last, so its presence means complete.
    """
    payload = json.dumps(summary, indent=2, sort_keys=True, default=str).encode()
    if storage.is_remote(out):
        for k in keys:
            data = storage.read_bytes(store.part_uri(k))
            storage.write_bytes(storage.join(out, TILES_DIR, f"{k}.json"), data)
        storage.write_bytes(storage.join(out, SHARD_SUMMARY), payload)
        return
    target = Path(out)
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / SHARD_SUMMARY).exists())
    ):
        raise InputError(out, "exists and is not a segment-everything shard folder; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        (tmp / TILES_DIR).mkdir()
        for k in keys:
            (tmp / TILES_DIR / f"{k}.json").write_bytes(storage.read_bytes(store.part_uri(k)))
        (tmp / SHARD_SUMMARY).write_bytes(payload)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_shard_summary(folder: str) -> dict:
    """A shard folder's ``shard.json``, with a clear error for a missing or incomplete shard."""
    uri = storage.join(folder, SHARD_SUMMARY)
    if not storage.exists(uri):
        raise InputError(folder, f"no {SHARD_SUMMARY}: not a finished segment-everything shard")
    try:
        return json.loads(storage.read_bytes(uri))
    except ValueError as exc:
        raise InputError(uri, f"not valid JSON ({exc})") from exc


def shard_source(folders: dict[str, str], run: str) -> TileSource:
    """Tiles of finished shards: ``folders`` maps tile key -> shard folder."""

    def get(key: str) -> TileResult | None:
        folder = folders.get(key)
        if folder is None:
            return None
        uri = storage.join(folder, TILES_DIR, f"{key}.json")
        try:
            saved, result = TileResult.from_json(storage.read_bytes(uri))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(uri, f"not a readable tile ({type(exc).__name__})") from exc
        if saved != run:
            raise InputError(uri, "tile comes from another run than its shard")
        assert isinstance(result, TileResult)
        return result

    return get
