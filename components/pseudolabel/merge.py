"""Gather the outputs of pseudolabel shards into one GeoPackage and one summary; with exclusive labels,
resolve the pixels that labels of different windows both claim (the same step an unsharded run does at
its end, on the same data, so sharded and unsharded runs give identical labels)."""

from __future__ import annotations

import json
import statistics
import zlib
from collections import Counter
from pathlib import Path

import geopandas as gpd
import pandas as pd
from rasterio import Affine

from crownsam.common import storage
from crownsam.common.atomic import atomic_paths, check_output_file
from crownsam.common.errors import InputError
from crownsam.common.vector import ID_COLUMN
from crownsam.pseudolabel.api import LAYER, claims_path
from crownsam.pseudolabel.exclusive import Claim, resolve_across_windows
from crownsam.pseudolabel.run import label_figures
from crownsam.pseudolabel.spill import SpilledClaims

SUMMED = ("windows_planned", "windows_processed", "windows_resumed", "segments_prompted", "segments_labeled")


def summary_of(labels_uri: str) -> str:
    """The summary written beside a pseudolabel output."""
    return str(labels_uri).removesuffix(".gpkg") + ".summary.json"


def merge_summaries(summaries: list[dict], sources: list[str]) -> dict:
    """One summary for a sharded run; refuses shards of different runs, duplicates and gaps."""
    keys = {s.get("run_key") for s in summaries}
    if len(keys) != 1:
        raise InputError(sources[0], "shards come from different runs (plan, model or settings differ)")
    shards: list[tuple[int, int] | None] = [
        (int(s["shard"][0]), int(s["shard"][1])) if s.get("shard") else None for s in summaries
    ]
    if any(shards):
        counts = {s[1] for s in shards if s is not None}
        if None in shards or len(counts) != 1:
            raise InputError(
                sources[0], "mixing sharded and unsharded outputs, or shards of different counts"
            )
        (n,) = counts
        got = sorted(s[0] for s in shards if s is not None)
        if got != list(range(n)):
            missing = sorted(set(range(n)) - set(got))
            dup = sorted(i for i, c in Counter(got).items() if c > 1)
            raise InputError(
                sources[0], f"shards of {n}: missing {missing or 'none'}, duplicated {dup or 'none'}"
            )
    first = summaries[0]
    merged = {k: v for k, v in first.items() if k not in SUMMED}
    for k in SUMMED:
        merged[k] = sum(int(s.get(k) or 0) for s in summaries)
    skipped = sorted((x for s in summaries for x in s["skipped_segments"]), key=lambda x: x["segment_id"])
    merged |= summed_sections(summaries)
    merged |= {
        "shard": None,
        "shards": len(summaries),
        "skipped_segments": skipped,
        "segments_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(x["reason"] for x in skipped).items())),
        "seconds_total": round(sum(s["seconds_total"] for s in summaries), 3),
        "seconds_in_model": round(sum(s["seconds_in_model"] for s in summaries), 3),
        "seconds_total_max_shard": round(max(s["seconds_total"] for s in summaries), 3),
    }
    means = [
        (s["seconds_per_window"]["mean"], s["windows_processed"]) for s in summaries if s["windows_processed"]
    ]
    n_win = sum(n for _, n in means)
    merged["seconds_per_window"] = {
        "mean": round(sum(m * n for m, n in means) / n_win, 3) if n_win else None,
        "median": round(statistics.median(m for m, _ in means), 3) if means else None,
        "max": max((s["seconds_per_window"]["max"] or 0 for s in summaries), default=None),
    }
    return merged


