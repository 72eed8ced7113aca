"""File-level entry points of ``crownsam refine``, shared by the CLI, the KFP component and the model
evaluation (raw and refined crowns side by side).

:func:`refine_crowns` refines a GeoDataFrame of predicted crowns (box or SESSRS; rules in
``components/refine/README.md``); :func:`run_refine` does it from files (paths or ``gs://`` URIs) and
writes ``REFINED.gpkg`` and its summary together.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from crownsam.common import storage
from crownsam.common.atomic import atomic_paths
from crownsam.common.errors import CrownsamError, InputError, mlflow_errors, vector_errors
from crownsam.common.raster import RasterInfo, check_rgb_bands, raster_info
from crownsam.common.vector import ReadReport, largest_polygon, to_crs
from crownsam.common.window_pipeline import WindowLoopParams, start_workers
from crownsam.everything.params import EverythingParams
from crownsam.everything.passes import MaskGenerator
from crownsam.pseudolabel.params import UNTRAINED_WARNING, PseudolabelParams, Sam2Params
from crownsam.pseudolabel.predictor import PromptPredictor
from crownsam.refine.params import RefineParams

log = logging.getLogger(__name__)

LAYER = "refined"
ID = "crown_id"
COLUMNS = [
    ID,
    "method",
    "refined_by",
    "reason",
    "sam_score",
    "prediction_iou",
    "sam_objects",
    "area",
    "untrained",
]
KEPT = "prediction"  # refined_by of a crown that stays as predicted
BY_METHOD = {"box": "sam2", "sessrs": "sam_objects"}


@dataclass
class RefineSetup:
    """How to refine, apart from the files: the method and thresholds, SAM2, the box method's prompting
    and fallback, the on-the-fly SAM objects, the window loop (``--workers``; the crowns do not depend
    on it), and where the SAM objects and validation crowns are."""

    params: RefineParams = field(default_factory=RefineParams)
    sam2: Sam2Params = field(default_factory=Sam2Params)
    prompting: PseudolabelParams = field(default_factory=PseudolabelParams)
    everything: EverythingParams = field(default_factory=EverythingParams)
    loop: WindowLoopParams = field(default_factory=WindowLoopParams)
    masks: str | None = None  # segment-everything objects (sessrs); None: generated over the crowns
    tune_truth: str | None = None
    tune_area: str | None = None
    tune_coco: str | None = None
    cache_dir: str | None = None
    progress: bool = True

    @property
    def needs_sam2(self) -> bool:
        """Whether SAM2 runs: box prompts, or SAM objects made on the fly."""
        m = self.params.method
        return m == "box" or (m == "sessrs" and not self.masks)


@dataclass
class RefineRequest:
    """One ``crownsam refine`` run."""

    ortho: str
    predictions: str
    out: str
    setup: RefineSetup = field(default_factory=RefineSetup)
    summary: str | None = None
    run_id: str | None = None  # the MLflow run of the model that predicted the crowns (--tune records there)
    tracking_uri: str | None = None


def summary_path(out: str, summary: str | None = None) -> str:
    return summary or str(out).removesuffix(".gpkg") + ".summary.json"


# ------------------------------------------------------------------------------------------------ inputs


def check_setup(setup: RefineSetup) -> None:
    """Option combinations, before anything is read."""
    p, s = setup.params, setup.sam2
    if setup.masks and p.method != "sessrs":
        raise CrownsamError(None, f"--masks holds SAM objects for --method sessrs, not {p.method}")
    if (setup.tune_truth or setup.tune_coco or setup.tune_area) and not p.tune:
        raise CrownsamError(None, "--tune-truth, --tune-area and --tune-coco are for --tune")
    if p.tune and bool(setup.tune_truth) == bool(setup.tune_coco):
        raise CrownsamError(None, "--tune needs validation crowns: --tune-truth FILE or --tune-coco DIR")
    if setup.tune_area and not setup.tune_truth:
        raise CrownsamError(None, "--tune-area limits --tune-truth")
    if setup.needs_sam2 and not (s.checkpoint or s.untrained):
        raise CrownsamError(
            None, "no SAM2 checkpoint: pass --checkpoint URI (path, gs://, https://) or --untrained"
        )


def read_predictions(
    path: str, source: str, crs: str, *, fix: bool = False
) -> tuple[gpd.GeoDataFrame, ReadReport]:
    """Predicted crowns in the raster's CRS with a unique integer ``crown_id`` (the file's, else 1..n in
    file order). An empty file is valid (nothing to refine). Null or empty geometries are dropped;
    invalid or multi-part ones are refused unless ``fix`` (then: ``make_valid``, largest polygon)."""
    report = ReadReport()
    p = Path(path)
    if not p.exists():
        raise InputError(source, "predictions file not found")
    try:
        gdf = gpd.read_file(p)
    except vector_errors() as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(source, f"not a readable vector file ({first})") from exc
    if gdf.crs is None:
        raise InputError(source, "predictions have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:3067)")
    kinds = set(gdf.geometry.geom_type.dropna())
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(source, f"predictions must be polygons, found {', '.join(sorted(kinds))}")
    if ID in gdf.columns:
        ids = gdf[ID]
        if ids.isna().any() or not np.all(np.equal(np.mod(ids.astype(float), 1), 0)):
            raise InputError(source, f"{ID} must be integers")
        if ids.duplicated().any():
            raise InputError(
                source, f"{ID} values must be unique; {int(ids[ids.duplicated()].iloc[0])} repeats"
            )
        gdf[ID] = ids.astype(np.int64)
    else:
        gdf[ID] = np.arange(1, len(gdf) + 1, dtype=np.int64)
        report.ids_assigned = True
    geoms = gdf.geometry.values
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if empty.any():
        report.notes.append(f"{source}: dropped {int(empty.sum())} crowns without geometry")
        gdf = gdf[~empty].reset_index(drop=True)
        geoms = gdf.geometry.values
    bad = ~shapely.is_valid(geoms) | (shapely.get_num_geometries(geoms) > 1)
    if bad.any():
        if not fix:
            ids = ", ".join(map(str, gdf.loc[bad, ID].head(5)))
            raise InputError(
                source,
                f"{int(bad.sum())} invalid or multi-part crowns ({ID} {ids}); pass --fix-geometries to "
                "repair them",
            )
        fixed = [largest_polygon(shapely.make_valid(g)) for g in geoms[bad]]
        gdf.loc[bad, gdf.geometry.name] = gpd.GeoSeries(fixed, index=gdf.index[bad], crs=gdf.crs)
        report.repaired = [int(i) for i in gdf.loc[bad, ID]]
        report.notes.append(f"{source}: repaired {int(bad.sum())} invalid or multi-part crowns")
    gdf = to_crs(gdf, crs, source, report)
    return gdf, report


def priority_order(crowns: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Crowns in priority order: higher prediction ``score`` first (when the column is there), then
    lower ``crown_id``."""
    if "score" in crowns.columns and pd.api.types.is_numeric_dtype(crowns["score"]):
        key = crowns.assign(_s=-crowns["score"].fillna(-np.inf).astype(float))
        return crowns.loc[key.sort_values(["_s", ID], kind="stable").index].reset_index(drop=True)
    return crowns.sort_values(ID, kind="stable").reset_index(drop=True)


