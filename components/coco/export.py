"""``export_coco``: image chips and COCO instance JSON per split, with a held-out test area.

Output folder (written beside ``out_dir`` under a temporary name, renamed onto it only on success)::

    images/train/<chip>.png|.tif  images/val/...  images/test/...
    train.json  val.json  [test.json]   COCO instances (RLE masks), one file per split
    export.json                         summary: counts, rules in words, stretch, bands, inputs' sha256, crs

The rules (chip grid, buffer, validation blocks and gap, sliver rule, test region) are written out in
``export.json["rules"]`` and in ``components/coco/README.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from crownsam.coco.annotations import CATEGORY, SliverRule, annotate, rasterize_local
from crownsam.coco.chips import (
    Chip,
    assign_val_blocks,
    chip_stride,
    chip_transform,
    footprints,
    grid_chips,
    holdout_chips,
    overlapping,
    touching,
)
from crownsam.coco.params import ExportParams
from crownsam.common import storage
from crownsam.common.atomic import atomic_dir, check_output_folder
from crownsam.common.errors import InputError
from crownsam.common.raster import (
    RasterInfo,
    apply_stretch,
    compute_stretch,
    open_raster,
    raster_info,
    read_error,
)
from crownsam.common.vector import ReadReport, file_sha256, integer_ids, polygonal, read_polygons, to_crs

log = logging.getLogger(__name__)

FORMAT = "crownsam-coco/1"
SPLITS = ("train", "val", "test")
LABEL_ID_COLUMNS = ("segment_id", "tree_id")
MANUAL_ID_COLUMNS = ("tree_id", "segment_id")
STRETCH_PERCENTILES = (2.0, 98.0)
CLASS = "class"  # Crowns.frame column of the crowns' classes (from ExportParams.class_column)


# ----------------------------------------------------------------------------------------------- inputs


@dataclass
class Crowns:
    """Crown polygons in the raster's CRS, sorted by ``source_id``, plus what reading them changed."""

    frame: gpd.GeoDataFrame  # columns: source_id (int64), [class (int64, >= 0)], geometry
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def classed(self) -> bool:
        return CLASS in self.frame.columns

    def category_ids(self) -> np.ndarray:
        """COCO category per crown: class + 1, or 1 (tree) without classes."""
        if self.classed:
            return self.frame[CLASS].to_numpy() + 1
        return np.full(len(self.frame), CATEGORY["id"], dtype=np.int64)


def categories(n_classes: int | None) -> list[dict[str, Any]]:
    """COCO categories: ``class_<c>`` with id c + 1 for c in 0..n-1 (``class_value`` c), or one, tree."""
    if n_classes is None:
        return [dict(CATEGORY)]
    return [
        {"id": c + 1, "name": f"class_{c}", "supercategory": CATEGORY["supercategory"], "class_value": c}
        for c in range(n_classes)
    ]


def _read_classes(gdf: gpd.GeoDataFrame, column: str, path: str | Path) -> np.ndarray:
    """The integer classes of ``column``; InputError when absent, empty or not integers."""
    if column not in gdf.columns:
        raise InputError(
            path,
            f"no column {column!r} (--class-column): classify the crowns first (`crownsam pseudo-classes`) "
            "or leave the option out for one class",
        )
    col = gdf[column]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    values = col.to_numpy(dtype=float, na_value=np.nan) if numeric else None
    if values is None or np.isnan(values).any() or not np.all(np.mod(values, 1) == 0):
        raise InputError(path, f"{column} must hold integer classes (no empty values)")
    return values.astype(np.int64)


