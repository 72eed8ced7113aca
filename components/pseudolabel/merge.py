"""Gather the outputs of pseudolabel shards into one GeoPackage and one summary."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import geopandas as gpd
import pandas as pd

from crownsam.common import storage
from crownsam.common.atomic import atomic_paths
from crownsam.common.errors import InputError
from crownsam.common.vector import ID_COLUMN
from crownsam.pseudolabel.api import LAYER

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


def merge_shards(inputs: list[str], out: str, cache_dir: str | None = None) -> dict:
    """Concatenate shard GeoPackages (sorted by ``segment_id``) and merge their summaries; atomic."""
    if not inputs:
        raise InputError(out, "no shard outputs to merge")
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
