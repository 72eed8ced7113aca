"""The end of a local run, for a person: a short summary of the results, and one page that links every
report of the run.

* **Summary** (:func:`summary_lines`): the Jaccard index of each label set against the manual crowns
  (mean and bootstrap interval), the paired difference pseudo - coarse, each model's COCO segm AP on
  the held-out test area, and the registry decision; read from the steps' outputs in the KFP run folder.
* **Index** (:func:`write_index`): ``<out>/index.html`` and ``<out>/reports/*.html``: copies of the
  label report, the comparison, each model's evaluation, and a page made from the pseudolabel summary
  (KFP's artifacts have no file extension, so a browser would not open them as pages). The reports are
  self-contained (pictures inlined), so the copies work anywhere. Each is written under a temporary
  name and renamed (the reports folder first, then the index).
"""

from __future__ import annotations

import html
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crownsam.common.atomic import atomic_dir, atomic_path

INDEX = "index.html"
REPORTS_DIR = "reports"


@dataclass
class Report:
    """One page linked from the index."""

    name: str  # file name under reports/
    title: str
    what: str  # one line: what the page holds
    source: Path | None = None  # an HTML artifact to copy
    html: str | None = None  # or the page itself


@dataclass
class RunResults:
    """What a local run found, read from its task folders."""

    run_dir: Path
    label_metrics: dict[str, Any] = field(default_factory=dict)
    label_sets: list[str] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # label source -> eval metrics
    registry: dict[str, Any] | None = None
    pseudolabels: dict[str, Any] | None = None
    reports: list[Report] = field(default_factory=list)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _one(run_dir: Path, pattern: str) -> Path | None:
    hits = sorted(run_dir.rglob(pattern))
    return hits[-1] if hits else None


def _model_source(eval_dir: Path, fallback: str) -> str:
    """The label source a model was trained on (its training folder's ``metrics.json``)."""
    d = _json(eval_dir / "metrics.json") or {}
    model = d.get("model")
    if model:
        trained = _json(Path(model) / "metrics.json") or {}
        if trained.get("label_source"):
            return str(trained["label_source"])
    return fallback


def collect(run_dir: Path) -> RunResults:
    """Read the results of a finished run from its KFP run folder (task folders named after components)."""
    r = RunResults(run_dir=run_dir)
    labels_dir = _one(run_dir, "evaluate-labels-op/results")
    if labels_dir is not None:
        r.label_metrics = _json(labels_dir / "metrics.json") or {}
        r.label_sets = [k.split("/", 1)[1] for k in r.label_metrics if k.startswith("jaccard_mean/")]
    for i, eval_dir in enumerate(sorted(run_dir.rglob("evaluate-model-op*/results"))):
        source = _model_source(eval_dir, f"model {i + 1}")
        r.models[source] = (_json(eval_dir / "metrics.json") or {}).get("metrics") or {}
        r.reports.append(
            Report(
                f"model-{source}.html",
                f"Model trained on {source} labels",
                "COCO segm/bbox AP on the test chips, Jaccard of the crowns it predicts, pictures",
                source=eval_dir.parent / "report",
            )
        )
    comparison = _one(run_dir, "compare-op/result")
    if comparison is not None:
        r.registry = (_json(comparison / "comparison.json") or {}).get("registry")
    merged = _one(run_dir, "merge-labels-op/labels")
    if merged is not None:
        r.pseudolabels = _json(merged / "pseudolabels.summary.json")
    first: list[Report] = []
    if labels_dir is not None:
        first.append(
            Report(
                "labels.html",
                "Label report",
                "Jaccard of every label set against the manual crowns: per tree, intervals, verdict, maps",
                source=labels_dir.parent / "report",
            )
        )
    if comparison is not None:
        first.append(
            Report(
                "comparison.html",
                "Comparison",
                "labels and models side by side, verdict, registry decision",
                source=comparison.parent / "report",
            )
        )
    if r.pseudolabels is not None:
        first.append(
            Report(
                "pseudolabels.html",
                "Pseudolabel summary",
                "windows, prompts, skipped segments by reason, timings of the SAM2 step",
                html=pseudolabel_page(r.pseudolabels),
            )
        )
    r.reports = first + r.reports
    return r


# -- numbers in words -----------------------------------------------------------------------------------


def _num(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) and math.isfinite(v) else "n/a"


def label_lines(r: RunResults) -> list[str]:
    """``coarse  0.612 [0.590, 0.633]`` per label set, then the paired difference."""
    from crownsam.evaluation.stats import LEVEL

    m = r.label_metrics
    lines = [f"label Jaccard vs manual crowns (mean, {LEVEL:.0%} interval):"]
    for name in r.label_sets:
        lo, hi = m.get(f"jaccard_ci_low/{name}"), m.get(f"jaccard_ci_high/{name}")
        lines.append(f"  {name:<8} {_num(m.get(f'jaccard_mean/{name}'))} [{_num(lo)}, {_num(hi)}]")
    for key in sorted(k.split("/", 1)[1] for k in m if k.startswith("paired_diff_mean/")):
        lo, hi = m.get(f"paired_diff_ci_low/{key}"), m.get(f"paired_diff_ci_high/{key}")
        d = m.get(f"paired_diff_mean/{key}")
        sign = "+" if isinstance(d, int | float) and d >= 0 else ""
        lines.append(f"  {key:<8} {sign}{_num(d)} [{_num(lo)}, {_num(hi)}] (paired, same trees)")
    return lines


