"""The comparison report: one self-contained HTML page (figures embedded, no scripts) + Markdown."""

from __future__ import annotations

import html
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from crownsam.comparison.compare import MODEL_KEYS, REFINED_COLUMNS, Comparison, refined_rows, verdicts
from crownsam.evaluation.report import CSS, SET_COLORS, png_data_uri


def labels_figure(c: Comparison):
    """Mean per-tree Jaccard of each label set with its bootstrap 95 % CI."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    m = c.label_metrics
    for i, s in enumerate(c.label_sets):
        mean = m.get(f"jaccard_mean/{s}", math.nan)
        lo, hi = m.get(f"jaccard_ci_low/{s}", mean), m.get(f"jaccard_ci_high/{s}", mean)
        ax.bar(i, mean, color=SET_COLORS[i % len(SET_COLORS)], alpha=0.8, width=0.6)
        ax.errorbar(i, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=6, lw=1.5)
        ax.text(i, min(0.97, hi + 0.03), f"{mean:.2f}", ha="center", va="bottom", fontsize=10)
    ax.set_xticks(range(len(c.label_sets)), c.label_sets)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean Jaccard vs manual crowns")
    ax.set_title("Labels (95 % CI)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def models_figure(c: Comparison):
    """COCO metrics of each model on the held-out test area, grouped by metric."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    n = max(1, len(c.models))
    width = 0.8 / n
    for i, mod in enumerate(c.models):
        xs = [k + (i - (n - 1) / 2) * width for k in range(len(MODEL_KEYS))]
        ys = [mod.metrics.get(k, math.nan) for k in MODEL_KEYS]
        ax.bar(
            xs,
            ys,
            width=width,
            color=SET_COLORS[i % len(SET_COLORS)],
            alpha=0.85,
            label=f"trained on {mod.source}",
        )
    ax.set_xticks(range(len(MODEL_KEYS)), [k.replace("_", " ") for k in MODEL_KEYS], fontsize=8)
    ax.set_ylim(0, 1.0)
    ax.set_title("Models on the held-out test area")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _model_table(c: Comparison) -> str:
    head = "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in MODEL_KEYS)
    rows = []
    for mod in c.models:
        cells = "".join(f"<td>{mod.metrics.get(k, math.nan):.3f}</td>" for k in MODEL_KEYS)
        run = html.escape(mod.run_id or "-")
        rows.append(f"<tr><td>{html.escape(mod.source)}</td>{cells}<td><code>{run}</code></td></tr>")
    return f"<table><tr><th>trained on</th>{head}<th>MLflow run</th></tr>{''.join(rows)}</table>"


def _refined_table(c: Comparison) -> str:
    """Raw and refined predicted crowns side by side ("" when no model evaluation refined them)."""
    rows = refined_rows(c)
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in REFINED_COLUMNS)
    body = "".join(
        f"<tr><td>{html.escape(src)}</td>" + "".join(f"<td>{html.escape(x)}</td>" for x in cells) + "</tr>"
        for src, cells in rows
    )
    return (
        "<section><h2>Predicted crowns, raw and refined by SAM2</h2>"
        f"<table><tr><th>trained on</th>{head}</tr>{body}</table></section>"
    )


def _labels_table(c: Comparison) -> str:
    rows = []
    for s in c.label_sets:
        mean, lo, hi, med, f1 = (
            c.label_metrics.get(f"{k}/{s}", math.nan)
            for k in ("jaccard_mean", "jaccard_ci_low", "jaccard_ci_high", "jaccard_median", "f1")
        )
        rows.append(
            f"<tr><td>{html.escape(s)}</td><td><b>{mean:.2f}</b></td><td>{lo:.2f} to {hi:.2f}</td>"
            f"<td>{med:.2f}</td><td>{f1:.2f}</td></tr>"
        )
    return (
        "<table><tr><th>label set</th><th>mean J</th><th>95 % CI</th><th>median J</th>"
        "<th>F1 @ IoU 0.5</th></tr>" + "".join(rows) + "</table>"
    )


def _uri(fig) -> str:
    try:
        return png_data_uri(fig)
    finally:
        plt.close(fig)


def build_html(c: Comparison, title: str = "crownsam comparison") -> str:
    """The whole page."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts.append(f"<style>{CSS}</style></head><body><main>")
    parts.append(f"<h1>{html.escape(title)}</h1>")
    if c.banner:
        parts.append(f'<div class="banner" role="alert">⚠ {html.escape(c.banner)}</div>')
    parts.append('<section class="verdict"><h2>Verdict</h2>')
    parts += [f"<p>{html.escape(v)}</p>" for v in verdicts(c)]
    parts.append("</section>")
    parts.append("<section><h2>Labels</h2>" + _labels_table(c))
    parts.append(f'<p><img alt="labels" src="{_uri(labels_figure(c))}"></p></section>')
    parts.append("<section><h2>Models</h2>" + _model_table(c))
    parts.append(f'<p><img alt="models" src="{_uri(models_figure(c))}"></p></section>')
    parts.append(_refined_table(c))
    parts.append("</main></body></html>")
    return "\n".join(parts)
