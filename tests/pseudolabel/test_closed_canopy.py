"""Pseudolabels in a closed canopy, with stand-in predictors whose answers are known.

* Points land on the right pixel (the known-answer predictor answers a point with the crown holding it).
* Negative prompt calibration removes bleeding, and exclusive labels leave no overlap, within and across
  windows, with identical sharded and unsharded output (:class:`Bleeding`, rule in its docstring).
* The fallback to the coarse segment keeps every good mask and replaces the ones the checks catch.
* Segments reprojected to EPSG:4326 and back give the same pseudolabels as the originals.

Each check is shown to fail on the bug it guards against (an offset point, a missing step).
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.features
import shapely
from rasterio import Affine
from shapely.ops import polylabel

from crownsam import cli
from crownsam.common.errors import InputError
from crownsam.evaluation.api import evaluate_files
from crownsam.pseudolabel.api import PseudolabelRequest, claims_path, run_pseudolabel
from crownsam.pseudolabel.fallback import REASONS, fallback_reason
from crownsam.pseudolabel.merge import merge_shards
from crownsam.pseudolabel.overlap import overlap_figures
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.predictor import KnownAnswerPredictor, PromptBatch
from crownsam.synthetic import generate_scene
from crownsam.tiling.plan import plan_from_files

GSD = 0.025
SHARE = 0.05  # Bleeding: a box takes every crown it covers by more than this share of the crown's area


class Bleeding(KnownAnswerPredictor):
    """A box prompt bleeds into its neighbours unless told otherwise.

    Rule, per prompt: the prompt's own crown (the crown holding its positive point, else the crown whose
    bounding box best matches the box), plus every other truth crown that the box covers by more than
    ``SHARE`` of that crown's area (pixel counts on the window grid), minus every crown holding a
    negative point. Logits: +2 on the own crown, +1 on the crowns bled into, -1 elsewhere; score 1.
    """

    name = "bleeding"

    def predict(self, prompts: PromptBatch, regions: np.ndarray):
        assert self._ids is not None and prompts.boxes is not None
        area = np.bincount(self._ids.ravel())
        patches, scores = [], []
        for i, region in enumerate(regions):
            own, negative = self.answer(prompts, i)
            x0, y0, x1, y1 = np.asarray(prompts.boxes[i], dtype=np.float64)
            sub = self._ids[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))]
            inside = np.bincount(sub.ravel(), minlength=len(area))
            bled = (
                {int(k) for k in np.flatnonzero(inside > SHARE * np.maximum(area, 1)) if k} - own - negative
            )
            own -= negative
            r0, c0, r1, c1 = (int(v) for v in region)
            patch = self.logits(own, (r0, c0, r1, c1))
            win = self._ids[
                patch.r0 : patch.r0 + patch.data.shape[0], patch.c0 : patch.c0 + patch.data.shape[1]
            ]
            patch.data[np.isin(win, list(bled))] = 1.0
            patch.data[np.isin(win, list(own))] = 2.0
            patches.append(patch)
            scores.append(1.0)
        return patches, np.asarray(scores, dtype=np.float32)


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """1536 px: four windows, so labels meet across window borders."""
    return generate_scene(tmp_path_factory.mktemp("scene"), size=1536, seed=3)


@pytest.fixture(scope="module")
def truth(scene) -> gpd.GeoDataFrame:
    return gpd.read_file(scene.truth)


@pytest.fixture(scope="module")
def transform(scene) -> Affine:
    with rasterio.open(scene.ortho) as src:
        return src.transform


@pytest.fixture(scope="module")
def crowns(scene, truth, tmp_path_factory) -> gpd.GeoDataFrame:
    """One segment per truth crown (``segment_id`` = row + 1), grown by 0.3 m so that boxes hold parts
    of the neighbours, with treetop columns at the crown's pole of inaccessibility."""
    seg = truth[["geometry"]].copy()
    seg["segment_id"] = np.arange(1, len(seg) + 1)
    poles = [polylabel(g, tolerance=GSD) for g in truth.geometry]
    seg["treetop_x"] = [p.x for p in poles]
    seg["treetop_y"] = [p.y for p in poles]
    seg = seg.set_geometry(truth.geometry.buffer(0.3, join_style="mitre"))
    return seg