# -------------------------------------------------------------------------------------------- the rules


def assemble(
    crowns: gpd.GeoDataFrame,
    geoms: list[shapely.Geometry | None],
    refined_by: list[str],
    reason: list[str],
    *,
    method: str,
    untrained: bool,
    sam_score: np.ndarray | None = None,
    sam_objects: list[int] | None = None,
) -> gpd.GeoDataFrame:
    """The output layer: the crowns' own columns, then :data:`COLUMNS`; crowns without a geometry are
    left out; rows by ``crown_id``."""
    n = len(crowns)
    keep = np.array([g is not None and not g.is_empty for g in geoms], dtype=bool)
    own = [c for c in crowns.columns if c not in (*COLUMNS, crowns.geometry.name)]
    out = pd.DataFrame({c: crowns[c].to_numpy() for c in own})
    new = np.asarray([g if k else shapely.Polygon() for g, k in zip(geoms, keep, strict=True)], dtype=object)
    pred = crowns.geometry.values
    inter = shapely.area(shapely.intersection(new, pred))
    union = shapely.area(shapely.union(new, pred))
    out[ID] = crowns[ID].to_numpy()
    out["method"] = method
    out["refined_by"] = refined_by
    out["reason"] = reason
    out["sam_score"] = sam_score if sam_score is not None else np.full(n, np.nan)
    out["prediction_iou"] = np.divide(inter, union, out=np.zeros(n), where=union > 0)
    out["sam_objects"] = sam_objects if sam_objects is not None else [0] * n
    out["area"] = shapely.area(new)
    out["untrained"] = bool(untrained)
    gdf = gpd.GeoDataFrame(out[[*own, *COLUMNS]], geometry=list(new), crs=crowns.crs)
    return gdf[keep].sort_values(ID, kind="stable").reset_index(drop=True)


