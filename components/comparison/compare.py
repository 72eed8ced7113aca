"""Side-by-side comparison of label sets and of the models trained on them, in words and numbers.

Inputs are the outputs of earlier steps: the label evaluation's ``metrics.json`` (``crownsam evaluate``)
and, per label source, the model evaluation's folder (``crownsam evaluate-model``: ``metrics.json`` with
the MLflow ``run_id`` and COCO stats, ``predictions.gpkg`` of crowns predicted over the test area).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

import geopandas as gpd

from crownsam.common.errors import InputError

MODEL_KEYS = ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP", "bbox_AP50", "segm_AR100")


@dataclass
class ModelEval:
    """One trained model's evaluation on the held-out test area."""

    source: str
    run_id: str | None
    metrics: dict[str, float]
    predictions: gpd.GeoDataFrame | None = None


@dataclass
class Comparison:
    """Everything the report shows."""

    label_sets: list[str]
    label_metrics: dict[str, float]
    models: list[ModelEval]
    model_paired: dict[str, float] = field(default_factory=dict)  # evaluate_label_sets metrics on predictions
    decision: list[str] = field(default_factory=list)  # registry outcome in words
    banner: str | None = None

    def flat_metrics(self) -> dict[str, float]:
        """Flat numbers for KFP's Metrics view and MLflow."""
        out = {k: v for k, v in self.label_metrics.items() if _finite(v)}
        for m in self.models:
            out |= {f"{k}/{m.source}": v for k, v in m.metrics.items() if k in MODEL_KEYS and _finite(v)}
        out |= {f"model_{k}": v for k, v in self.model_paired.items() if _finite(v)}
        return out


def _finite(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_json(path: str | Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise InputError(path, f"{what} not found") from exc
    except ValueError as exc:
        raise InputError(path, f"{what} is not valid JSON ({exc})") from exc


def read_model_eval(source: str, folder: str | Path) -> ModelEval:
    """A model evaluation folder written by ``crownsam evaluate-model``."""
    d = read_json(Path(folder) / "metrics.json", "model evaluation metrics")
    metrics = {k: float(v) for k, v in (d.get("metrics") or {}).items() if _finite(v)}
    if "segm_AP" not in metrics:
        raise InputError(Path(folder) / "metrics.json", "has no segm_AP (not an evaluate-model output?)")
    preds = Path(folder) / "predictions.gpkg"
    gdf = gpd.read_file(preds) if preds.is_file() else None
    return ModelEval(source, d.get("run_id"), metrics, gdf)


def paired_model_jaccard(
    models: list[ModelEval], manual: gpd.GeoDataFrame, area: gpd.GeoDataFrame | None
) -> dict:
    """Per-tree Jaccard of each model's predicted crowns and the paired difference (bootstrap CI,
    Wilcoxon) between models, on the same manual crowns; {} when predictions are missing."""
    if len(models) < 2 or any(m.predictions is None for m in models):
        return {}
    from crownsam.evaluation.api import evaluate_label_sets

    ev = evaluate_label_sets(manual, {m.source: m.predictions for m in models}, area)
    return dict(ev.metrics)


def verdicts(c: Comparison) -> list[str]:
    """Plain-language verdicts with the uncertainty stated."""
    out: list[str] = []
    sets = c.label_sets
    m = c.label_metrics
    if len(sets) >= 2:
        a, b = sets[0], sets[1]
        key = f"{b}-{a}"
        d, lo, hi = (m.get(f"paired_diff_{s}/{key}") for s in ("mean", "ci_low", "ci_high"))
        n = int(m.get("n_trees", 0))
        if _finite(d) and _finite(lo) and _finite(hi):
            better = b if lo > 0 else a if hi < 0 else None
            out.append(
                (f"Labels: {better} labels match the manual crowns better" if better else
                 f"Labels: no clear difference between {b} and {a} labels")
                + f" (paired difference in Jaccard {b} - {a}: {d:+.2f}, 95 % CI {lo:+.2f} to {hi:+.2f}, "
                f"{n} trees)."
            )  # fmt: skip
    if len(c.models) >= 2:
        x, y = c.models[0], c.models[1]
        ax, ay = x.metrics.get("segm_AP", math.nan), y.metrics.get("segm_AP", math.nan)
        text = f"Models: segm AP on the held-out test area is {ay:.3f} ({y.source}) vs {ax:.3f} ({x.source})"
        key = f"{y.source}-{x.source}"
        d, lo, hi = (c.model_paired.get(f"paired_diff_{s}/{key}") for s in ("mean", "ci_low", "ci_high"))
        if _finite(d) and _finite(lo) and _finite(hi):
            clear = lo > 0 or hi < 0
            text += (
                f"; the crowns they predict differ in per-tree Jaccard by {d:+.2f} (95 % CI {lo:+.2f} to "
                f"{hi:+.2f}), {'a clear' if clear else 'not a clear'} difference"
            )
        else:
            text += "; with few test trees, AP differences of a few hundredths are within noise"
        out.append(text + ".")
    out += c.decision
    return out


def markdown(c: Comparison) -> str:
    """The comparison as Markdown (KFP's Markdown viewer, MLflow, pull requests)."""
    lines = ["# crownsam comparison", ""]
    if c.banner:
        lines += [f"> **{c.banner}**", ""]
    lines += [f"- {v}" for v in verdicts(c)] + ["", "## Labels (Jaccard against manual crowns)", ""]
    lines += ["| label set | mean J | 95 % CI | median | F1 @ IoU 0.5 |", "|---|---|---|---|---|"]
    for s in c.label_sets:
        mean, lo, hi, med, f1 = (
            c.label_metrics.get(f"{k}/{s}", math.nan)
            for k in ("jaccard_mean", "jaccard_ci_low", "jaccard_ci_high", "jaccard_median", "f1")
        )
        lines.append(f"| {s} | {mean:.3f} | {lo:.3f} to {hi:.3f} | {med:.3f} | {f1:.3f} |")
    lines += [
        "",
        "## Models (held-out test area)",
        "",
        "| trained on | " + " | ".join(MODEL_KEYS) + " | MLflow run |",
    ]
    lines.append("|---" * (len(MODEL_KEYS) + 2) + "|")
    for mod in c.models:
        vals = " | ".join(f"{mod.metrics.get(k, math.nan):.3f}" for k in MODEL_KEYS)
        lines.append(f"| {mod.source} | {vals} | {mod.run_id or '-'} |")
    return "\n".join(lines) + "\n"
