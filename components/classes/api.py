"""``pseudo_classes``: crowns in, the same crowns with a pseudo-class out (plus centres JSON and report).

Inputs may be local paths or ``gs://`` URIs; every input is checked before SAM2 is loaded or any pixel is
read for features. Outputs (``OUT``, ``OUT.centres.json``, ``OUT.report.html``) are written under
temporary names and renamed together, so a failure leaves none of them half-written.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from crownsam.classes.bands import band_roles, check_roles, describe_roles
from crownsam.classes.cluster import ClassModel, Fit, assign, cluster, fit_scaling
from crownsam.classes.features import CrownFeatures, compute_features, group_crowns, spectral_spec
from crownsam.classes.params import CLASS_COLUMN, ClassesParams, PipelineClasses
from crownsam.common import storage
from crownsam.common.artifacts import label_file
from crownsam.common.atomic import atomic_paths
from crownsam.common.errors import CrownsamError, InputError
from crownsam.common.raster import check_rgb_bands, compute_stretch, open_raster, raster_info
from crownsam.common.vector import ReadReport, read_polygons, to_crs
from crownsam.pseudolabel.params import UNTRAINED_WARNING, Sam2Params
from crownsam.tiling.plan import pixel_geometries

log = logging.getLogger(__name__)

LAYER = "pseudo_classes"
UNCLASSED = -1


def output_paths(out: str) -> tuple[str, str]:
    """(centres JSON, report HTML) beside the output GeoPackage: ``X.gpkg`` -> ``X.centres.json``,
    ``X.report.html``."""
    stem = str(out)[: -len(".gpkg")] if str(out).lower().endswith(".gpkg") else str(out)
    return stem + ".centres.json", stem + ".report.html"


def _untrained_banner(untrained: bool) -> str | None:
    if not untrained:
        return None
    return UNTRAINED_WARNING.replace("Masks are", "Its embeddings, and these classes, are")


@dataclass
class _Inputs:
    ortho: str  # local path
    frame: gpd.GeoDataFrame  # the input crowns, as read (input CRS, every column)
    pix: np.ndarray  # crown geometries in the raster's pixel coordinates
    roles: dict[str, int]
    params: ClassesParams
    sam2: Sam2Params
    model: ClassModel | None


def _prepare(
    ortho: str,
    labels: str,
    out: str,
    params: ClassesParams,
    sam2: Sam2Params,
    centres: str | None,
    cache_dir: str | None,
) -> _Inputs:
    """Check every input (no pixels read but the header, no model loaded)."""
    if not str(out).lower().endswith(".gpkg"):
        raise InputError(out, "output must be a GeoPackage (.gpkg)")
    model = None
    if centres:
        model = ClassModel.load(storage.fetch(centres, cache_dir, what="centres file"), centres)
        if model.sam2 and not (sam2.checkpoint or sam2.untrained):
            how = "--untrained" if model.sam2["untrained"] else f"--checkpoint {model.sam2['checkpoint']}"
            raise InputError(centres, f"centres were fitted on SAM2 embeddings: pass {how} as for the fit")
        if model.sam2:
            sam2 = sam2.replace(model=model.sam2["model"])
            params = params.replace(rgb_bands=tuple(model.sam2["rgb_bands"]))
        params = params.replace(
            k=model.k,
            features=model.features,
            indices=tuple(model.spectral["indices"]),
            percentiles=tuple(model.spectral["percentiles"]),
            texture_px=int(model.spectral["texture_px"]),
            min_pixels=model.min_pixels,
        )
    elif params.uses_sam2 and not sam2.checkpoint and not sam2.untrained:
        raise CrownsamError(
            None,
            f"--features {params.features} needs SAM2: pass --checkpoint URI (path, gs://, https://) or "
            "--untrained",
        )
    local = str(storage.fetch(ortho, cache_dir, what="raster"))
    info = dataclasses.replace(raster_info(local), path=ortho)
    roles = band_roles(ortho, info.descriptions, params.band_names)
    check_roles(ortho, roles, params.indices, explicit=params.band_names is not None)
    if params.uses_sam2:
        check_rgb_bands(info, params.rgb_bands)
    if model is not None:
        wanted = {r for r, _ in model.spectral["roles"]}
        if wanted != set(roles):
            raise InputError(
                centres,
                f"centres were fitted on bands {', '.join(sorted(wanted))}; {ortho} gives "
                f"{describe_roles(roles)} (set --band-names)",
            )
    frame = read_polygons(storage.fetch(labels, cache_dir, what="crowns file"), "crowns")
    frame = frame.reset_index(drop=True)
    report = ReadReport()
    in_raster_crs = to_crs(frame, info.crs or "", labels, report)
    for note in report.notes:
        log.warning(note)
    pix = pixel_geometries(in_raster_crs, info.affine)
    return _Inputs(local, frame, pix, roles, params, sam2, model)


def _check_k(ks: list[int], n: int, source: str, what: str, params: ClassesParams) -> None:
    """K must not exceed the crowns that can be classified (a K range: silhouette needs K < n)."""
    if params.k is not None and params.k > n:
        raise InputError(source, f"--k {params.k} is larger than the number of crowns {what} ({n})")
    if params.k is None and max(ks) >= n:
        raise InputError(
            source,
            f"--k-range {params.k_range} needs more than {max(ks)} crowns, found {n} {what}; "
            "lower the range or give --k",
        )


def _sam2_encoder(sam2: Sam2Params, cache_dir: str | None) -> Any:
    from crownsam.classes.embedding import Sam2WindowEncoder
    from crownsam.pseudolabel.sam2_model import sam2_box_predictor

    return Sam2WindowEncoder(sam2_box_predictor(sam2, cache_dir))


def _matrix(feats: CrownFeatures, params: ClassesParams, spec_groups: list) -> tuple[np.ndarray, list, list]:
    """Rows of the clustered crowns: the chosen feature blocks side by side, their names and groups."""
    blocks, names, groups = [], [], []
    if params.features in ("spectral", "both"):
        blocks.append(feats.spectral)
        names += feats.names
        groups += spec_groups
    if params.features in ("sam2", "both"):
        assert feats.embedding is not None
        blocks.append(feats.embedding.astype(np.float64))
        c = feats.embedding.shape[1]
        names += [f"sam2_{i:03d}" for i in range(c)]
        groups += [("sam2", "embedding")] * c
    return np.hstack(blocks), names, groups


def pseudo_classes(
    ortho: str,
    labels: str,
    out: str,
    params: ClassesParams | None = None,
    *,
    sam2: Sam2Params | None = None,
    centres: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Classify every crown of ``labels`` on ``ortho``; write ``out`` (every input column plus
    ``pseudo_class``, ``class_distance``, ``class_skipped``, ``class_pixels`` and ``f_<feature>``), the
    centres JSON (fit only) and the HTML report beside it; return the summary.

    ``sam2`` says which SAM2 computes the embedding for ``features`` sam2/both (the settings
    pseudolabeling uses). With ``centres`` (a centres JSON of an earlier fit) crowns are assigned to those
    centres with that fit's scaling, feature options, SAM2 model and RGB bands; nothing is refitted.
    """
    t0 = time.perf_counter()
    params = params or ClassesParams()
    sam2 = sam2 or Sam2Params()
    inp = _prepare(ortho, labels, out, params, sam2, centres, cache_dir)
    params, sam2 = inp.params, inp.sam2
    rgb = params.rgb_bands
    spec = spectral_spec(inp.roles, params.indices, params.percentiles, params.texture_px)
    with open_raster(inp.ortho) as src:
        _, reason = group_crowns(inp.pix, src.width, src.height, with_window=False)
    n_grouped = int((reason == "").sum())
    ks = params.ks()
    if inp.model is None:
        _check_k(ks, n_grouped, labels, "inside the raster", params)

    encoder, stretch = None, None
    if params.uses_sam2:
        stretch = compute_stretch(inp.ortho, rgb)
        encoder = _sam2_encoder(sam2, cache_dir)
    with open_raster(inp.ortho) as src:
        feats = compute_features(
            src,
            inp.pix,
            spec,
            min_pixels=params.min_pixels,
            encoder=encoder,
            rgb_bands=rgb,  # type: ignore[arg-type]
            stretch=stretch,
        )
    ok = feats.reason == ""
    n_ok = int(ok.sum())
    skipped = dict(sorted(pd.Series(feats.reason[~ok]).value_counts().items())) if n_ok < len(ok) else {}
    x, names, col_groups = _matrix(feats, params, spec.groups())

    if inp.model is None:
        _check_k(ks, n_ok, labels, f"with at least {params.min_pixels} valid pixels", params)
        scaling = fit_scaling(x[ok], col_groups)
        fit = cluster(
            scaling.apply(x[ok]),
            ks,
            seed=params.seed,
            restarts=params.restarts,
            batch_size=params.batch_size,
            silhouette_sample=params.silhouette_sample,
        )
        model = ClassModel(
            k=fit.k,
            features=params.features,
            names=names,
            mean=scaling.mean.tolist(),
            scale=scaling.scale.tolist(),
            centres=fit.centres.tolist(),
            spectral={
                "roles": [list(r) for r in spec.roles],
                "indices": list(spec.indices),
                "percentiles": list(spec.percentiles),
                "texture_px": spec.texture_px,
            },
            sam2=(
                {
                    "model": sam2.model,
                    "checkpoint": sam2.checkpoint,
                    "untrained": sam2.untrained,
                    "rgb_bands": list(rgb),
                }
                if params.uses_sam2
                else None
            ),
            min_pixels=params.min_pixels,
            seed=params.seed,
            silhouette={str(k): v for k, v in fit.silhouette.items()},
            counts=np.bincount(fit.labels, minlength=fit.k).tolist(),
        )
    else:
        model = inp.model
        if names != model.names:
            raise InputError(
                centres, f"centres were fitted on {len(model.names)} features that {ortho} does not give"
            )
        _check_sam2_source(model, sam2, centres)
        if n_ok == 0:
            raise InputError(labels, "no crown has enough valid pixels to be assigned")
        labels_, dist = assign(model.scaling.apply(x[ok]), model.centre_array)
        fit = Fit(
            model.k, model.centre_array, labels_, dist, {int(k): v for k, v in model.silhouette.items()}
        )

    klass = np.full(len(ok), UNCLASSED, dtype=np.int64)
    distance = np.full(len(ok), np.nan)
    klass[ok], distance[ok] = fit.labels, fit.distance
    untrained = bool(params.uses_sam2 and sam2.untrained)
    frame = _output_frame(inp.frame, klass, distance, feats, untrained if params.uses_sam2 else None)
    counts = np.bincount(fit.labels, minlength=fit.k).tolist()
    summary: dict[str, Any] = {
        "crowns": len(ok),
        "classified": n_ok,
        "skipped_by_reason": skipped,
        "k": fit.k,
        "counts": counts,
        "silhouette": {str(k): v for k, v in fit.silhouette.items()},
        "features": params.features,
        "feature_count": len(names),
        "band_roles": describe_roles(inp.roles),
        "windows": feats.windows,
        "encoder_passes": feats.encoder_passes,
        "assigned_from": centres,
        "untrained": untrained,
        "params": params.as_dict(),
        "sam2": {**sam2.as_dict(), "rgb_bands": list(rgb)} if params.uses_sam2 else None,
        "inputs": {"ortho": ortho, "labels": labels},
    }
    if untrained:
        summary["WARNING"] = _untrained_banner(True)
    if inp.model is None:
        keep = ("crowns", "classified", "skipped_by_reason", "inputs", "untrained", "WARNING")
        model.fitted_on = {k: summary[k] for k in keep if k in summary}
    centres_out, report_out = output_paths(out)
    from crownsam.classes.report import build_report

    page = build_report(
        inp.ortho,
        frame,
        inp.pix,
        feats,
        spec,
        fit,
        summary,
        rgb_bands=_report_rgb(inp.roles, rgb),
        banner=_untrained_banner(untrained),
    )
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    _write(out, centres_out if inp.model is None else None, report_out, frame, model, page, cache_dir)
    summary["outputs"] = {"labels": out, "report": report_out}
    if inp.model is None:
        summary["outputs"]["centres"] = centres_out
    return summary


