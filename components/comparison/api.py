"""The comparison entry point: evaluation folders in; report, metrics and registry aliases out."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from crownsam.coco.export import test_set_id
from crownsam.common import storage
from crownsam.common.atomic import atomic_paths, check_output_folder
from crownsam.common.errors import InputError
from crownsam.common.provenance import git_commit
from crownsam.common.vector import read_polygons
from crownsam.comparison.compare import Comparison, markdown, paired_model_jaccard, read_json, read_model_eval
from crownsam.comparison.registry import Candidate, register_and_promote
from crownsam.comparison.report import build_html

log = logging.getLogger(__name__)


def compare_step(
    label_eval_dir: str,
    model_eval_dirs: dict[str, str],
    out_dir: str,
    *,
    manual_uri: str = "",
    test_area_uri: str = "",
    register_name: str = "",
    tracking_uri: str = "",
    tags: dict[str, str] | None = None,
    banner: str | None = None,
    metric: str = "segm_AP",
) -> dict:
    """Write ``comparison.html``, ``comparison.md`` and ``comparison.json`` into ``out_dir`` (together);
    with ``register_name``, register both models and set the champion/challenger aliases."""
    check_output_folder(out_dir, "--out")
    label_metrics = read_json(Path(label_eval_dir) / "metrics.json", "label evaluation metrics")
    label_sets = [k.split("/", 1)[1] for k in label_metrics if k.startswith("jaccard_mean/")]
    models = [read_model_eval(src, d) for src, d in model_eval_dirs.items()]
    c = Comparison(label_sets=label_sets, label_metrics=label_metrics, models=models, banner=banner)
    if manual_uri:
        manual = read_polygons(storage.fetch(manual_uri, what="manual crowns"), "manual crowns")
        area = (
            read_polygons(storage.fetch(test_area_uri, what="test area"), "test area")
            if test_area_uri
            else None
        )
        c.model_paired = paired_model_jaccard(models, manual, area)
    result: dict = {"metrics": c.flat_metrics(), "registry": None}
    if register_name:
        result["registry"] = _register(c, model_eval_dirs, register_name, tracking_uri, tags or {}, metric)
    with atomic_paths(
        *(Path(out_dir) / n for n in ("comparison.html", "comparison.md", "comparison.json"))
    ) as t:
        t[0].write_text(build_html(c))
        t[1].write_text(markdown(c))
        t[2].write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    return result


def _register(
    c: Comparison, eval_dirs: dict[str, str], name: str, tracking_uri: str, tags: dict[str, str], metric: str
) -> dict:
    from mlflow import MlflowClient

    missing = [m.source for m in c.models if not m.run_id]
    if missing:
        raise InputError(None, f"models trained on {', '.join(missing)} have no MLflow run; cannot register")
    coco_dir = read_json(Path(next(iter(eval_dirs.values()))) / "metrics.json", "model evaluation")[
        "coco_dir"
    ]
    test_set = test_set_id(coco_dir)
    client = MlflowClient(tracking_uri or None)
    candidates = [Candidate(m.source, m.run_id or "", m.metrics[metric]) for m in c.models]

    def reevaluate(version: str) -> float:
        from crownsam.training.api import evaluate_model

        with tempfile.TemporaryDirectory(prefix="crownsam-champion-") as tmp:
            r = evaluate_model(
                f"models:/{name}/{version}", coco_dir, tmp, tracking_uri=tracking_uri or None,
                log_to_mlflow=False, progress=False,
            )  # fmt: skip
        return float(r["metrics"][metric])

    all_tags = {"git_commit": git_commit(), **tags}
    decision, versions = register_and_promote(
        client, name, candidates, test_set=test_set, tags=all_tags, metric_name=metric, reevaluate=reevaluate
    )
    c.decision = [
        f"Registry ({name}): " + "; ".join(f"v{versions[s]} {why}" for s, why in decision.reasons.items())
    ]
    return {
        "name": name,
        "versions": versions,
        "aliases": {alias: versions[src] for alias, src in decision.aliases.items()},
        "promoted": decision.promoted,
        "champion_before": decision.champion_before,
        "champion_before_metric": decision.champion_metric,
        "reasons": decision.reasons,
        "test_set": test_set,
    }