def refine_boxes_step(
    crowns: gpd.GeoDataFrame,
    ortho: str,
    setup: RefineSetup,
    source: str,
    predictor: PromptPredictor | None,
) -> tuple[gpd.GeoDataFrame, dict]:
    """The box method on crowns in priority order (see :mod:`crownsam.refine.box`)."""
    from crownsam.refine.box import refine_by_boxes

    extra: dict[str, Any] = {}
    if predictor is None:
        from crownsam.pseudolabel.sam2_model import sam2_box_predictor

        predictor = sam2_box_predictor(setup.sam2, setup.cache_dir)
        extra["device"] = str(getattr(predictor, "device", ""))
    run, plan = refine_by_boxes(
        crowns,
        ortho,
        source,
        predictor,
        setup.prompting,
        setup.params.rgb_bands,
        progress=setup.progress,
        loop=setup.loop,
    )
    labels = run.labels.set_index("segment_id")
    skipped = {int(s["segment_id"]): s["reason"] for s in [*plan.skipped, *run.skipped]}
    geoms, by, why, score = [], [], [], []
    for cid, pred in zip(crowns[ID], crowns.geometry.values, strict=True):
        cid = int(cid)
        if cid in labels.index:
            row = labels.loc[cid]
            sam = row["label_source"] == "sam2"
            geoms.append(row.geometry)
            by.append(BY_METHOD["box"] if sam else KEPT)
            why.append("" if sam else str(row["fallback_reason"]))
            score.append(float(row["sam_score"]))
        elif skipped.get(cid) == "empty_after_exclusive":
            geoms.append(None)  # other crowns' SAM2 masks took all its pixels
            by.append(KEPT)
            why.append("empty_after_exclusive")
            score.append(np.nan)
        else:  # not prompted (outside the raster, larger than a window): the prediction stays
            geoms.append(pred)
            by.append(KEPT)
            why.append(skipped.get(cid, "not_prompted"))
            score.append(np.nan)
    out = assemble(
        crowns, geoms, by, why, method="box", untrained=predictor.untrained, sam_score=np.asarray(score)
    )
    summary = extra | {
        "model": predictor.name,
        "untrained": bool(predictor.untrained),
        "windows": len(plan.windows),
        "prompts": run.prompts,
        "seconds_in_model": round(run.seconds_in_model, 3),
        "fallbacks_by_reason": dict(sorted(Counter(r for r in run.labels["fallback_reason"] if r).items())),
        "pixels_reassigned": int(run.stats["pixels_reassigned_within_windows"])
        + int(run.stats["pixels_reassigned_across_windows"]),
        "settings": {
            k: v for k, v in setup.prompting.as_dict().items() if k.startswith(("fallback", "batch"))
        },
    }
    return out, summary


def sessrs_step(
    crowns: gpd.GeoDataFrame,
    ortho: str,
    info: RasterInfo,
    setup: RefineSetup,
    objects: gpd.GeoDataFrame | None,
    validation: tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None, str] | None,
    generator: MaskGenerator | None,
) -> tuple[gpd.GeoDataFrame, dict]:
    """SESSRS on crowns in priority order (see :mod:`crownsam.refine.sessrs`): objects given, or made
    over the crowns; t1 and t2 given, or tuned on ``validation``."""
    from crownsam.refine.sessrs import sessrs

    p = setup.params
    if objects is None:
        from crownsam.refine.objects import objects_on_the_fly

        objects, objects_summary = objects_on_the_fly(
            ortho,
            crowns,
            setup.everything.replace(rgb_bands=p.rgb_bands),
            setup.sam2,
            generator=generator,
            cache_dir=setup.cache_dir,
            progress=setup.progress,
            loop=setup.loop,
        )
    else:
        objects_summary = {"source": setup.masks, "objects": len(objects)}
    untrained = (
        bool(objects["untrained"].fillna(False).astype(bool).any()) if "untrained" in objects else False
    )
    objects_summary["untrained"] = untrained or bool(objects_summary.get("untrained"))
    obj = objects.geometry.values
    t1, t2, tuned = p.t1, p.t2, None
    if validation is not None:
        from crownsam.refine.tune import tune

        truth, area, where = validation
        tuned = tune(crowns, obj, truth, area, p, info.affine, info.width, info.height)
        tuned["on"] = where
        t1, t2 = tuned["t1"], tuned["t2"]
        log.info("tuned on %s: t1 %g, t2 %g (mean Jaccard %.3f)", where, t1, t2, tuned["jaccard_mean"])
    res = sessrs(crowns.geometry.values, obj, t1, t2, p.max_objects, info.affine, info.width, info.height)
    by = [
        BY_METHOD["sessrs"] if r and g is not None else KEPT
        for r, g in zip(res.refined, res.geoms, strict=True)
    ]
    out = assemble(
        crowns,
        res.geoms,
        by,
        res.reason,
        method="sessrs",
        untrained=objects_summary["untrained"],
        sam_objects=res.supporters,
    )
    summary: dict[str, Any] = {
        "t1": t1,
        "t2": t2,
        "max_objects": p.max_objects,
        "sam_objects": objects_summary,
        "untrained": objects_summary["untrained"],
    } | res.stats
    if tuned is not None:
        summary["tune"] = tuned
    return out, summary


