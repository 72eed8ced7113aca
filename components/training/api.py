"""File-level entry points for ``crownsam predict`` and ``crownsam evaluate-model`` (CLI and KFP share
them). ``crownsam train`` calls :func:`crownsam.training.train.train` directly."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import shapely

from crownsam.common import storage
from crownsam.common.atomic import atomic_paths, check_output_file, check_output_folder
from crownsam.common.device import resolve_device
from crownsam.common.errors import CrownsamError, InputError, mlflow_errors
from crownsam.common.metrics import finite_metrics
from crownsam.common.raster import compute_stretch, raster_info
from crownsam.common.vector import read_polygons, same_crs
from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.training import data as D
from crownsam.training.config import InferenceParams
from crownsam.training.predict import LAYER, check_bands, predict_ortho

if TYPE_CHECKING:
    from crownsam.refine.api import RefineSetup

log = logging.getLogger(__name__)


def read_area(path: str | Path, crs: str) -> shapely.Geometry:
    """The union of an area file's polygons, in ``crs``."""
    from pyproj import CRS

    gdf = read_polygons(path, "area")
    if not same_crs(CRS.from_user_input(gdf.crs), CRS.from_user_input(crs)):
        gdf = gdf.to_crs(crs)
    geom = shapely.union_all(shapely.make_valid(gdf.geometry.values))
    if geom.is_empty:
        raise InputError(path, "area polygons are empty")
    return geom


def model_bands_and_stretch(
    meta: dict[str, Any], ortho: str, bands: Sequence[int] | None, stretch_mode: str
) -> tuple[tuple[int, ...], list[tuple[float, float]]]:
    """The orthophoto bands to read (the model's, or ``bands`` of the same count) and their stretch (the
    model's training stretch, or this orthophoto's own 2-98 % stretch with ``stretch_mode="scene"`` or
    when the model has none)."""
    info = raster_info(ortho)
    model_bands = tuple(int(b) for b in meta["bands"])
    use = tuple(bands) if bands else model_bands
    if len(use) != len(model_bands):
        raise InputError(
            ortho,
            f"the model takes {len(model_bands)} bands ({','.join(map(str, model_bands))}), "
            f"--bands gives {len(use)}",
        )
    check_bands(use, info.count, ortho)
    if stretch_mode not in ("model", "scene"):
        raise CrownsamError(None, f"--stretch must be model or scene, got {stretch_mode!r}")
    stretch = meta.get("stretch")
    if stretch_mode == "scene" or not stretch or use != model_bands:
        if stretch_mode == "model":
            log.warning(
                "%s: the model has no stretch for these bands; using this orthophoto's 2-98 %% stretch", ortho
            )
        return use, compute_stretch(ortho, use)
    return use, [(float(lo), float(hi)) for lo, hi in stretch]


@dataclass
class PredictRequest:
    """Everything ``crownsam predict`` takes: where things are, and how to infer (``inference``)."""

    model: str
    ortho: str
    out: str
    area: str | None = None
    bands: tuple[int, ...] | None = None
    stretch: str = "model"
    tracking_uri: str | None = None
    cache_dir: str | None = None
    progress: bool = True
    inference: InferenceParams = field(default_factory=InferenceParams)
    loop: WindowLoopParams = field(default_factory=WindowLoopParams)  # --workers


def model_classes(meta: dict[str, Any]) -> list[tuple[int | None, str]] | None:
    """(class value, name) of each model label 1..K of a multi-class model (from its metadata), else
    None. The class value is the export category's ``class_value`` (the labels' ``pseudo_class``)."""
    names = list(meta.get("classes") or [])[1:]
    if len(names) < 2:
        return None
    values = list(meta.get("class_values") or [None] * len(names))
    return [(None if v is None else int(v), str(n)) for v, n in zip(values, names, strict=True)]


def summary_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".summary.json")


def predict_files(req: PredictRequest) -> dict[str, Any]:
    """Validate inputs, load the model, predict over the orthophoto (or area), write GPKG + summary."""
    from crownsam.training.tracking import load_model

    if Path(req.out).suffix.lower() != ".gpkg":
        raise InputError(req.out, "output must be a GeoPackage (.gpkg)")
    check_output_file(req.out, "--out")
    inf = req.inference
    info = raster_info(req.ortho)
    assert info.crs is not None  # raster_info refuses a raster without one
    area = read_area(req.area, info.crs) if req.area else None
    device = resolve_device(inf.device)
    loaded = load_model(req.model, tracking_uri=req.tracking_uri, cache_dir=req.cache_dir)
    bands, stretch = model_bands_and_stretch(loaded.meta, req.ortho, req.bands, req.stretch)
    gdf, summary = predict_ortho(
        loaded.model,
        req.ortho,
        bands,
        stretch,
        area=area,
        window=inf.window,
        overlap=inf.overlap,
        score_threshold=inf.score_threshold,
        device=device,
        batch_size=inf.batch_size,
        progress=req.progress,
        classes=model_classes(loaded.meta),
        loop=req.loop,
    )
    gdf["model"] = loaded.source
    summary |= {"model": loaded.source, "run_id": loaded.run_id, "bands": list(bands), "stretch": stretch}
    summary |= {"ortho": str(req.ortho), "area": req.area, "device": str(device)}
    write_predictions(gdf, req.out, summary)
    return summary


