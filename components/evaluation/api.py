"""Jaccard evaluation of label sets against manual crowns: the library entry points.

``evaluate_label_sets`` computes (GeoDataFrames in, :class:`Evaluation` out), ``write_evaluation`` writes
``per_tree.csv``, ``metrics.json`` and ``report.html`` together, and ``evaluate_files`` does both from file
paths (what the CLI and the KFP step call).

Rules (also in ``components/evaluation/README.md``):

- **Ids.** Manual crowns are identified by ``tree_id`` when the column exists, else 1..n in file order;
  labels by ``label_id_column`` (default ``segment_id``), else 1..n. Ids must be unique integers.
- **CRS.** Areas are computed in the manual crowns' CRS when it is projected; a geographic CRS is
  replaced by the UTM zone of the data. Every other layer is reprojected to that CRS (noted). Areas are
  reported in m² (converted from the CRS unit when that is not the metre).
- **Geometry.** Invalid geometries are repaired (``make_valid``, polygonal parts kept) and counted;
  null or empty geometries are dropped and counted. An empty label set is allowed (all J = 0, noted).
- **Matching.** Per label set, manual crowns and labels are matched one to one by maximising the total
  IoU (Hungarian algorithm); J is the matched pair's IoU, 0 for a crown without a match.
- **Test area.** With an area, only manual crowns whose centroid lies in it (boundary included) are
  evaluated; none is an error. Without one, all manual crowns are evaluated and the area used for
  precision is the convex hull of the manual crowns.
- **Detection.** A matched pair with IoU >= 0.5 is a true positive. Recall = crowns with such a match /
  evaluated crowns. Precision = labels with such a match / labels with at least 50 % of their area inside
  the area. F1 = 2PR/(P+R).
- **Overlap.** Among the labels counted for precision: pairs of labels whose intersection has an area,
  the sum of those pairwise intersection areas (m²), and that sum as a share of the labels' total area.
- **Statistics.** Mean, median, sample SD (ddof=1) and a 95 % percentile bootstrap interval of the mean
  per-tree J (``n_boot`` resamples of the trees, ``numpy.random.default_rng(seed)``). Between two label
  sets, in the order given, the paired difference is d = J_later - J_earlier per tree, keyed
  ``<later>-<earlier>`` (so ``paired_diff_mean/pseudo-coarse > 0`` reads "pseudo is better"), with the
  same bootstrap for its interval and a two-sided Wilcoxon signed-rank test.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from crownsam.common import storage
from crownsam.common.atomic import atomic_paths, check_output_folder
from crownsam.common.errors import InputError, vector_errors
from crownsam.common.vector import read_polygons
from crownsam.evaluation import stats
from crownsam.evaluation.match import TREE_ID, Layer, clean_layer, inside_fraction, match_crowns, working_crs
from crownsam.evaluation.params import DEFAULT_TITLE, EvaluateParams
from crownsam.pseudolabel.overlap import polygon_overlaps

log = logging.getLogger(__name__)

PER_TREE_COLUMNS = (
    "tree_id",
    "label_set",
    "label_id",
    "jaccard",
    "manual_area_m2",
    "label_area_m2",
    "intersection_m2",
)
OUTPUT_FILES = {"per_tree": "per_tree.csv", "metrics": "metrics.json", "report": "report.html"}
INSIDE_MIN = 0.5  # a label counts for precision when at least this fraction of its area is inside the area
NAME_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


@dataclass
class Evaluation:
    """The result of an evaluation.

    ``per_tree``: one row per (evaluated manual tree, label set), columns :data:`PER_TREE_COLUMNS`
    (``label_id`` is a nullable integer, missing when nothing was matched). ``metrics``: flat float keys
    (``jaccard_mean/<set>``, ``paired_diff_mean/<later>-<earlier>``, ...; NaN where undefined).
    ``notes``: what was reprojected, repaired or warned about, in words.
    """

    per_tree: pd.DataFrame
    metrics: dict[str, float]
    notes: list[str]
    label_sets: list[str] = field(default_factory=list)  # names in the order given
    crs: str | None = None  # the CRS areas were computed in
    area_rule: str = ""  # where the evaluated trees and the precision area come from, in words
    n_boot: int = 2000
    seed: int = 0
    label_id_column: str = "segment_id"

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(earlier, later) for every two label sets, in the order given."""
        names = self.label_sets
        return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]

    def jaccard_table(self) -> pd.DataFrame:
        """Per-tree J, one column per label set, index tree_id (order of the manual crowns)."""
        t = self.per_tree.pivot(index="tree_id", columns="label_set", values="jaccard")
        order = pd.unique(self.per_tree["tree_id"])
        return t.loc[order, self.label_sets]