def refine_crowns(
    crowns: gpd.GeoDataFrame,
    ortho: str,
    setup: RefineSetup,
    *,
    source: str = "predicted crowns",
    objects: gpd.GeoDataFrame | None = None,
    validation: tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None, str] | None = None,
    predictor: PromptPredictor | None = None,
    generator: MaskGenerator | None = None,
) -> tuple[gpd.GeoDataFrame, dict]:
    """Refine predicted crowns (raster CRS, ``crown_id``; an empty frame gives an empty result) over the
    local orthophoto ``ortho``. ``objects``: SAM objects (sessrs; None: made over the crowns);
    ``validation``: crowns and area to tune t1 and t2 on (with ``params.tune``). ``predictor`` /
    ``generator`` replace SAM2 (tests). Returns the refined crowns and a summary."""
    t0 = time.perf_counter()
    p = setup.params
    info = raster_info(ortho)
    crowns = priority_order(crowns)
    summary: dict[str, Any] = {"method": p.method, "crowns_in": len(crowns), "settings": p.as_dict()}
    if not len(crowns):
        out = assemble(crowns, [], [], [], method=p.method, untrained=False)
        summary |= {
            "crowns_out": 0,
            "untrained": False,
            "refined_by": {},
            "kept_by_reason": {},
            "dropped": [],
            "note": "no predicted crowns: nothing to refine",
        }
        return out, summary
    if p.method == "box" or (p.method == "sessrs" and objects is None):  # a window loop with SAM2
        settings = setup.loop.settings()
        summary["window_loop"] = {"workers": settings.workers}
        start_workers(settings)  # they start while SAM2 loads
    if p.method == "box":
        out, detail = refine_boxes_step(crowns, ortho, setup, source, predictor)
    elif p.method == "sessrs":
        out, detail = sessrs_step(crowns, ortho, info, setup, objects, validation, generator)
    else:
        n = len(crowns)
        out = assemble(
            crowns,
            list(crowns.geometry.values),
            [KEPT] * n,
            ["method_none"] * n,
            method="none",
            untrained=False,
        )
        detail = {"untrained": False}
    summary[p.method] = detail
    summary["untrained"] = bool(detail.get("untrained"))
    summary |= {
        "crowns_out": len(out),
        "refined_by": dict(sorted(Counter(out["refined_by"]).items())),
        "kept_by_reason": dict(sorted(Counter(out.loc[out["refined_by"] == KEPT, "reason"]).items())),
        "dropped": sorted(set(crowns[ID].astype(int)) - set(out[ID].astype(int))),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if summary["untrained"]:
        summary["WARNING"] = UNTRAINED_WARNING
        if predictor is not None or generator is not None or not setup.needs_sam2:
            log.warning(UNTRAINED_WARNING)  # else building untrained SAM2 said so already
    return out, summary


# ------------------------------------------------------------------------------------------- from files


def run_refine(
    req: RefineRequest, *, predictor: PromptPredictor | None = None, generator: MaskGenerator | None = None
) -> dict:
    """Validate every input (before SAM2 is loaded), refine, write ``REFINED.gpkg`` (layer ``refined``,
    the orthophoto's CRS) and its summary together; with ``--tune``, record the choice in MLflow when the
    predictions come from a model with an MLflow run."""
    setup = req.setup
    if not str(req.out).lower().endswith(".gpkg"):
        raise InputError(req.out, "output must be a GeoPackage (.gpkg)")
    check_setup(setup)
    cache = setup.cache_dir
    ortho = str(storage.fetch(req.ortho, cache, what="raster"))
    info = raster_info(ortho)
    check_rgb_bands(info, setup.params.rgb_bands)
    crs = info.crs or ""
    local = str(storage.fetch(req.predictions, cache, what="predictions file", must_exist=False))
    crowns, report = read_predictions(local, req.predictions, crs, fix=setup.params.fix_geometries)
    for note in report.notes:
        log.warning(note)
    objects = None
    if setup.masks:
        from crownsam.refine.objects import read_objects

        objects = read_objects(
            str(storage.fetch(setup.masks, cache, what="masks file", must_exist=False)), setup.masks, crs
        )
    validation = None
    if setup.params.tune:
        from crownsam.refine.tune import read_validation

        fetch = lambda u, what: str(storage.fetch(u, cache, what=what, must_exist=False)) if u else None  # noqa: E731
        validation = read_validation(
            fetch(setup.tune_truth, "validation crowns"),
            fetch(setup.tune_area, "validation area"),
            setup.tune_coco,
            crs,
        )
    out, summary = refine_crowns(
        crowns, ortho, setup, source=req.predictions, objects=objects, validation=validation,
        predictor=predictor, generator=generator,
    )  # fmt: skip
    if not len(crowns):
        log.warning("%s: no predicted crowns; wrote an empty output", req.predictions)
    summary |= {
        "inputs": {"ortho": req.ortho, "predictions": req.predictions, "masks": setup.masks},
        "reprojected_from": report.reprojected_from,
        "crown_ids_assigned": report.ids_assigned,
        "sam2": setup.sam2.as_dict() if setup.needs_sam2 else None,
    }
    if setup.params.tune and "tune" in summary.get("sessrs", {}):
        tuned = summary["sessrs"]["tune"]
        tuned["mlflow_run"] = record_tuning(tuned, req, local)
        summary["tune"] = {k: tuned[k] for k in ("t1", "t2", "jaccard_mean", "on", "mlflow_run")}
    write_outputs(out, req.out, summary_path(req.out, req.summary), summary, cache)
    return summary


def write_outputs(
    out: gpd.GeoDataFrame, target: str, summary_uri: str, summary: dict, cache: str | None
) -> None:
    with ExitStack() as stack:
        locals_ = [stack.enter_context(storage.local_output(u, cache)) for u in (target, summary_uri)]
        gpkg_tmp, summary_tmp = stack.enter_context(atomic_paths(*locals_))
        kw = {"geometry_type": "Polygon"} if len(out) == 0 else {}
        out.to_file(gpkg_tmp, layer=LAYER, driver="GPKG", **kw)
        summary_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


def prediction_run(predictions_local: str) -> str | None:
    """The MLflow run of the model that predicted the crowns, from ``crownsam predict``'s summary beside
    them (``PRED.summary.json``), or None."""
    p = Path(predictions_local).with_suffix(".summary.json")
    try:
        return json.loads(p.read_text()).get("run_id") or None
    except (OSError, ValueError, AttributeError):
        return None


def record_tuning(tuned: dict, req: RefineRequest, predictions_local: str) -> str | None:
    """Log the chosen pair (metrics ``refine_t1``, ``refine_t2``, ``refine_tune_jaccard``) and the grid
    (artifact ``refine/refine_tune.json``) to the model's MLflow run; returns the run id, or None when
    there is no run to log to (said on stderr)."""
    import os

    run_id = req.run_id or prediction_run(predictions_local)
    uri = req.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not run_id or not uri:
        log.warning(
            "tuning recorded in the summary only: %s",
            "no MLflow run for these predictions (--run-id)" if not run_id else "no --tracking-uri",
        )
        return None
    from crownsam.training.tracking import log_metrics_to_run

    metrics = {
        "refine_t1": tuned["t1"],
        "refine_t2": tuned["t2"],
        "refine_tune_jaccard": tuned["jaccard_mean"],
    }
    with tempfile.TemporaryDirectory(prefix="crownsam-tune-") as tmp:
        grid = Path(tmp) / "refine_tune.json"
        grid.write_text(json.dumps(tuned, indent=2, sort_keys=True) + "\n")
        try:
            log_metrics_to_run(run_id, uri, metrics, {"refine": grid})
        except mlflow_errors() as exc:  # the summary holds the result; MLflow is a copy
            log.warning("could not log the tuning to MLflow run %s at %s: %s", run_id, uri, exc)
            return None
    return run_id