def registry_line(reg: dict[str, Any] | None) -> str:
    """The registry decision in one line: aliases and versions, and whether the champion changed."""
    if not reg:
        return "registry: no decision recorded"
    versions = {str(v): s for s, v in (reg.get("versions") or {}).items()}
    aliases = ", ".join(
        f"{alias} = v{v} ({versions.get(str(v), '?')})"
        for alias, v in sorted((reg.get("aliases") or {}).items())
    )
    change = "new champion" if reg.get("promoted") else "champion kept"
    return f"registry {reg.get('name')}: {aliases or 'no aliases'}; {change}"


def summary_lines(r: RunResults) -> list[str]:
    """The run's results in a few lines (see the module docstring)."""
    lines = label_lines(r) if r.label_sets else ["label Jaccard: no label evaluation found"]
    if r.models:
        ap = ", ".join(f"{s} {_num(m.get('segm_AP'))}" for s, m in r.models.items())
        lines.append(f"Mask R-CNN segm AP on the test area: {ap}")
    lines.append(registry_line(r.registry))
    return lines


# -- pages ------------------------------------------------------------------------------------------------


def _page(title: str, body: str, banner: str | None = None) -> str:
    from crownsam.evaluation.report import CSS

    top = f'<div class="banner">{html.escape(banner)}</div>' if banner else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{top}<main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)


def pseudolabel_page(summary: dict[str, Any], max_skipped: int = 200) -> str:
    """The pseudolabel summary (``pseudolabels.summary.json``) as a page: its numbers, the skips by reason,
    and the first ``max_skipped`` skipped segments."""
    from crownsam.pseudolabel.params import UNTRAINED_BANNER

    plain = [
        (k, v) for k, v in sorted(summary.items()) if not isinstance(v, dict | list) and k not in ("WARNING",)
    ]
    nested = [
        (f"{k}.{kk}", vv) for k, v in sorted(summary.items()) if isinstance(v, dict) for kk, vv in v.items()
    ]
    skipped = summary.get("skipped_segments") or []
    skipped_rows = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(s.get(c, '')))}</td>" for c in ("segment_id", "reason"))
        + "</tr>"
        for s in skipped[:max_skipped]
    )
    more = (
        f"<p>... and {len(skipped) - max_skipped} more (see the JSON)</p>"
        if len(skipped) > max_skipped
        else ""
    )
    body = (
        "<section><h2>Numbers</h2><table><tr><th>field</th><th>value</th></tr>"
        f"{_rows(plain + nested)}</table></section>"
        f"<section><h2>Skipped segments ({len(skipped)})</h2>"
        "<table><tr><th>segment_id</th><th>reason</th></tr>"
        f"{skipped_rows}</table>{more}</section>"
    )
    return _page("Pseudolabel summary", body, UNTRAINED_BANNER if summary.get("untrained") else None)


def index_page(
    r: RunResults,
    *,
    untrained: bool,
    tracking_uri: str,
    log: Path | None,
    seconds: float | None,
) -> str:
    """``index.html``: the summary, a link to every report, and where the rest lies."""
    from crownsam.pseudolabel.params import UNTRAINED_BANNER

    links = "".join(
        f"<li><a href='{REPORTS_DIR}/{html.escape(p.name)}'>{html.escape(p.title)}</a>: "
        f"{html.escape(p.what)}</li>"
        for p in r.reports
    )
    summary = "<br>".join(html.escape(line).replace("  ", "&nbsp;&nbsp;") for line in summary_lines(r))
    files = [("KFP run folder (every task's artifacts)", str(r.run_dir)), ("MLflow store", tracking_uri)]
    if log is not None:
        files.append(("everything the steps printed", str(log)))
    if seconds is not None:
        files.append(("wall time", f"{seconds / 60:.1f} min"))
    body = (
        f"<section><h2>Results</h2><p><code>{summary}</code></p></section>"
        f"<section><h2>Reports</h2><ul>{links}</ul></section>"
        f"<section><h2>Files</h2><table>{_rows(files)}</table></section>"
    )
    return _page(f"crownsam run {r.run_dir.name}", body, UNTRAINED_BANNER if untrained else None)


def write_index(
    out: Path,
    r: RunResults,
    *,
    untrained: bool,
    tracking_uri: str,
    log: Path | None = None,
    seconds: float | None = None,
) -> Path:
    """Write ``out/reports/*.html`` and ``out/index.html`` (replacing an earlier run's); return the index."""
    with atomic_dir(out / REPORTS_DIR) as tmp:
        for p in r.reports:
            if p.source is not None and p.source.is_file():
                shutil.copyfile(p.source, tmp / p.name)
            elif p.html is not None:
                (tmp / p.name).write_text(p.html)
    r.reports = [p for p in r.reports if (out / REPORTS_DIR / p.name).is_file()]
    index = out / INDEX
    with atomic_path(index) as tmp_index:
        tmp_index.write_text(
            index_page(r, untrained=untrained, tracking_uri=tracking_uri, log=log, seconds=seconds)
        )
    return index
