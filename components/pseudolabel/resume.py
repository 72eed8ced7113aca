"""Finished windows of a pseudolabel run, kept so that a retried run (after a crash or a preempted
pod) skips them. Parts live under a local folder or a ``gs://`` prefix, one small JSON per window."""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from dataclasses import dataclass, field, fields

import shapely

from crownsam.common import storage
from crownsam.common.errors import InputError
from crownsam.pseudolabel.exclusive import Claim
from crownsam.tiling.plan import Plan

log = logging.getLogger(__name__)


@dataclass
class WindowResult:
    """What one window produced: label attribute rows, their polygons, skipped segments, the labels'
    claims for the cross-window exclusive step (as dicts, compressed, only in a saved part), counters for
    the summary, timings."""

    key: str
    rows: list[dict] = field(default_factory=list)
    geoms: list[shapely.Polygon] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    prompts: int = 0
    claims: list[Claim] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self, run_key: str) -> bytes:
        d = {f.name: getattr(self, f.name) for f in fields(self)} | {
            "run_key": run_key,
            "geoms": [shapely.to_wkb(g, hex=True) for g in self.geoms],
            "claims": [c.to_dict() for c in self.claims],
        }
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> tuple[str, WindowResult]:
        d = json.loads(data)
        run_key = d.pop("run_key")
        d["geoms"] = [shapely.from_wkb(h) for h in d["geoms"]]
        d["claims"] = [Claim.from_dict(c) for c in d["claims"]]
        return run_key, cls(**d)


def run_key(
    plan: Plan,
    model: str,
    checkpoint: str | None,
    untrained: bool,
    batch_size: int,
    settings: dict | None = None,
) -> str:
    """Identity of a run's inputs: parts saved under another key are ignored (and overwritten).
    ``settings``: everything else that changes the labels (prompting, filters, CHM), as plain values."""
    ident = {
        "segments": plan.segments_sha256,
        "grid": [plan.width, plan.height, list(plan.transform), plan.window, plan.stride],
        "bands": list(plan.rgb_bands),
        "stretch": [list(s) for s in plan.stretch],
        "model": model,
        "checkpoint": checkpoint,
        "untrained": untrained,
        "batch_size": batch_size,
    }
    if settings:
        ident["settings"] = settings  # type: ignore[assignment]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class WindowStore:
    """Saved window results under ``uri`` for runs with ``key``."""

    def __init__(self, uri: str, key: str) -> None:
        self.uri = uri.rstrip("/")
        self.key = key

    def _part(self, window_key: str) -> str:
        return storage.join(self.uri, f"{window_key}.json")

    def load(self) -> dict[str, WindowResult]:
        """Results saved by earlier attempts of this same run (others are ignored, with a note)."""
        done: dict[str, WindowResult] = {}
        stale = 0
        for uri in storage.list_prefix(self.uri):
            if not uri.endswith(".json"):
                continue
            try:
                key, result = WindowResult.from_json(storage.read_bytes(uri))
            except (ValueError, KeyError, TypeError, InputError, zlib.error):
                stale += 1  # unreadable part: recompute that window
                continue
            if key == self.key:
                done[result.key] = result
            else:
                stale += 1
        if stale:
            log.warning("%s: ignoring %d saved window(s) from another run or unreadable", self.uri, stale)
        if done:
            log.info("%s: resuming; %d window(s) already done", self.uri, len(done))
        return done

    def save(self, result: WindowResult) -> None:
        storage.write_bytes(self._part(result.key), result.to_json(self.key))

    def clear(self) -> None:
        storage.delete_prefix(self.uri)
