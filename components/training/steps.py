"""Training and model evaluation as pipeline steps (thin: config from parameters, library call)."""

from __future__ import annotations

import math
from pathlib import Path

from crownsam.common import storage


def train_step(
    coco_dir: str,
    out_dir: str,
    label_source: str,
    *,
    epochs: int,
    max_iters: int,
    lr: float,
    batch_size: int,
    model_version: str,
    init_weights: str,
    tracking_uri: str,
    experiment: str,
    tags: dict[str, str],
) -> dict:
    """Train into ``out_dir``; resume when a checkpoint from an earlier attempt is there."""
    from crownsam.training.config import TrainConfig
    from crownsam.training.train import train

    resume = (Path(out_dir) / "checkpoints" / "last.pt").is_file()
    cfg = TrainConfig(
        coco_dir=coco_dir,
        out_dir=out_dir,
        label_source=label_source,
        epochs=epochs,
        max_iters=max_iters or None,
        lr=lr,
        batch_size=batch_size,
        model_version=model_version,
        weights=init_weights or None,
        tracking_uri=tracking_uri or None,
        experiment=experiment,
        tags={k: v for k, v in tags.items() if v},
        resume=resume,
        progress=False,
    )
    metrics = train(cfg)
    finite = {k: float(v) for k, v in metrics.items() if _number(v)}
    return {"run_id": str(metrics.get("run_id") or ""), "metrics": finite}


def evaluate_model_step(
    model_dir: str,
    coco_dir: str,
    out_dir: str,
    manual_uri: str,
    test_area_uri: str,
    ortho_uri: str,
    tracking_uri: str,
) -> dict[str, float]:
    """Evaluate a trained model folder on the export's test split (+ Jaccard over the test area)."""
    from crownsam.training.api import evaluate_model

    r = evaluate_model(
        model_dir,
        coco_dir,
        out_dir,
        manual=str(storage.fetch(manual_uri, what="manual crowns")) if manual_uri else None,
        area=str(storage.fetch(test_area_uri, what="test area")) if test_area_uri else None,
        ortho=str(storage.fetch(ortho_uri, what="raster")) if manual_uri else None,
        tracking_uri=tracking_uri or None,
        progress=False,
    )
    return {k.replace("/", "_"): float(v) for k, v in r["metrics"].items() if _number(v)}


def model_report_html(out_dir: str, title: str = "crownsam model evaluation") -> str:
    """A self-contained page for KFP's HTML viewer: the metrics table and the prediction image(s) that
    ``evaluate_model`` wrote into ``out_dir``."""
    import base64
    import html
    import json

    from crownsam.evaluation.report import CSS

    d = json.loads((Path(out_dir) / "metrics.json").read_text())
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>"
        for k, v in sorted(d.get("metrics", {}).items())
        if _number(v)
    )
    imgs = "".join(
        f'<p><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"></p>'
        for p in sorted(Path(out_dir).glob("predictions_*.png"))
    )
    head = f"<h1>{html.escape(title)}</h1><p>model <code>{html.escape(str(d.get('model')))}</code>"
    head += f" &middot; MLflow run <code>{html.escape(str(d.get('run_id')))}</code></p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><main>{head}<section><h2>Metrics</h2><table>"
        f"<tr><th>metric</th><th>value</th></tr>{rows}</table></section><section><h2>Predictions</h2>{imgs}"
        "</section></main></body></html>"
    )


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