def read_crowns(
    path: str | Path,
    what: str,
    crs_text: str,
    id_columns: Sequence[str],
    notes: list[str],
    class_column: str | None = None,
    class_required: bool = True,
) -> Crowns:
    """Read crown polygons: ids from the first of ``id_columns`` present (unique integers) or 1..n in file
    order; reprojected to ``crs_text`` when needed; invalid geometries repaired with ``make_valid``
    (polygon parts kept); null and empty geometries dropped (counted). With ``class_column``, the crowns'
    integer classes (column ``class``); crowns with a negative class (no class) are left out (counted).
    Without ``class_required``, a file that lacks the column has no classes. Warnings go to ``notes``."""
    gdf = read_polygons(path, what)
    info: dict[str, Any] = {"path": str(path), "features": len(gdf)}
    if class_column and not class_required and class_column not in gdf.columns:
        class_column = None
    classes = _read_classes(gdf, class_column, path) if class_column else None
    id_col = next((c for c in id_columns if c in gdf.columns), None)
    if id_col is None:
        ids = np.arange(1, len(gdf) + 1, dtype=np.int64)
        notes.append(f"{path}: no {'/'.join(id_columns)} column; {what} get ids 1..{len(gdf)} in file order")
    else:
        ids = integer_ids(gdf[id_col], path, id_col)
    info["id_column"] = id_col
    cols: dict[str, Any] = {"source_id": ids}
    if classes is not None:
        cols[CLASS] = classes
    gdf = gpd.GeoDataFrame(cols, geometry=gdf.geometry.values, crs=gdf.crs)
    report = ReadReport()
    gdf = to_crs(gdf, crs_text, path, report)
    notes.extend(report.notes)
    info["reprojected_from"] = report.reprojected_from
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    invalid = ~missing & ~shapely.is_valid(geoms)
    fixed = geoms.copy()
    for i in np.flatnonzero(invalid):
        fixed[i] = polygonal(shapely.make_valid(geoms[i]))
    gone = missing | shapely.is_empty(fixed) | (shapely.area(fixed) <= 0)
    info["repaired_invalid"] = int(invalid.sum())
    info["dropped_empty"] = int(gone.sum())
    if invalid.any():
        notes.append(f"{path}: repaired {int(invalid.sum())} invalid geometries with make_valid")
    keep = ~gone
    if not keep.any():
        raise InputError(path, f"{what} file has no non-empty polygon")
    if classes is not None:
        unclassed = keep & (classes < 0)
        info["class_column"] = class_column
        info["dropped_unclassed"] = int(unclassed.sum())
        keep &= ~unclassed
        if not keep.any():
            raise InputError(path, f"no crown has a class (all {class_column} values are negative)")
    cols = {c: gdf[c].to_numpy()[keep] for c in gdf.columns if c != gdf.geometry.name}
    out = gpd.GeoDataFrame(cols, geometry=list(fixed[keep]), crs=gdf.crs)
    info["multipart"] = int((shapely.get_num_geometries(out.geometry.values) > 1).sum())
    out = out.sort_values("source_id", kind="stable").reset_index(drop=True)
    return Crowns(out, info)


def read_test_area(
    path: str | Path, crs_text: str, notes: list[str]
) -> tuple[shapely.Geometry, dict[str, Any]]:
    """The union of all test-area polygons in the raster's CRS (invalid ones repaired)."""
    gdf = read_polygons(path, "test area polygons")
    report = ReadReport()
    gdf = to_crs(gdf, crs_text, path, report)
    notes.extend(report.notes)
    geoms = [
        polygonal(shapely.make_valid(g)) for g in gdf.geometry.values if g is not None and not g.is_empty
    ]
    area = shapely.union_all(geoms) if geoms else shapely.Polygon()
    if area.is_empty or area.area <= 0:
        raise InputError(path, "test area has no polygon with an area")
    return area, {"path": str(path), "features": len(gdf), "reprojected_from": report.reprojected_from}


def raster_outline(info: RasterInfo) -> shapely.Polygon:
    """The raster's outline in map coordinates."""
    t = info.affine
    return shapely.Polygon(
        [t @ c for c in ((0, 0), (info.width, 0), (info.width, info.height), (0, info.height))]
    )


def fmt_bounds(b: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in b) + ")"


# ------------------------------------------------------------------------------------------ output dir


