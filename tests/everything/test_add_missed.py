"""add-missed on the synthetic scene with the known-answer masks: recall against the true crowns rises by
the crowns the coarse segments missed, and nothing is added on roofs or the road."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from everything_helpers import KnownRun

from crownsam import cli
from crownsam.common.raster import raster_info
from crownsam.everything.add_missed import LAYER, add_missed_files, compactness, judge
from crownsam.everything.params import AddMissedParams
from crownsam.pseudolabel.vegetation import ndvi_bands

MIN_CROWN_M2 = 1.0


def matched(labels: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> set[int]:
    """Tree ids of the true crowns that some label matches at IoU >= 0.5."""
    geoms = labels.geometry.values
    tree = shapely.STRtree(geoms)
    out = set()
    for tid, g in zip(truth["tree_id"], truth.geometry, strict=True):
        for i in tree.query(g, predicate="intersects"):
            if shapely.intersection(g, geoms[i]).area / shapely.union(g, geoms[i]).area >= 0.5:
                out.add(int(tid))
                break
    return out


def coarse_missed(run: KnownRun) -> set[int]:
    """Trees that no coarse segment comes from (the generator's ``source_tree_ids``)."""
    coarse = gpd.read_file(run.scene.coarse)
    sources = {int(t) for s in coarse["source_tree_ids"] for t in str(s).split(",") if t}
    big = run.truth[run.truth.area >= MIN_CROWN_M2]
    return set(big["tree_id"].astype(int)) - sources


@pytest.fixture(scope="module")
def completed(known_run: KnownRun, pseudolabels: Path, tmp_path_factory) -> tuple[gpd.GeoDataFrame, dict]:
    out = tmp_path_factory.mktemp("add-missed") / "completed.gpkg"
    s = add_missed_files(
        str(pseudolabels),
        str(known_run.masks_path),
        str(known_run.scene.ortho),
        str(out),
        chm=str(known_run.scene.chm),
    )
    return gpd.read_file(out, layer=LAYER), s


def test_recall_rises_by_the_crowns_the_coarse_segments_missed(
    known_run: KnownRun, pseudolabels: Path, completed
) -> None:
    truth = known_run.truth
    before = gpd.read_file(pseudolabels)
    after, summary = completed
    missed = coarse_missed(known_run)
    assert len(missed) >= 5
    got_before, got_after = matched(before, truth), matched(after, truth)
    assert not missed & got_before
    assert missed <= got_after
    n = len(truth)
    assert len(got_after) / n >= len(got_before) / n + len(missed) / n
    # every added label is a true crown that no label had (no duplicate, no false crown)
    added = after[after["label_source"] == "amg"]
    assert len(added) == summary["added"] > 0
    assert matched(added, truth).isdisjoint(got_before)
    assert len(matched(added, truth)) == len(added)
    # existing labels keep their own label_source (pseudolabels say sam2 or coarse, the fallback)
    kept = after[after["label_source"] != "amg"].set_index("segment_id")["label_source"]
    assert kept.to_dict() == before.set_index("segment_id")["label_source"].to_dict()
    assert after["segment_id"].is_unique


def test_nothing_is_added_on_roofs_or_the_road(known_run: KnownRun, completed) -> None:
    after, summary = completed
    added = after[after["label_source"] == "amg"]
    for kind, g in zip(known_run.layout_objects["kind"], known_run.layout_objects.geometry, strict=True):
        assert (added.geometry.intersection(g).area < 0.01 * added.area).all(), kind
    # the road's mask fails on size; the roofs carry pseudolabels already (coarse fallbacks: the pseudolabel
    # step's vegetation filter is off by default), so their masks overlap a label and are not judged
    assert summary["dropped"]["too_large"] >= 1
    roofs = [
        g
        for k, g in zip(known_run.layout_objects["kind"], known_run.layout_objects.geometry, strict=True)
        if k == "roof"
    ]
    kept = after[after["label_source"] != "amg"]
    for g in roofs:
        assert (kept.geometry.intersection(g).area > 0.5 * kept.area).any()


def test_roofs_fail_on_ndvi_and_the_road_on_size(known_run: KnownRun) -> None:
    """The rules themselves, on the masks lying on the roofs and the road (no labels around them): roofs
    are as tall as trees and crown-sized, so NDVI is what keeps them out."""
    masks = gpd.read_file(known_run.masks_path)
    kinds, rows = [], []
    for kind, g in zip(known_run.layout_objects["kind"], known_run.layout_objects.geometry, strict=True):
        for i, m in enumerate(masks.geometry):
            if m.intersection(g).area >= 0.5 * m.area:
                kinds.append(kind)
                rows.append(i)
    assert sorted(kinds) == ["road", "roof", "roof"]
    on_layout = masks.iloc[rows].reset_index(drop=True)
    none = gpd.GeoDataFrame(geometry=[], crs=masks.crs)
    red, nir = ndvi_bands(raster_info(known_run.scene.ortho), None, None)
    params = AddMissedParams(red_band=red, nir_band=nir)
    with rasterio.open(known_run.scene.ortho) as o, rasterio.open(known_run.scene.chm) as c:
        d = judge(on_layout, none, o, c, params)
        loose = judge(
            on_layout, none, o, c, params.replace(min_ndvi=-1.0, max_area=1000.0, min_compactness=0.0)
        )
    assert dict(zip(kinds, d.reason, strict=True)) == {"road": "too_large", "roof": "low_ndvi"}
    roof_ndvi = [f["ndvi"] for k, f in zip(kinds, d.figures, strict=True) if k == "roof"]
    assert max(roof_ndvi) < 0.3
    # roofs are tall enough for the height rule: only NDVI stops them; the road is also too low
    assert dict(zip(kinds, loose.reason, strict=True)) == {"road": "too_low", "roof": ""}
    assert compactness(shapely.Point(0, 0).buffer(1.0, quad_segs=64)) == pytest.approx(1.0, abs=0.01)


def test_cli_reprojects_labels_with_one_note_and_counts_every_object(
    known_run: KnownRun, pseudolabels: Path, completed, tmp_path: Path, capsys, caplog
) -> None:
    wgs = tmp_path / "pseudo-4326.gpkg"
    gpd.read_file(pseudolabels).to_crs("EPSG:4326").to_file(wgs)
    out = tmp_path / "out" / "completed.gpkg"
    caplog.set_level(logging.WARNING)
    argv = ["add-missed", "--labels", str(wgs), "--masks", str(known_run.masks_path)]
    argv += ["--ortho", str(known_run.scene.ortho), "--out", str(out), "--chm", str(known_run.scene.chm)]
    assert cli.main(argv) == 0
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert notes == [f"{wgs}: reprojected from EPSG:4326 to the raster's CRS EPSG:3067"]
    assert "added" in capsys.readouterr().out
    s = json.loads(out.with_suffix(".summary.json").read_text())
    assert s["added"] + sum(s["dropped"].values()) == s["objects"] == len(known_run.masks)
    assert s["added"] == completed[1]["added"]
    result = gpd.read_file(out)
    assert result.crs.to_epsg() == 3067 and len(result) == s["labels_after"]
    assert np.isclose(
        result.loc[result["label_source"] == "amg"].area.sum(),
        completed[0].loc[completed[0]["label_source"] == "amg"].area.sum(),
    )