def _check_sam2_source(model: ClassModel, sam2: Sam2Params, centres: str | None) -> None:
    """Embeddings of an untrained and a trained SAM2 (or another checkpoint) are not comparable."""
    if not model.sam2:
        return
    if bool(model.sam2["untrained"]) != bool(sam2.untrained):
        fitted = "an untrained SAM2" if model.sam2["untrained"] else f"checkpoint {model.sam2['checkpoint']}"
        raise InputError(centres, f"centres were fitted on embeddings of {fitted}; pass the same here")
    if model.sam2.get("checkpoint") != sam2.checkpoint:
        log.warning(
            "%s: centres were fitted with checkpoint %s, assigning with %s",
            centres,
            model.sam2.get("checkpoint"),
            sam2.checkpoint,
        )


def _report_rgb(roles: dict[str, int], rgb_bands: tuple[int, ...]) -> tuple[int, ...]:
    """Bands for the report's pictures: red, green, blue by role when all are known, else --rgb-bands."""
    if all(r in roles for r in ("red", "green", "blue")):
        return (roles["red"], roles["green"], roles["blue"])
    return tuple(rgb_bands)


OUR_COLUMNS = (CLASS_COLUMN, "class_distance", "class_skipped", "class_pixels", "class_sam2_untrained")


def _output_frame(
    frame: gpd.GeoDataFrame,
    klass: np.ndarray,
    distance: np.ndarray,
    feats: CrownFeatures,
    untrained: bool | None,
) -> gpd.GeoDataFrame:
    """The input crowns with our columns added (columns of the same name from the input replaced)."""
    feature_cols = [f"f_{n}" for n in feats.names]
    replaced = [c for c in (*OUR_COLUMNS, *feature_cols) if c in frame.columns]
    if replaced:
        log.warning("input columns %s are replaced", ", ".join(replaced))
    out = frame.drop(columns=replaced)
    geometry = out.geometry.name
    cols = {
        CLASS_COLUMN: klass,
        "class_distance": distance,
        "class_skipped": feats.reason.astype(str),
        "class_pixels": feats.pixels,
    }
    if untrained is not None:
        cols["class_sam2_untrained"] = np.full(len(out), untrained)
    cols |= {c: feats.spectral[:, j] for j, c in enumerate(feature_cols)}
    extra = pd.DataFrame(cols, index=out.index)
    rest = out.drop(columns=[geometry])
    return gpd.GeoDataFrame(pd.concat([rest, extra], axis=1), geometry=out.geometry, crs=frame.crs)