def check_out_dir(out_dir: Path) -> None:
    """Refuse a target that is a file, or a non-empty folder that is not an earlier export."""
    check_output_folder(out_dir, "--out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "export.json").is_file():
        raise InputError(
            out_dir, "exists, is not empty and holds no export.json: not replacing it; choose another --out"
        )


# --------------------------------------------------------------------------------------------- chips


def write_image(path: Path, img: np.ndarray) -> None:
    """PNG (RGB) for 3 bands, else a plain TIFF (height, width, bands), uint8, zlib, no georeferencing
    (one band: (height, width)). Compression level 1 for both: about twice as fast as the default for
    about 6 % larger files."""
    if img.shape[2] == 3:
        Image.fromarray(img, "RGB").save(path, format="PNG", compress_level=1)
    else:
        import tifffile

        arr = img[..., 0] if img.shape[2] == 1 else img
        tifffile.imwrite(
            path,
            arr,
            photometric="minisblack",
            compression="zlib",
            compressionargs={"level": 1},
            planarconfig="contig" if img.shape[2] > 1 else None,
        )


@dataclass
class SplitStats:
    chips: int = 0
    annotations: int = 0
    dropped_slivers: int = 0
    dropped_tiny: int = 0
    skipped_nodata: int = 0
    chips_without_annotations: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Writer:
    """Reads chips by window, writes images, and builds one COCO dict per split."""

    def __init__(
        self,
        src: Any,
        info: RasterInfo,
        bands: Sequence[int],
        stretch: list[tuple[float, float]],
        size: int,
        rule: SliverRule,
        root: Path,
    ) -> None:
        self.src, self.info, self.bands, self.stretch = src, info, list(bands), stretch
        self.size, self.rule, self.root = size, rule, root
        self.n_classes: int | None = None  # set by export_coco when the labels have classes
        self.ext = "png" if len(bands) == 3 else "tif"
        flags = [src.mask_flag_enums[b - 1] for b in self.bands]
        self.all_valid = all(f == [MaskFlags.all_valid] for f in flags)
        self.next_ann_id = 1

    def read(self, chip: Chip) -> tuple[np.ndarray, np.ndarray]:
        window = Window(chip.col_off, chip.row_off, self.size, self.size)
        try:
            data = self.src.read(self.bands, window=window)
            if self.all_valid:
                valid = np.ones(data.shape[1:], dtype=bool)
            else:
                valid = (self.src.read_masks(self.bands, window=window) > 0).all(axis=0)
        except RasterioIOError as exc:
            raise read_error(self.info.path, exc) from exc
        return data, valid

    def split(
        self,
        name: str,
        chips: Sequence[Chip],
        crowns: Crowns,
        region: shapely.Geometry | None = None,
    ) -> tuple[dict[str, Any], SplitStats]:
        """Write the split's chips and return its COCO dict. ``region`` (test split): pixels outside it
        are 0 and crowns are clipped to it as well as to the chip."""
        stats = SplitStats()
        folder = self.root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        geoms = np.asarray(crowns.frame.geometry.values, dtype=object)
        ids = crowns.frame["source_id"].to_numpy()
        cats = crowns.category_ids()
        tree = shapely.STRtree(geoms)
        fps = footprints(self.info.affine, chips, self.size)
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        for chip, fp in zip(chips, fps, strict=True):
            t = chip_transform(self.info.affine, chip)
            data, valid = self.read(chip)
            clip = fp
            if region is not None:
                valid &= rasterize_local(region, t, self.size, self.size)
                clip = polygonal(shapely.intersection(fp, region))
            if not valid.any():
                stats.skipped_nodata += 1
                continue
            file_name = f"images/{name}/{chip.name}.{self.ext}"
            write_image(self.root / file_name, apply_stretch(data, self.stretch, valid))
            images.append(
                {
                    "id": chip.image_id,
                    "file_name": file_name,
                    "width": self.size,
                    "height": self.size,
                    "crownsam": {
                        "row_off": chip.row_off,
                        "col_off": chip.col_off,
                        "transform": [float(v) for v in tuple(t)[:6]],
                        "crs": self.info.crs,
                        "bands": self.bands,
                        "split": name,
                    },
                }
            )
            n_before = len(anns)
            for i in np.sort(tree.query(fp, predicate="intersects")):
                body, reason = annotate(geoms[i], clip, t, self.size, self.size, self.rule)
                if body is None:
                    stats.dropped_slivers += reason == "sliver"
                    stats.dropped_tiny += reason == "tiny"
                    continue
                anns.append(
                    {
                        "id": self.next_ann_id,
                        "image_id": chip.image_id,
                        "category_id": int(cats[i]),
                        **body,
                        "iscrowd": 0,
                        "source_id": int(ids[i]),
                    }
                )
                self.next_ann_id += 1
            stats.chips += 1
            stats.chips_without_annotations += len(anns) == n_before
        stats.annotations = len(anns)
        coco = {
            "info": {"description": f"crownsam COCO export, {name} split", "version": FORMAT},
            "licenses": [],
            "categories": categories(self.n_classes if crowns.classed else None),
            "images": images,
            "annotations": anns,
        }
        return coco, stats


# --------------------------------------------------------------------------------------------- export


@dataclass
class Holdout:
    """The test area, its exclusion zone, the test region shown in test chips, and its ground truth."""

    area: shapely.Geometry
    zone: shapely.Geometry  # area grown by the buffer: no train/val chip may touch it
    region: shapely.Geometry  # (area ∪ ground-truth crowns) ∩ zone ∩ raster: the pixels test chips show
    gt: Crowns
    gt_rule: str
    info: dict[str, Any]


@dataclass
class ChipPlan:
    """Chips per split and what the planning left out."""

    grid: int
    candidates: int
    near_test_area: int
    val_gap: int
    val_blocks: list[tuple[int, int]]
    train: list[Chip]
    val: list[Chip]
    test: list[Chip]


def _read_holdout(
    holdout: str | Path,
    manual: str | Path | None,
    labels: str | Path,
    crowns: Crowns,
    info: RasterInfo,
    buffer_m: float,
    notes: list[str],
    class_column: str | None = None,
) -> Holdout:
    """Test area, exclusion zone, test region and ground truth (manual crowns overlapping the area, or
    without them the labels whose centroid lies in the area). Manual crowns have classes when they have
    ``class_column`` (e.g. assigned with ``crownsam pseudo-classes --centres``), else none."""
    assert info.crs is not None
    outline = raster_outline(info)
    area, test_info = read_test_area(holdout, info.crs, notes)
    if not area.intersects(outline):
        raise InputError(holdout, f"test area {fmt_bounds(area.bounds)} lies outside the raster {info.path}")
    zone = area.buffer(buffer_m) if buffer_m > 0 else area
    if manual is not None:
        m = read_crowns(
            manual, "manual crowns", info.crs, MANUAL_ID_COLUMNS, notes, class_column, class_required=False
        )
        hit = shapely.area(shapely.intersection(np.asarray(m.frame.geometry.values), area)) > 0
        m.info["outside_test_area"] = int((~hit).sum())
        gt = Crowns(m.frame[hit].reset_index(drop=True), m.info)
        gt_rule, gt_file = "manual crowns that overlap the test area", manual
    else:
        hit = shapely.within(shapely.centroid(np.asarray(crowns.frame.geometry.values)), area)
        gt = Crowns(
            crowns.frame[hit].reset_index(drop=True), {"path": str(labels), "features": int(hit.sum())}
        )
        gt_rule = "labels whose centroid lies in the test area (no manual crowns given)"
        gt_file = holdout
        notes.append(f"{holdout}: no manual crowns given; the test set uses the labels inside the test area")
    if len(gt.frame) == 0:
        raise InputError(gt_file, "no ground-truth crown overlaps the test area")
    region = shapely.intersection(shapely.union_all([area, *gt.frame.geometry.values]), zone)
    region = polygonal(shapely.intersection(region, outline))
    test_info.update(
        area=round(float(area.area), 6),
        ground_truth="manual" if manual is not None else "labels",
        ground_truth_rule=gt_rule,
        ground_truth_crowns=len(gt.frame),
        ground_truth_info=gt.info,
    )
    return Holdout(area, zone, region, gt, gt_rule, test_info)


def _plan_chips(
    info: RasterInfo,
    ortho: str | Path,
    labels: str | Path,
    crowns: Crowns,
    hold: Holdout | None,
    *,
    chip: int,
    stride: int,
    val_fraction: float,
    val_block: int,
    seed: int,
    buffer_m: float,
) -> ChipPlan:
    """Grid -> drop chips touching the exclusion zone -> val blocks -> drop train chips sharing a pixel
    with val -> test chips over the test region. Errors when no training chip or label is left."""
    grid = grid_chips(info.height, info.width, chip, stride)
    near = touching(footprints(info.affine, grid, chip), hold.zone if hold else None)
    candidates = [c for c, n in zip(grid, near, strict=True) if not n]
    if not candidates:
        raise InputError(
            hold.info["path"] if hold else ortho,
            f"the test area plus its {buffer_m:g} m buffer touches every chip: no training chips left",
        )
    is_val, blocks = assign_val_blocks(candidates, val_fraction, val_block, seed)
    val = [c for c, v in zip(candidates, is_val, strict=True) if v]
    rest = [c for c, v in zip(candidates, is_val, strict=True) if not v]
    gap = overlapping(rest, val, chip)
    train = [c for c, g in zip(rest, gap, strict=True) if not g]
    if not train:
        raise InputError(
            ortho,
            f"validation blocks of {val_block} x {val_block} chips leave no training chip among the "
            f"{len(candidates)} chips outside the test area; lower --val-block or --val-fraction",
        )
    tree = shapely.STRtree(np.asarray(crowns.frame.geometry.values))
    if not len(tree.query(footprints(info.affine, train, chip), predicate="intersects")[0]):
        raise InputError(
            labels,
            "no label reaches a training chip (labels lie outside the raster or inside the test area + "
            f"{buffer_m:g} m buffer{', or in validation blocks' if val else ''})",
        )
    test = (
        holdout_chips(info.affine, hold.region, info.height, info.width, chip, stride, len(grid) + 1)
        if hold
        else []
    )
    return ChipPlan(len(grid), len(candidates), int(near.sum()), int(gap.sum()), blocks, train, val, test)


def export_coco(
    ortho: str | Path,
    labels: str | Path,
    out_dir: str | Path,
    *,
    holdout: str | Path | None = None,
    manual: str | Path | None = None,
    params: ExportParams | None = None,
    cache_dir: str | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """Export ``ortho`` chips and ``labels`` crowns as COCO train/val(/test) sets into ``out_dir``, with
    :class:`ExportParams` (``changes`` replace its fields by name). Inputs may be paths or ``gs://`` URIs.

    Rules (also written to ``export.json["rules"]``):

    * chips: ``chip`` px squares, stride ``max(1, round(chip * (1 - overlap)))``, last row/column aligned
      to the raster edge (every chip full-size, no padding); bands ``bands`` (1-based) as uint8 after one
      scene-wide 2-98 % stretch per band; nodata -> 0; chips without a valid pixel skipped.
    * holdout: train/val chips never intersect ``test area.buffer(buffer_m)``. The test split tiles the
      bounding box of the test region ``R = (test area ∪ ground-truth crowns) ∩ test area.buffer(buffer_m)``;
      its pixels outside ``R`` are 0 and its crowns are clipped to ``R``. Ground truth: ``manual`` crowns
      that overlap the test area, or without ``manual`` the labels whose centroid lies in it.
    * validation: whole blocks of ``val_block x val_block`` chips (see
      :func:`crownsam.coco.chips.assign_val_blocks`); train chips sharing a pixel with a val chip are
      left out (a gap), so train and val share no pixel.
    * slivers: see :class:`crownsam.coco.annotations.SliverRule`.
    * categories: one, ``tree`` (id 1); with ``class_column``, ``class_<c>`` (id c + 1) for c = 0..max
      of the labels' integer classes, crowns with a negative class left out. The test split's manual
      crowns use the column when they have it, else they keep the one category ``tree``.

    Raises :class:`InputError` / :class:`CrownsamError` on bad input, before anything is written (the
    only late check, no training annotation at all, removes the temporary folder); returns the content
    of ``export.json``.
    """
    p = (params or ExportParams()).replace(**changes)
    chip, overlap, bands, val_fraction = p.chip, p.overlap, p.bands, p.val_fraction
    buffer_m, seed, val_block = p.buffer_m, p.seed, p.val_block
    rule = SliverRule(p.sliver_fraction, p.sliver_px)
    out = Path(out_dir)
    check_out_dir(out)
    if manual is not None and holdout is None:
        raise InputError(
            manual, "manual crowns are ground truth for a test area: give the test area too (--holdout)"
        )

    def local(uri: str | Path, what: str) -> Path:
        return storage.fetch(str(uri), cache_dir, what=what, must_exist=False)

    ortho = local(ortho, "raster")
    labels = local(labels, "labels")
    holdout = local(holdout, "test area") if holdout else None
    manual = local(manual, "manual crowns") if manual else None
    info = raster_info(ortho)
    assert info.crs is not None
    for b in bands:
        if not 1 <= b <= info.count:
            raise InputError(ortho, f"band {b} out of range: the raster has bands 1..{info.count}")
    if chip > info.width or chip > info.height:
        raise InputError(
            ortho,
            f"raster is {info.width} x {info.height} px, smaller than one {chip}-px chip; "
            f"use --chip {min(info.width, info.height)} or less",
        )

    notes: list[str] = []
    crowns = read_crowns(labels, "labels", info.crs, LABEL_ID_COLUMNS, notes, p.class_column)
    outline = raster_outline(info)
    inside = shapely.intersects(np.asarray(crowns.frame.geometry.values), outline)
    if not inside.any():
        raise InputError(
            labels,
            f"all {len(inside)} labels lie outside the raster {ortho} (labels "
            f"{fmt_bounds(crowns.frame.total_bounds)}, raster {fmt_bounds(outline.bounds)} in {info.crs}); "
            "wrong file or CRS?",
        )
    crowns.info["outside_raster"] = int((~inside).sum())
    hold = (
        _read_holdout(holdout, manual, labels, crowns, info, buffer_m, notes, p.class_column)
        if holdout
        else None
    )
    n_classes = None
    if crowns.classed:
        classed = [crowns.frame] + ([hold.gt.frame] if hold is not None and hold.gt.classed else [])
        n_classes = max(int(f[CLASS].max()) for f in classed if len(f)) + 1
    stride = chip_stride(chip, overlap)
    plan = _plan_chips(
        info,
        ortho,
        labels,
        crowns,
        hold,
        chip=chip,
        stride=stride,
        val_fraction=val_fraction,
        val_block=val_block,
        seed=seed,
        buffer_m=buffer_m,
    )

    for note in notes:  # only now: a bad input gets one error line, not warnings first
        log.warning(note)
    stretch = compute_stretch(ortho, bands, STRETCH_PERCENTILES)
    named = {"ortho": ortho, "labels": labels, "holdout": holdout, "manual": manual}
    inputs = {k: {"path": str(v), "sha256": file_sha256(v)} for k, v in named.items() if v is not None}
    stats: dict[str, SplitStats] = {}
    with atomic_dir(out) as tmp, open_raster(ortho) as src:
        writer = _Writer(src, info, bands, stretch, chip, rule, tmp)
        writer.n_classes = n_classes
        jobs = [("train", plan.train, crowns, None), ("val", plan.val, crowns, None)]
        if hold is not None:
            jobs.append(("test", plan.test, hold.gt, hold.region))
        for name, chips, source, region in jobs:
            coco, stats[name] = writer.split(name, chips, source, region)
            (tmp / f"{name}.json").write_text(json.dumps(coco, separators=(",", ":")) + "\n")
            log.info("%s: %d chips, %d annotations", name, stats[name].chips, stats[name].annotations)
        if stats["train"].annotations == 0:
            raise InputError(
                labels, "no training annotation survived (all crowns dropped as slivers or tiny)"
            )
        summary = {
            "format": FORMAT,
            "crs": info.crs,
            "raster": {
                "width": info.width,
                "height": info.height,
                "count": info.count,
                "dtype": info.dtype,
                "nodata": info.nodata,
                "transform": [float(v) for v in info.transform],
            },
            "bands": list(bands),
            "categories": categories(n_classes),
            "chip": chip,
            "overlap": overlap,
            "stride": stride,
            "image_format": writer.ext,
            "stretch": {
                "percentiles": list(STRETCH_PERCENTILES),
                "per_band": [
                    {"band": b, "low": lo, "high": hi} for b, (lo, hi) in zip(bands, stretch, strict=True)
                ],
            },
            "inputs": inputs,
            "labels": crowns.info,
            "test_area": hold.info if hold else None,
            "splits": {
                n: {"json": f"{n}.json", "images": f"images/{n}", **s.as_dict()} for n, s in stats.items()
            },
            "grid": {
                "chips": plan.grid,
                "excluded_near_test_area": plan.near_test_area,
                "candidates": plan.candidates,
                "excluded_val_gap": plan.val_gap,
                "val_blocks": [list(b) for b in plan.val_blocks],
                "val_fraction_of_candidates": round(len(plan.val) / plan.candidates, 6),
            },
            "params": p.as_dict(),
            "rules": rules_in_words(
                chip=chip,
                stride=stride,
                overlap=overlap,
                rule=rule,
                buffer_m=buffer_m,
                seed=seed,
                val_fraction=val_fraction,
                val_block=val_block,
                hold=hold,
                class_column=p.class_column,
            ),
            "notes": notes,
        }
        (tmp / "export.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def rules_in_words(
    *,
    chip: int,
    stride: int,
    overlap: float,
    rule: SliverRule,
    buffer_m: float,
    seed: int,
    val_fraction: float,
    val_block: int,
    hold: Holdout | None,
    class_column: str | None = None,
) -> dict[str, str]:
    """The export's rules as sentences, for ``export.json``."""
    test_classes = hold is not None and hold.gt.classed
    return {
        "categories": (
            f"one category class_<c> (id c + 1) per class c = 0..max of the labels' column {class_column}; "
            "crowns with a negative class (no class) are left out; test ground truth: "
            + (
                f"the classes of its {class_column} column"
                if test_classes
                else "one category, tree (its crowns have no classes): class-agnostic evaluation only"
            )
            if class_column
            else "one category, tree (id 1)"
        ),
        "chips": (
            f"{chip} x {chip} px chips, stride {stride} px (overlap {overlap:g}); the last row and column "
            "of chips are aligned to the raster edge, so every chip is full-size and inside the raster "
            "(no padding)"
        ),
        "image": (
            "uint8 after one scene-wide linear stretch per band (2-98 % percentiles of valid pixels); "
            "PNG (RGB) for 3 bands, else TIFF (height, width, bands) without georeferencing; nodata "
            "pixels are 0; chips without a valid pixel are skipped; chips without crowns are kept"
        ),
        "segmentation": (
            "compressed RLE from pycocotools.mask.encode (counts as a string); a pixel is in the mask "
            "when its centre lies in the clipped crown; area = mask pixel count; bbox = mask pixel extent "
            "[x, y, w, h]"
        ),
        "sliver": rule.describe(),
        "buffer": (
            f"train and val chips never intersect or touch the test area grown by {buffer_m:g} CRS units "
            "(metres)"
            if hold
            else "no test area given: no chips excluded"
        ),
        "validation": (
            f"spatial blocks of {val_block} x {val_block} chips of the chip grid, visited in a seeded "
            f"(seed {seed}) random order; a block is taken while that brings the number of val chips "
            f"closer to {val_fraction:g} x the chips outside the test area + buffer; if none qualifies, "
            "the smallest block is taken"
            if val_fraction > 0
            else "no validation split (val fraction 0): val.json has no images"
        ),
        "val_gap": (
            "train chips that share a pixel with a val chip are left out, so train and val share no pixel"
        ),
        "test": (
            "chips tiled over the bounding box of the test region R = (test area ∪ ground-truth crowns) "
            f"∩ (test area + {buffer_m:g}); pixels outside R are 0; ground truth: {hold.gt_rule}, "
            "clipped to R and to the chip; test chips may overlap the buffer"
            if hold
            else "no test area given: no test split, no test.json"
        ),
        "ids": (
            "train/val image id = grid_row x grid_columns + grid_col + 1; test chips are numbered after "
            "the grid; annotation ids run 1, 2, ... over train, val, test; source_id = the crown's id "
            "(labels: segment_id, else tree_id; manual crowns: tree_id, else segment_id; else 1..n in "
            "file order)"
        ),
    }


def test_set_id(coco_dir: str | Path) -> str:
    """Identity of the held-out test set: sha256 of the exported ``test.json`` (chips + manual crowns)."""
    path = Path(coco_dir) / "test.json"
    if not path.is_file():
        raise InputError(path, "no test split to identify the test set by")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