def write(gdf: gpd.GeoDataFrame, path) -> str:
    gdf.to_file(path, layer="segments", driver="GPKG")
    return str(path)


def run(scene, segments: str, out, predictor, **params) -> tuple[gpd.GeoDataFrame, dict]:
    req = PseudolabelRequest(
        ortho=str(scene.ortho),
        segments=segments,
        out=str(out),
        progress=False,
        params=PseudolabelParams(**params),
    )
    summary = run_pseudolabel(req, predictor=predictor)
    return gpd.read_file(out), summary


def jaccard_to_own_crown(labels: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> np.ndarray:
    """IoU of each label with the truth crown of its segment (segment_id = truth row + 1)."""
    own = truth.geometry.values[labels["segment_id"].to_numpy() - 1]
    g = labels.geometry.values
    return shapely.area(shapely.intersection(g, own)) / shapely.area(shapely.union(g, own))


# ---------------------------------------------------------------------------------------------- points


def boundary_treetops(
    truth: gpd.GeoDataFrame, transform: Affine, shape: tuple[int, int], dx: float
) -> np.ndarray:
    """For each crown, a point ``dx`` px right of the left edge of its rightmost pixel (first such pixel in
    raster order), on that pixel's middle row: the pixel to its right holds no part of the crown."""
    ids = rasterio.features.rasterize(
        ((g, i + 1) for i, g in enumerate(truth.geometry)),
        out_shape=shape,
        transform=transform,
        dtype="int32",
    )
    out = np.full((len(truth), 2), np.nan)
    for k in range(1, len(truth) + 1):
        rr, cc = np.nonzero(ids == k)
        if not rr.size:
            continue
        j = int(np.argmax(cc))  # first maximum in raster order
        out[k - 1] = transform @ (cc[j] + dx, rr[j] + 0.5)
    return out


def point_labels(scene, truth, transform, tmp_path, dx: float) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    with rasterio.open(scene.ortho) as src:
        shape = (src.height, src.width)
    xy = boundary_treetops(truth, transform, shape, dx)
    keep = np.isfinite(xy).all(axis=1)
    seg = truth.loc[keep, ["geometry"]].copy()  # grown by two pixels: the treetops lie in their segment
    seg = seg.set_geometry(seg.geometry.buffer(2 * GSD, join_style="mitre"))
    seg["segment_id"] = np.flatnonzero(keep) + 1
    seg["treetop_x"], seg["treetop_y"] = xy[keep, 0], xy[keep, 1]
    labels, _ = run(
        scene,
        write(seg, tmp_path / f"points{dx}.gpkg"),
        tmp_path / f"p{dx}.gpkg",
        KnownAnswerPredictor(truth, transform),
        prompt="point",
        exclusive=False,
        fallback=False,
    )
    return labels, seg


def test_points_land_on_the_right_pixel(scene, truth, transform, tmp_path) -> None:
    """Each treetop sits 0.02 px inside the right edge of its crown's rightmost pixel: every label must
    be exactly its crown, so the point reached the pixel it names, through map -> raster -> window."""
    labels, seg = point_labels(scene, truth, transform, tmp_path, dx=0.98)
    assert len(labels) == len(seg) >= 50
    j = jaccard_to_own_crown(labels, truth)
    assert j.min() > 0.97, np.sort(j)[:5]  # the crown rasterised on the pixel grid vs its polygon
    assert (labels["prompt"] == "point").all() and (labels["label_source"] == "sam2").all()


@pytest.mark.parametrize("dx", [1.02, 1.48], ids=["0.04px", "half_px"])
def test_the_point_check_catches_an_offset(scene, truth, transform, tmp_path, dx) -> None:
    """The same treetops moved by 0.04 px (or half a pixel) to the right cross into the next pixel,
    outside the crown: most labels vanish, which is what an off-by-one or half-pixel bug would do."""
    labels, seg = point_labels(scene, truth, transform, tmp_path, dx=dx)
    mean_j = jaccard_to_own_crown(labels, truth).sum() / len(seg)
    assert mean_j < 0.5, mean_j


def test_treetops_from_the_chm(scene, truth, transform, tmp_path) -> None:
    """Segments without treetop columns take the highest CHM pixel inside them; the summary says so."""
    seg = truth[["geometry"]].assign(segment_id=np.arange(1, len(truth) + 1))
    req = PseudolabelRequest(
        ortho=str(scene.ortho),
        segments=write(seg, tmp_path / "plain.gpkg"),
        out=str(tmp_path / "chm.gpkg"),
        chm=str(scene.chm),
        progress=False,
        params=PseudolabelParams(prompt="point", exclusive=False, fallback=False),
    )
    summary = run_pseudolabel(req, predictor=KnownAnswerPredictor(truth, transform))
    assert summary["treetop_sources"] == {"chm": len(truth)}
    labels = gpd.read_file(tmp_path / "chm.gpkg")
    # The highest CHM pixel of a visible crown is its own (trees are cones or domes): most labels are it.
    assert np.median(jaccard_to_own_crown(labels, truth)) > 0.95
    req.chm = None
    req.out = str(tmp_path / "pole.gpkg")
    assert run_pseudolabel(req, predictor=KnownAnswerPredictor(truth, transform))["treetop_sources"] == {
        "pole": len(truth)
    }


# ----------------------------------------------------------------------------- calibration, exclusivity


def test_calibration_removes_bleeding_in_one_window(tmp_path_factory) -> None:
    """One window (1024 px scene): without calibration the masks bleed into neighbours and overlap; with
    it, each mask is prompted again with its neighbours' treetops as negative points, and the labels are
    the crowns: Jaccard rises, overlaps fall to zero."""
    d = tmp_path_factory.mktemp("one")
    scene = generate_scene(d / "scene", size=1024, seed=1)
    truth = gpd.read_file(scene.truth)
    with rasterio.open(scene.ortho) as src:
        t = src.transform
    seg = truth[["geometry"]].assign(segment_id=np.arange(1, len(truth) + 1))
    poles = [polylabel(g, tolerance=GSD) for g in truth.geometry]
    seg["treetop_x"], seg["treetop_y"] = [p.x for p in poles], [p.y for p in poles]
    seg = seg.set_geometry(truth.geometry.buffer(0.3, join_style="mitre"))
    segments = write(seg, d / "seg.gpkg")
    common = {"prompt": "box+point", "exclusive": False, "fallback": False}
    plain, s0 = run(scene, segments, d / "plain.gpkg", Bleeding(truth, t), **common)
    npc, s1 = run(scene, segments, d / "npc.gpkg", Bleeding(truth, t), negative_calibration=True, **common)

    before, after = jaccard_to_own_crown(plain, truth), jaccard_to_own_crown(npc, truth)
    assert before.mean() < 0.8 and after.mean() > 0.97, (before.mean(), after.mean())
    assert overlap_figures(plain.geometry.values)["pairs"] > 10
    assert overlap_figures(npc.geometry.values)["pairs"] == 0
    cal = s1["calibration"]
    assert cal["overlap_first_pass"] == s0["calibration"]["overlap_first_pass"]
    assert cal["overlap_first_pass"]["pairs"] > 10 and cal["overlap_first_pass"]["area_px"] > 0
    assert cal["overlap_after_calibration"] == {"pairs": 0, "area_px": 0}
    assert 0 < cal["reprompts"] <= len(truth)
    assert (npc["negatives"] > 0).sum() == cal["reprompts"]
    assert s0["calibration"]["reprompts"] == 0 and s0["calibration"]["overlap_after_calibration"] is None
    assert s1["overlap_in_output"]["pairs"] == 0 < s0["overlap_in_output"]["pairs"]

    # Exclusive labels alone also end the overlap: each contested pixel goes to the higher logit (the own
    # crown, +2, beats a bleed, +1).
    excl, s2 = run(scene, segments, d / "excl.gpkg", Bleeding(truth, t), prompt="box+point", fallback=False)
    assert s2["overlap_in_output"]["pairs"] == 0 and s2["exclusive"]["pixels_reassigned_within_windows"] > 0
    assert jaccard_to_own_crown(excl, truth).mean() > 0.97

    # The label report shows the label sets side by side, with their overlap figures.
    ev = evaluate_files(
        str(scene.manual),
        {"coarse": segments, "pseudo-box": str(d / "plain.gpkg"), "pseudo-npc": str(d / "npc.gpkg")},
        str(d / "eval"),
        area=str(scene.test_area),
    )
    m = ev.metrics
    assert m["overlap_pairs/pseudo-box"] > 0 == m["overlap_pairs/pseudo-npc"]
    assert m["jaccard_mean/pseudo-npc"] > m["jaccard_mean/pseudo-box"]
    assert m["f1/pseudo-npc"] >= m["f1/pseudo-box"]
    html = (d / "eval" / "report.html").read_text()
    assert all(f"{s}</td>" in html for s in ("coarse", "pseudo-box", "pseudo-npc"))


def shards(scene, segments: str, predictor: KnownAnswerPredictor, d, n: int) -> list[str]:
    """Run the ``n`` shards of the default plan (no fallback) into ``d``; their labels' paths."""
    plan, _, _ = plan_from_files(str(scene.ortho), segments)
    plan.save(d / "plan.json")
    outs = []
    for i in range(n):
        out = d / f"shard{i}.gpkg"
        req = PseudolabelRequest(
            ortho=str(scene.ortho), segments=segments, out=str(out), plan=str(d / "plan.json"),
            shard=(i, n), progress=False, params=PseudolabelParams(fallback=False),
        )  # fmt: skip
        s = run_pseudolabel(req, predictor=predictor)
        assert s["exclusive"]["pending"] is True
        outs.append(str(out))
    return outs


def test_exclusive_across_windows_sharded_equals_unsharded(scene, truth, transform, crowns, tmp_path) -> None:
    """Four windows: labels of neighbouring windows claim the same pixels. Resolved at the end of an
    unsharded run and where shards are merged, with identical output and no overlap left; concatenating
    the shards without that step leaves overlaps (so the step is what removes them)."""
    segments = write(crowns, tmp_path / "seg.gpkg")
    whole, ws = run(scene, segments, tmp_path / "whole.gpkg", Bleeding(truth, transform), fallback=False)
    assert (
        ws["exclusive"]["cross_window_pairs"] > 0 and ws["exclusive"]["pixels_reassigned_across_windows"] > 0
    )
    assert ws["overlap_in_output"]["pairs"] == 0 and overlap_figures(whole.geometry.values)["pairs"] == 0

    outs = shards(scene, segments, Bleeding(truth, transform), tmp_path, 3)
    concat = gpd.GeoDataFrame(pd.concat([gpd.read_file(o) for o in outs]), crs=whole.crs)
    assert overlap_figures(concat.geometry.values)["pairs"] > 0
    assert cli.main(["merge-labels", "--inputs", *outs, "--out", str(tmp_path / "merged.gpkg")]) == 0
    merged = gpd.read_file(tmp_path / "merged.gpkg")
    assert merged.segment_id.tolist() == whole.segment_id.tolist()
    assert all(a.equals(b) for a, b in zip(merged.geometry, whole.geometry, strict=True))
    assert (merged["area_px"] == whole["area_px"]).all()
    ms = json.loads((tmp_path / "merged.summary.json").read_text())
    assert ms["exclusive"] == ws["exclusive"]
    assert ms["overlap_in_output"] == ws["overlap_in_output"]
    assert ms["skipped_by_reason"] == ws["skipped_by_reason"]
    assert not (tmp_path / "merged.claims.json").exists()

    # A shard whose claims are missing cannot be merged exclusively: an error, nothing written.
    claims_of_1 = claims_path(outs[1])
    moved = tmp_path / "moved.json"
    (tmp_path / claims_of_1).rename(moved)
    with pytest.raises(InputError, match="claims of this shard are missing"):
        merge_shards(outs, str(tmp_path / "bad.gpkg"))
    assert not (tmp_path / "bad.gpkg").exists()
    moved.rename(tmp_path / claims_of_1)


def test_merge_reads_claims_back_from_disk_and_rejects_corrupt_ones(
    scene, truth, transform, crowns, tmp_path, monkeypatch, capsys
) -> None:
    """merge-labels keeps the shards' claims on local disk (spill), reading them back window by window:
    with one window in memory at a time the merged labels are the same. A claims file with a claim cut
    short or a corrupt logit patch is a one-line error naming it, exit code 2, and nothing written."""
    from functools import partial

    from crownsam.pseudolabel import merge
    from crownsam.pseudolabel.spill import SpilledClaims

    outs = shards(scene, write(crowns, tmp_path / "seg.gpkg"), Bleeding(truth, transform), tmp_path, 2)
    assert cli.main(["merge-labels", "--inputs", *outs, "--out", str(tmp_path / "held.gpkg")]) == 0
    monkeypatch.setattr(merge, "SpilledClaims", partial(SpilledClaims, keep=1))
    assert cli.main(["merge-labels", "--inputs", *outs, "--out", str(tmp_path / "spilled.gpkg")]) == 0
    a, b = gpd.read_file(tmp_path / "held.gpkg"), gpd.read_file(tmp_path / "spilled.gpkg")
    assert len(a) > 3 and a.segment_id.tolist() == b.segment_id.tolist()
    assert all(g.equals(h) for g, h in zip(a.geometry, b.geometry, strict=True))
    assert json.loads((tmp_path / "held.summary.json").read_text())["exclusive"]["cross_window_pairs"] > 0

    path = tmp_path / claims_path(outs[1])
    good = json.loads(path.read_text())
    with_patch = next(i for i, c in enumerate(good["claims"]) if c["patch"])
    no_box = json.loads(json.dumps(good))
    del no_box["claims"][0]["box"]
    bad_patch = json.loads(json.dumps(good))
    bad_patch["claims"][with_patch]["patch"]["data"] = "bm90IHpsaWI="  # base64 of "not zlib"
    capsys.readouterr()
    for bad, problem in [(no_box, "a claim has no 'box'"), (bad_patch, "not a claims file (Error -3")]:
        path.write_text(json.dumps(bad))
        out = tmp_path / "bad.gpkg"
        assert cli.main(["merge-labels", "--inputs", *outs, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"crownsam: error: {path}: ") and problem in err[0], err
        assert not out.exists() and not (tmp_path / "bad.summary.json").exists()


def test_ties_go_to_the_lower_segment_id(scene, truth, transform, crowns, tmp_path) -> None:
    """Two segments that ask for the same crown with equal logits (the known-answer predictor answers +1
    everywhere): the lower segment_id keeps the crown, the other is left without pixels and dropped."""
    seg = crowns.iloc[[5, 5]].copy()
    seg["segment_id"] = [7, 3]
    labels, s = run(
        scene,
        write(seg, tmp_path / "twins.gpkg"),
        tmp_path / "t.gpkg",
        KnownAnswerPredictor(truth, transform),
        fallback=False,
    )
    assert labels["segment_id"].tolist() == [3]
    assert s["skipped_by_reason"] == {"empty_after_exclusive": 1}
    assert {"segment_id": 7, "reason": "empty_after_exclusive"} in s["skipped_segments"]


# ------------------------------------------------------------------------------------------------ fallback


@pytest.mark.parametrize(
    ("empty", "score", "ratio", "iou", "expected"),
    [
        (False, 0.9, 1.0, 0.8, ""),
        (True, 0.9, 1.0, 0.8, "empty_mask"),
        (False, 0.49, 1.0, 0.8, "low_score"),
        (False, 0.5, 1.0, 0.8, ""),
        (False, float("nan"), 1.0, 0.8, "low_score"),
        (False, 0.9, 0.19, 0.8, "small_area"),
        (False, 0.9, 0.2, 0.8, ""),
        (False, 0.9, 8.01, 0.8, "large_area"),
        (False, 0.9, 8.0, 0.8, ""),
        (False, 0.9, 1.0, 0.09, "low_iou"),
        (False, 0.9, 1.0, 0.1, ""),
        (False, 0.1, 9.0, 0.0, "low_score"),  # the first failing check is the reason
    ],
)
def test_fallback_rule_directions(empty, score, ratio, iou, expected) -> None:
    assert fallback_reason(empty, score, ratio, iou, PseudolabelParams()) == expected


def test_fallback_keeps_good_masks_and_replaces_bad_ones(scene, truth, transform, tmp_path) -> None:
    """Known-answer masks of segments that name one crown pass every check (the defaults leave room for
    CHM segment errors: dilated, eroded, offset, merged, split); masks that have nothing to do with their
    segment fall back to it, with the reason, and the summary counts them."""
    coarse = gpd.read_file(scene.coarse)
    labels, s = run(scene, str(scene.coarse), tmp_path / "fb.gpkg", KnownAnswerPredictor(truth, transform))
    m = labels.merge(coarse[["segment_id", "error"]], on="segment_id")
    good = m[m["error"].isin(["none", "dilated", "eroded", "offset", "merged"])]
    assert len(good) > 50 and (good["label_source"] == "sam2").all(), good[good.label_source != "sam2"]
    fell = m[m["label_source"] == "coarse"]
    assert set(fell["fallback_reason"]) <= set(REASONS) and (fell["fallback_reason"] != "").all()
    assert (m.loc[m.label_source == "sam2", "fallback_reason"] == "").all()
    assert s["fallbacks_by_reason"] == fell["fallback_reason"].value_counts().sort_index().to_dict()
    assert s["labels_by_source"] == m["label_source"].value_counts().sort_index().to_dict()
    assert "false" in set(fell["error"])  # a segment on a roof or a shrub: no crown matches it

    # A predictor that answers every box with a tiny fragment: every label falls back, as small_area.
    class Fragment(KnownAnswerPredictor):
        def predict(self, prompts, regions):
            patches, scores = super().predict(prompts, regions)
            for p in patches:
                keep = np.zeros_like(p.data, dtype=bool)
                ys, xs = np.nonzero(p.data > 0)
                if ys.size:
                    keep[ys[0], xs[0]] = True
                p.data[:] = np.where(keep, 1.0, -1.0)
            return patches, scores

    frag, s2 = run(
        scene, str(scene.coarse), tmp_path / "frag.gpkg", Fragment(truth, transform), exclusive=False
    )
    assert (frag["label_source"] == "coarse").all()
    assert set(frag["fallback_reason"]) <= {"small_area", "empty_mask"}
    assert s2["fallbacks_by_reason"].get("small_area", 0) > 50
    # Without --exclusive a fallback label is the coarse segment itself.
    by_id = coarse.set_index("segment_id").geometry
    assert all(g.equals(by_id[i]) for i, g in zip(frag["segment_id"], frag.geometry, strict=True))


# ----------------------------------------------------------------------------------------- reprojection


def test_segments_through_degrees_give_the_same_pseudolabels(scene, truth, transform, tmp_path) -> None:
    """Coarse segments written in EPSG:4326 come back moved by ~1e-9 px; regions, treetops (from the CHM)
    and labels must be exactly those of the originals."""
    coarse = gpd.read_file(scene.coarse)
    wgs84 = write(coarse.to_crs("EPSG:4326"), tmp_path / "wgs84.gpkg")
    back = coarse.to_crs("EPSG:4326").to_crs(coarse.crs)
    moved = np.abs(shapely.get_coordinates(back.geometry) - shapely.get_coordinates(coarse.geometry)).max()
    assert 0 < moved / GSD < 1e-6, moved / GSD

    def labels(segments: str, name: str, prompt: str) -> gpd.GeoDataFrame:
        req = PseudolabelRequest(
            ortho=str(scene.ortho),
            segments=segments,
            out=str(tmp_path / f"{name}.gpkg"),
            chm=str(scene.chm),
            progress=False,
            params=PseudolabelParams(prompt=prompt),
        )
        run_pseudolabel(req, predictor=KnownAnswerPredictor(truth, transform))
        return gpd.read_file(tmp_path / f"{name}.gpkg")

    for prompt in ("box", "box+point"):
        a, b = labels(str(scene.coarse), f"a{prompt}", prompt), labels(wgs84, f"b{prompt}", prompt)
        assert len(a) > 50 and a.segment_id.tolist() == b.segment_id.tolist()
        assert all(x.equals(y) for x, y in zip(a.geometry, b.geometry, strict=True)), prompt
        assert (a["label_source"] == b["label_source"]).all()