def _add(a: dict, b: dict) -> dict:
    """Sum two nested dicts of counts (None and non-numbers: the first one's value)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _add(out[k], v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(out.get(k), (int, float)):
            out[k] = out[k] + v
        elif k not in out or out[k] is None:
            out[k] = v
    return out


def summed_sections(summaries: list[dict]) -> dict:
    """The per-window counters of the shards, summed: calibration, exclusive (within windows), treetop
    sources, vegetation filter, seconds by stage."""
    out: dict = {}
    for key in ("calibration", "treetop_sources", "vegetation", "seconds_by_stage", "exclusive"):
        parts = [s[key] for s in summaries if s.get(key) is not None]
        if parts:
            total: dict = {}
            for part in parts:
                total = _add(total, part)
            if key == "vegetation":
                total["min_ndvi"] = parts[0]["min_ndvi"]
                total["red_band"], total["nir_band"] = parts[0]["red_band"], parts[0]["nir_band"]
            out[key] = total
    return out


def read_claims(uri: str, run_key: str, into: SpilledClaims) -> None:
    """Add the claims a shard wrote beside its labels (see :func:`crownsam.pseudolabel.api.claims_path`)
    to ``into``, window by window: the file is parsed whole, but its logit patches are decoded one window
    at a time and go to local disk (:class:`crownsam.pseudolabel.spill.SpilledClaims`)."""
    path = claims_path(uri)
    if not storage.exists(path):
        raise InputError(path, "claims of this shard are missing (needed for exclusive labels)")
    try:
        d = json.loads(storage.read_bytes(path))
    except ValueError as exc:
        raise InputError(path, f"not a claims file ({exc})") from exc
    if not isinstance(d, dict) or d.get("run_key") != run_key:
        raise InputError(path, "claims belong to another run than the shard's labels")
    try:
        by_window: dict[tuple[int, int], list[dict]] = {}
        for x in d["claims"]:
            by_window.setdefault((int(x["row_off"]), int(x["col_off"])), []).append(x)
        del d
        for key in sorted(by_window):
            into.add([Claim.from_dict(x) for x in by_window.pop(key)])
    except KeyError as exc:
        raise InputError(path, f"not a claims file (a claim has no {exc})") from exc
    except (TypeError, ValueError, zlib.error) as exc:
        raise InputError(path, f"not a claims file ({exc})") from exc


def resolve_shards(
    labels: gpd.GeoDataFrame, merged: dict, inputs: list[str], summaries: list[dict]
) -> gpd.GeoDataFrame:
    """The cross-window exclusive step on the merged labels; updates ``merged`` (in place)."""
    claims = SpilledClaims()
    for uri, s in zip(inputs, summaries, strict=True):
        read_claims(uri, s["run_key"], claims)
    missing = set(labels[ID_COLUMN].astype(int)) - set(claims)
    if missing:
        raise InputError(inputs[0], f"no claim for segment_id {min(missing)} (shard outputs incomplete?)")
    width, height = merged["raster_size"]
    res = resolve_across_windows(labels, claims, Affine(*merged["transform"]), int(width), int(height))
    ex = merged["exclusive"]
    ex["cross_window_pairs"] = res.pairs
    ex["pixels_reassigned_across_windows"] = res.pixels_reassigned
    ex["pending"] = False
    skipped = sorted(merged["skipped_segments"] + res.dropped, key=lambda x: x["segment_id"])
    merged |= {
        "skipped_segments": skipped,
        "segments_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(Counter(x["reason"] for x in skipped).items())),
        "segments_labeled": len(res.labels),
    }
    return res.labels


def merge_shards(inputs: list[str], out: str, cache_dir: str | None = None) -> dict:
    """Concatenate shard GeoPackages (sorted by ``segment_id``) and merge their summaries; with exclusive
    labels, resolve pixels claimed by labels of different windows; atomic."""
    if not inputs:
        raise InputError(out, "no shard outputs to merge")
    check_output_file(out, "--out")
    for u in inputs:  # name the shard the user gave, not the summary derived from it
        if not storage.exists(u):
            raise InputError(u, "shard output not found")
        if not storage.exists(summary_of(u)):
            raise InputError(
                u, f"has no summary beside it ({summary_of(u)}); not a pseudolabel shard output?"
            )
    summaries = [json.loads(storage.read_bytes(summary_of(u))) for u in inputs]
    merged = merge_summaries(summaries, inputs)
    frames = [gpd.read_file(storage.fetch(u, cache_dir, what="shard output"), layer=LAYER) for u in inputs]
    labels = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)
    dup = labels[ID_COLUMN][labels[ID_COLUMN].duplicated()]
    if len(dup):
        raise InputError(inputs[0], f"segment_id {int(dup.iloc[0])} appears in more than one shard")
    labels = labels.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
    if len(labels) != merged["segments_labeled"]:
        raise InputError(inputs[0], "shard outputs and their summaries disagree on the number of labels")
    if any((s.get("exclusive") or {}).get("pending") for s in summaries):
        labels = resolve_shards(labels, merged, inputs, summaries)
    pixel_area = abs(Affine(*merged["transform"]).determinant) if merged.get("transform") else 0.0
    merged |= label_figures(labels, pixel_area)
    with (
        storage.local_output(out, cache_dir) as out_local,
        storage.local_output(summary_of(out), cache_dir) as summary_local,
        atomic_paths(out_local, summary_local) as (gpkg_tmp, summary_tmp),
    ):
        labels.to_file(gpkg_tmp, layer=LAYER, driver="GPKG")
        Path(summary_tmp).write_text(json.dumps(merged, indent=2, sort_keys=True, default=str) + "\n")
    return merged


def merge_shard_artifacts(part_dirs: list[str], out_dir: str) -> dict[str, float]:
    """The KFP step: merge shard folders into ``out_dir``; return the headline numbers as metrics."""
    from crownsam.pseudolabel.api import ARTIFACT_LABELS

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    s = merge_shards(
        [str(Path(d) / ARTIFACT_LABELS) for d in part_dirs], str(Path(out_dir) / ARTIFACT_LABELS)
    )
    keys = ("windows_processed", "segments_prompted", "segments_labeled", "segments_skipped", "seconds_total")
    return {k: float(s[k]) for k in keys} | {"untrained": float(bool(s["untrained"]))}