def write_predictions(gdf: gpd.GeoDataFrame, out: str | Path, summary: dict[str, Any]) -> None:
    with atomic_paths(out, summary_path(out)) as (gpkg_tmp, summary_tmp):
        kw = {"geometry_type": "Polygon"} if len(gdf) == 0 else {}
        gdf.to_file(gpkg_tmp, layer=LAYER, driver="GPKG", **kw)
        summary_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


def evaluate_model(
    model: str,
    coco_dir: str,
    out_dir: str,
    *,
    manual: str | None = None,
    area: str | None = None,
    ortho: str | None = None,
    split: str = "test",
    inference: InferenceParams | None = None,
    tracking_uri: str | None = None,
    log_to_mlflow: bool = True,
    cache_dir: str | None = None,
    progress: bool = True,
    refine: RefineSetup | None = None,
    loop: WindowLoopParams | None = None,
) -> dict[str, Any]:
    """COCO segm/bbox statistics of ``model`` on ``coco_dir``'s ``split`` chips (flat keys ``segm_AP``,
    ``bbox_AP50``, ...), plus, with ``manual`` crowns and ``ortho``, the Jaccard metrics of the crowns it
    predicts over ``area`` (``crownsam.evaluation``; label set name ``model``). Writes ``metrics.json``,
    ``predictions_<split>.png`` and (with manual crowns) ``predictions.gpkg`` and ``per_tree.csv`` into
    ``out_dir``, and logs the metrics (prefixed ``eval_``) to the model's MLflow run when it has one.

    With ``refine`` (method ``box`` or ``sessrs``, and manual crowns), the predicted crowns are refined
    (``crownsam.refine``) and evaluated beside the raw ones: label set ``refined`` in the Jaccard metrics
    (``jaccard_mean/refined``, ``f1/refined``, the paired difference refined - model), COCO statistics of
    the refined crowns on the chips prefixed ``refined_`` (where the chips carry their georeference), and
    ``refined.gpkg`` + ``refine.summary.json`` in ``out_dir``.

    ``loop``: the window loop of the prediction over ``ortho`` (default: :class:`WindowLoopParams`'s,
    the task's CPUs); the refinement's is ``refine.loop``."""
    from crownsam.training.evaluate import coco_metrics, plot_predictions, predict_split
    from crownsam.training.tracking import load_model, log_metrics_to_run

    # -- every input checked before the model is loaded (remote inputs fetched first)
    check_output_folder(out_dir, "--out")
    manual = str(storage.fetch(manual, cache_dir, what="manual crowns", must_exist=False)) if manual else None
    area = str(storage.fetch(area, cache_dir, what="test area", must_exist=False)) if area else None
    ortho = str(storage.fetch(ortho, cache_dir, what="raster", must_exist=False)) if ortho else None
    export = D.read_export(coco_dir)
    gt_path = export.root / f"{split}.json"
    if not gt_path.is_file():
        raise InputError(gt_path, f"no {split} split in this export (was a test area given to export-coco?)")
    gt = D.load_coco(gt_path)
    if not gt["images"]:
        raise InputError(gt_path, f"the {split} split has no chips")
    if manual and not ortho:
        raise CrownsamError(None, "--manual needs --ortho (the crowns are predicted over the orthophoto)")
    if (area or ortho) and not manual:
        raise CrownsamError(None, "--area/--ortho are for the Jaccard evaluation and need --manual")
    refining = refine is not None and refine.params.method != "none"
    if refining:
        from crownsam.refine.api import check_setup

        assert refine is not None
        if not manual:
            raise CrownsamError(None, "--refine refines the crowns predicted over --ortho: it needs --manual")
        check_setup(refine)
    inf = inference or InferenceParams()
    manual_gdf = area_gdf = None
    if manual:
        assert ortho is not None  # checked above
        info = raster_info(ortho)
        assert info.crs is not None  # raster_info refuses a raster without one
        manual_gdf = read_polygons(manual, "manual crowns")
        area_gdf = read_polygons(area, "area") if area else None
    dev = resolve_device(inf.device)
    loaded = load_model(model, tracking_uri=tracking_uri, cache_dir=cache_dir)
    channels = D.select_channels(export.bands, loaded.meta["bands"], str(export.root / "export.json"))

    chip = int(loaded.meta.get("chip") or D.chip_size({split: gt}, export))
    ds = D.CocoChips(export.root, gt, channels, max(chip, D.chip_size({split: gt}, export)))
    preds = predict_split(loaded.model.to(dev), ds, dev, progress=progress)
    metrics: dict[str, Any] = coco_metrics(gt, preds, loaded.meta.get("category_ids"))
    out = Path(out_dir)
    png = out / f"predictions_{split}.png"
    plot_predictions(ds, preds, png, title=f"{loaded.source}: {split} segm AP {metrics['segm_AP']:.3f}")
    extra_files: dict[str, Any] = {}
    if manual and ortho:
        from crownsam.evaluation.api import evaluate_label_sets

        crs = info.crs or ""
        region = read_area(area, crs) if area else _manual_extent(manual_gdf, crs)
        bands, stretch = model_bands_and_stretch(loaded.meta, ortho, None, "model")
        pred_gdf, _ = predict_ortho(
            loaded.model,
            ortho,
            bands,
            stretch,
            area=region,
            window=inf.window,
            overlap=inf.overlap,
            score_threshold=inf.score_threshold,
            device=dev,
            batch_size=inf.batch_size,
            progress=progress,
            loop=loop or WindowLoopParams(),
        )
        sets = {"model": pred_gdf}
        refined_summary: dict[str, Any] | None = None
        if refining:
            assert refine is not None
            sets["refined"], refined_summary = refine_predictions(pred_gdf, ortho, refine)
        ev = evaluate_label_sets(
            manual_gdf,
            sets,
            area_gdf,
            sources={"manual": str(manual), "area": str(area), "model": "predicted crowns"}
            | ({"refined": "refined crowns"} if refining else {}),
        )
        for note in ev.notes:
            log.warning(note)
        metrics |= {k: (v if math.isfinite(v) else None) for k, v in ev.metrics.items()}
        metrics["predicted_crowns"] = float(len(pred_gdf))
        extra_files = {"predictions.gpkg": pred_gdf, "per_tree.csv": ev.per_tree}
        if refined_summary is not None:
            from crownsam.refine.chips import chips_have_frames, crowns_coco_metrics

            refined = sets["refined"]
            metrics["refined_crowns"] = float(len(refined))
            if chips_have_frames(gt):
                coco_refined = crowns_coco_metrics(
                    gt, refined.to_crs(gt["images"][0]["crownsam"]["crs"]), str(gt_path)
                )
                metrics |= {f"refined_{k}": v for k, v in coco_refined.items()}
            extra_files |= {"refined.gpkg": refined, "refine.summary.json": refined_summary}
    result = {
        "model": loaded.source,
        "run_id": loaded.run_id,
        "split": split,
        "coco_dir": str(export.root),
        "metrics": metrics,
    }
    targets = [out / "metrics.json", *(out / n for n in extra_files)]
    with atomic_paths(*targets) as tmps:
        tmps[0].write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
        for tmp, (name, obj) in zip(tmps[1:], extra_files.items(), strict=True):
            if name.endswith(".json"):
                tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
            elif name.endswith(".gpkg"):
                kw = {"geometry_type": "Polygon"} if len(obj) == 0 else {}
                obj.to_file(tmp, layer=LAYER, driver="GPKG", **kw)
            else:
                obj.to_csv(tmp, index=False)
    turi = tracking_uri or loaded.tracking_uri
    if log_to_mlflow and loaded.run_id and turi:
        try:
            log_metrics_to_run(
                loaded.run_id,
                turi,
                {f"eval_{k}".replace("/", "_"): v for k, v in finite_metrics(metrics).items()},
                {"eval": png},
            )
            result["logged_to_run"] = loaded.run_id
        except mlflow_errors() as exc:  # the metrics are written; MLflow is a copy
            log.warning("could not log to MLflow run %s at %s: %s", loaded.run_id, turi, exc)
    return result


def refine_predictions(
    pred: gpd.GeoDataFrame, ortho: str, setup: RefineSetup
) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """The predicted crowns (raster CRS, ``segment_id`` and ``score``) refined by ``crownsam.refine``
    (``crown_id`` = ``segment_id``), and the refinement's summary."""
    from crownsam.refine.api import refine_crowns

    crowns = pred.assign(crown_id=pred["segment_id"].to_numpy())
    return refine_crowns(crowns, ortho, setup, source="predicted crowns")


def _manual_extent(manual: gpd.GeoDataFrame, crs: str) -> shapely.Geometry:
    from pyproj import CRS

    if not same_crs(CRS.from_user_input(manual.crs), CRS.from_user_input(crs)):
        manual = manual.to_crs(crs)
    return shapely.box(*manual.total_bounds)


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
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
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