def pair_key(earlier: str, later: str) -> str:
    """``<later>-<earlier>``: the key of d = J_later - J_earlier."""
    return f"{later}-{earlier}"


def check_names(names: Sequence[str]) -> None:
    """Label-set names: at least one, unique, letters/digits/``_``/``.``/``-`` (not first), and no two
    pairs with the same key (``a-b`` vs ``c``; they become metric keys)."""
    if not names:
        raise InputError(None, "give at least one label set (--labels NAME=PATH)")
    for name in names:
        if not NAME_RE.match(name):
            raise InputError(
                None,
                f"label set name {name!r}: use letters, digits, '_', '.' or '-' (not first) only (it becomes "
                "a metric key)",
            )
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise InputError(None, f"label set name {seen[0]!r} given twice")
    keys = [pair_key(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    clash = [k for i, k in enumerate(keys) if k in keys[:i]]
    if clash:
        raise InputError(None, f"label set names give two comparisons the same key {clash[0]!r}; rename one")


def _prepare(
    manual: gpd.GeoDataFrame,
    label_sets: Mapping[str, gpd.GeoDataFrame],
    area: gpd.GeoDataFrame | None,
    label_id_column: str,
    sources: Mapping[str, str],
    crs: CRS | None = None,
) -> tuple[CRS, Layer, dict[str, Layer], shapely.Geometry | None, list[str]]:
    """Clean every layer into one projected CRS; return the CRS, the layers, the area and the notes."""
    notes: list[str] = []
    msrc = sources.get("manual", "manual crowns")
    if crs is None:
        crs, note = working_crs(manual, msrc)
        notes += [note] if note else []
    man, n = clean_layer(manual, msrc, crs, TREE_ID)
    notes += n
    layers: dict[str, Layer] = {}
    for name, gdf in label_sets.items():
        layers[name], n = clean_layer(
            gdf, sources.get(name, f"label set {name!r}"), crs, label_id_column, empty_ok=True
        )
        notes += n
    area_geom = None
    if area is not None:
        a, n = clean_layer(area, sources.get("area", "test area"), crs, None)
        notes += n
        area_geom = shapely.union_all(a.geoms)
    return crs, man, layers, area_geom, notes


def _ids_text(ids: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def _select_trees(
    man: Layer, area_geom: shapely.Geometry | None, source: str
) -> tuple[np.ndarray, shapely.Geometry, str, list[str]]:
    """Which manual crowns are evaluated (boolean mask), the precision area, its rule in words, notes."""
    if area_geom is None:
        hull = shapely.convex_hull(shapely.union_all(man.geoms))
        rule = (
            "no test area given: all manual crowns are evaluated; precision counts labels with at least "
            "50 % of their area inside the convex hull of the manual crowns"
        )
        return np.ones(len(man), dtype=bool), hull, rule, [rule]
    inside = shapely.covers(area_geom, shapely.centroid(man.geoms))
    if not inside.any():
        raise InputError(
            source,
            f"contains none of the {len(man)} manual crowns (no crown centroid inside it); check that the "
            "test area and the manual crowns belong together",
        )
    rule = (
        "manual crowns whose centroid lies in the test area are evaluated; precision counts labels with "
        "at least 50 % of their area inside the test area"
    )
    notes = []
    if not inside.all():
        notes.append(
            f"{source}: {int((~inside).sum())} of {len(man)} manual crowns have their centroid outside the "
            f"test area and are not evaluated (tree_id {_ids_text(man.ids[~inside])})"
        )
    return inside, area_geom, rule, notes


def evaluate_label_sets(
    manual: gpd.GeoDataFrame,
    label_sets: dict[str, gpd.GeoDataFrame],
    area: gpd.GeoDataFrame | None = None,
    *,
    label_id_column: str = "segment_id",
    n_boot: int = 2000,
    seed: int = 0,
    sources: Mapping[str, str] | None = None,
) -> Evaluation:
    """Per-tree Jaccard of each label set against the manual crowns, with summary statistics.

    ``label_sets`` maps a name (letters, digits, ``_``, ``.``) to labels; its order is the order of the
    paired comparisons (later minus earlier). ``sources`` optionally names the inputs in messages: keys
    ``"manual"``, ``"area"`` and the label-set names. The rules are in this module's docstring.
    """
    names = list(label_sets)
    check_names(names)
    if n_boot < 1:
        raise InputError(None, f"n_boot must be >= 1, got {n_boot}")
    sources = dict(sources or {})
    crs, man, layers, area_geom, notes = _prepare(manual, label_sets, area, label_id_column, sources)
    evaluated, prec_area, rule, n = _select_trees(man, area_geom, sources.get("area", "test area"))
    notes += n
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    to_m2 = unit * unit
    geoms, ids = man.geoms[evaluated], man.ids[evaluated]
    manual_area = shapely.area(geoms) * to_m2
    n_trees = len(ids)
    idx = stats.boot_indices(n_trees, n_boot, seed)

    metrics: dict[str, float] = {"n_trees": float(n_trees), "n_manual": float(len(man))}
    frames, jac, matched_ids = [], {}, {}
    for name in names:
        layer = layers[name]
        src = sources.get(name, f"label set {name!r}")
        m = match_crowns(geoms, layer.geoms)
        has = m.label_index >= 0
        label_ids = pd.array([int(layer.ids[i]) if i >= 0 else None for i in m.label_index], dtype="Int64")
        label_area = np.full(n_trees, np.nan)
        label_area[has] = layer.areas[m.label_index[has]] * to_m2
        frames.append(
            pd.DataFrame(
                {
                    "tree_id": ids.astype(np.int64),
                    "label_set": name,
                    "label_id": label_ids,
                    "jaccard": m.jaccard,
                    "manual_area_m2": manual_area,
                    "label_area_m2": label_area,
                    "intersection_m2": m.intersection * to_m2,
                }
            )
        )
        jac[name], matched_ids[name] = m.jaccard, label_ids
        if (~m.overlaps).any():
            notes.append(
                f"{src}: {int((~m.overlaps).sum())} of {n_trees} manual crowns overlap no label (J = 0): "
                f"tree_id {_ids_text(ids[~m.overlaps])}"
            )
        lost = m.overlaps & ~has
        if lost.any():
            notes.append(
                f"{src}: {int(lost.sum())} manual crowns overlap only labels matched to other crowns "
                f"(J = 0): tree_id {_ids_text(ids[lost])}"
            )
        counted = inside_fraction(layer.geoms, prec_area) >= INSIDE_MIN
        tp = m.jaccard >= stats.IOU_TP
        tp_labels = int(np.count_nonzero(counted[m.label_index[tp]]))
        summary = stats.describe(m.jaccard, idx)
        det = stats.detection_scores(int(tp.sum()), n_trees, tp_labels, int(counted.sum()))
        for key, value in summary.items():
            metrics[f"jaccard_{key}/{name}"] = value
        for key, value in det.items():
            metrics[f"{key}/{name}"] = value
        metrics[f"tp/{name}"] = float(tp.sum())
        metrics[f"n_labels/{name}"] = float(len(layer))
        metrics[f"n_labels_in_area/{name}"] = float(counted.sum())
        metrics[f"n_matched/{name}"] = float(has.sum())
        metrics[f"n_no_overlap/{name}"] = float((~m.overlaps).sum())
        pairs, shared = polygon_overlaps(layer.geoms[counted])
        inside_area = float(shapely.area(layer.geoms[counted]).sum())
        metrics[f"overlap_pairs/{name}"] = float(len(pairs))
        metrics[f"overlap_area_m2/{name}"] = shared * to_m2
        metrics[f"overlap_share/{name}"] = shared / inside_area if inside_area > 0 else math.nan

    ev = Evaluation(
        per_tree=pd.concat(frames, ignore_index=True)[list(PER_TREE_COLUMNS)],
        metrics=metrics,
        notes=notes,
        label_sets=names,
        crs=crs.to_wkt() if crs.to_epsg() is None else f"EPSG:{crs.to_epsg()}",
        area_rule=rule,
        n_boot=n_boot,
        seed=seed,
        label_id_column=label_id_column,
    )
    for earlier, later in ev.pairs:
        key = pair_key(earlier, later)
        p = stats.paired(jac[earlier], jac[later], idx)
        metrics[f"paired_diff_mean/{key}"] = p["diff_mean"]
        metrics[f"paired_diff_ci_low/{key}"] = p["diff_ci_low"]
        metrics[f"paired_diff_ci_high/{key}"] = p["diff_ci_high"]
        metrics[f"wilcoxon_p/{key}"] = p["wilcoxon_p"]
        a, b = pd.Series(matched_ids[earlier]), pd.Series(matched_ids[later])
        both = (a.notna() & b.notna()).to_numpy(dtype=bool)
        same = (a == b).fillna(False).to_numpy(dtype=bool)
        metrics[f"paired_same_label/{key}"] = float(same.sum() / both.sum()) if both.any() else math.nan
    return ev


def metrics_json(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """The metrics as strict JSON values: NaN and infinities become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def write_evaluation(
    ev: Evaluation,
    out_dir: str | Path,
    *,
    manual: gpd.GeoDataFrame,
    label_sets: dict[str, gpd.GeoDataFrame],
    area: gpd.GeoDataFrame | None = None,
    ortho: str | None = None,
    title: str = DEFAULT_TITLE,
    banner: str | None = None,
    rgb_bands: Sequence[int] = (3, 2, 1),
    sources: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Write ``per_tree.csv``, ``metrics.json`` and ``report.html`` into ``out_dir``, all or none.

    ``manual``, ``label_sets`` and ``area`` are the layers ``ev`` was computed from (the report draws
    them); ``ortho`` adds the orthophoto under the outlines (only the area's window is read, bands
    ``rgb_bands`` as R,G,B with a 2-98 % stretch of that window). ``banner`` is a warning shown at the top.
    """
    from crownsam.evaluation.report import build_report

    out = Path(out_dir)
    check_output_folder(out, "--out")
    crs = CRS.from_user_input(ev.crs) if ev.crs else None
    _, man, layers, area_geom, _ = _prepare(
        manual, {n: label_sets[n] for n in ev.label_sets}, area, ev.label_id_column, dict(sources or {}), crs
    )
    html = build_report(
        ev, man, layers, area_geom, ortho=ortho, title=title, banner=banner, rgb_bands=tuple(rgb_bands)
    )
    paths = {key: out / name for key, name in OUTPUT_FILES.items()}
    with atomic_paths(paths["per_tree"], paths["metrics"], paths["report"]) as (csv_tmp, json_tmp, html_tmp):
        ev.per_tree.to_csv(csv_tmp, index=False)
        json_tmp.write_text(json.dumps(metrics_json(ev.metrics), indent=2, sort_keys=True) + "\n")
        html_tmp.write_text(html, encoding="utf-8")
    return paths


def read_labels(path: str, name: str) -> gpd.GeoDataFrame:
    """Read one label set; a file without features is allowed (an empty GeoDataFrame)."""
    what = f"labels ({name})"
    p = Path(path)
    if p.is_file():
        import pyogrio

        try:
            empty = pyogrio.read_info(p)["features"] == 0
        except vector_errors():  # unreadable: read_polygons below says so in one line
            empty = False
        if empty:
            return gpd.read_file(p)
    return read_polygons(path, what)


def evaluate_files(
    manual: str,
    labels: dict[str, str],
    out_dir: str,
    area: str | None = None,
    ortho: str | None = None,
    banner: str | None = None,
    *,
    params: EvaluateParams | None = None,
    label_id_column: str = "segment_id",
    cache_dir: str | None = None,
) -> Evaluation:
    """Read the files (paths or ``gs://`` URIs), evaluate, write ``per_tree.csv``, ``metrics.json`` and
    ``report.html`` into ``out_dir`` (together or not at all) and log the notes as warnings. Every input is
    validated before any computation: a bad one raises :class:`InputError` and nothing is written."""
    p = params or EvaluateParams()
    names = list(labels)
    check_names(names)
    check_output_folder(out_dir, "--out")

    def local(uri: str, what: str) -> str:
        return str(storage.fetch(uri, cache_dir, what=what, must_exist=False))

    man = read_polygons(local(manual, "manual crowns"), "manual crowns")
    sets = {name: read_labels(local(path, f"labels ({name})"), name) for name, path in labels.items()}
    area_gdf = read_polygons(local(area, "test area"), "test area") if area else None
    ortho_local = local(ortho, "raster") if ortho else None
    if ortho_local:
        from crownsam.common.raster import check_rgb_bands, raster_info

        check_rgb_bands(raster_info(ortho_local), p.rgb_bands)
    sources = {"manual": str(manual), **{n: f"{path} ({n})" for n, path in labels.items()}}
    if area:
        sources["area"] = str(area)
    ev = evaluate_label_sets(
        man, sets, area_gdf, label_id_column=label_id_column, n_boot=p.n_boot, seed=p.seed, sources=sources
    )
    write_evaluation(
        ev,
        out_dir,
        manual=man,
        label_sets=sets,
        area=area_gdf,
        ortho=ortho_local,
        title=p.title,
        banner=banner,
        rgb_bands=p.rgb_bands,
        sources=sources,
    )
    for note in ev.notes:
        log.warning(note)
    return ev