def _write(
    out: str,
    centres_out: str | None,
    report_out: str,
    frame: gpd.GeoDataFrame,
    model: ClassModel,
    page: str,
    cache_dir: str | None,
) -> None:
    """All outputs or none: temporary names, renamed together (uploaded when remote)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(storage.local_output(out, cache_dir))]
        targets.append(stack.enter_context(storage.local_output(report_out, cache_dir)))
        if centres_out:
            targets.append(stack.enter_context(storage.local_output(centres_out, cache_dir)))
        tmps = stack.enter_context(atomic_paths(*targets))
        frame.to_file(tmps[0], layer=LAYER, driver="GPKG")
        Path(tmps[1]).write_text(page, encoding="utf-8")
        if centres_out:
            model.save(tmps[2])


# ------------------------------------------------------------------------------------ pipeline step

OUT_NAME = "pseudo_classes.gpkg"


def pseudo_classes_artifact(
    ortho_uri: str,
    labels_artifact: str,
    out_dir: str,
    report_html: str,
    switch: PipelineClasses,
    params: ClassesParams,
    *,
    sam2: Sam2Params | None = None,
) -> dict[str, float]:
    """The pipeline step: classify the crowns of a label artifact (a .gpkg or a folder holding one) into
    ``out_dir/pseudo_classes.gpkg`` (+ centres JSON and report beside it, the report copied to
    ``report_html``), with K from ``switch``; return numbers for KFP's Metrics (counts per class,
    silhouette of the chosen K).

    With the switch ``off`` the labels pass through unchanged (copied into ``out_dir`` under their own
    name, no ``pseudo_class`` column) and the report says so: KFP's local runner cannot pick one of two
    conditional artifacts, so the task runs either way and the export downstream sees one artifact."""
    src = label_file(labels_artifact)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(report_html).parent.mkdir(parents=True, exist_ok=True)
    if not switch.enabled:
        shutil.copyfile(src, Path(out_dir) / Path(src).name)
        Path(report_html).write_text(_off_page(), encoding="utf-8")
        return {}
    out = str(Path(out_dir) / OUT_NAME)
    ortho = str(storage.fetch(ortho_uri, what="raster"))
    s = pseudo_classes(ortho, src, out, switch.classes_params(params), sam2=sam2)
    shutil.copyfile(output_paths(out)[1], report_html)
    metrics = {"crowns": float(s["crowns"]), "classified": float(s["classified"]), "k": float(s["k"])}
    metrics["silhouette"] = float(s["silhouette"].get(str(s["k"]), float("nan")))
    metrics |= {f"class_{c}_crowns": float(n) for c, n in enumerate(s["counts"])}
    return {k: v for k, v in metrics.items() if v == v}  # KFP's Metrics take finite numbers only


def _off_page() -> str:
    text = (
        "Pseudo-classes are off (pipeline parameter pseudo_classes = off): the pseudolabels pass through "
        "unchanged and the models are trained on one class, tree."
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>crownsam pseudo-classes</title></head>"
        f"<body><h1>crownsam pseudo-classes</h1><p>{html.escape(text)}</p></body></html>"
    )
