"""The multi-pass loop: painting, points, the relaxation schedule, stops, and the acceptance rule."""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from rasterio import Affine

from crownsam.everything.known_answer import KnownAnswerGenerator
from crownsam.everything.params import EverythingParams
from crownsam.everything.passes import (
    STOP_FLOOR,
    STOP_NO_DATA,
    STOP_NO_POINTS,
    STOP_PASSES,
    STOP_TARGET,
    relax,
    run_passes,
)
from crownsam.everything.tiles import tile_grid

H = W = 100
EVERYWHERE = (slice(0, H), slice(0, W))


def rle(mask: np.ndarray) -> dict:
    from sam2.utils.amg import mask_to_rle_pytorch

    return mask_to_rle_pytorch(torch.from_numpy(mask[None]))[0]


@dataclass
class Scripted:
    """A generator with fixed objects: each call returns, as SAM2 records (RLE), the objects that hold
    one of the call's points and pass SAM2's filters (``score > pred_iou_thresh``, ``stability >=
    stability_score_thresh``), best score first. Records the images, points and thresholds it got."""

    objects: list[tuple[np.ndarray, float, float]]
    name: str = "scripted"
    untrained: bool = False
    model_seconds: float = 0.0
    calls: list[dict] = field(default_factory=list)

    def start_tile(self, tile: object) -> None:
        pass

    def generate(self, image, points, pred_iou_thresh, stability_score_thresh):
        self.calls.append(
            {"image": image.copy(), "points": points.copy(), "t": (pred_iou_thresh, stability_score_thresh)}
        )
        h, w = image.shape[:2]
        px = [(int(y * h), int(x * w)) for x, y in points]
        out = []
        for mask, score, stab in sorted(self.objects, key=lambda o: -o[1]):
            if any(mask[r, c] for r, c in px) and score > pred_iou_thresh and stab >= stability_score_thresh:
                out.append({"segmentation": rle(mask), "predicted_iou": score, "stability_score": stab})
        return out


def box(r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


IMAGE = np.full((H, W, 3), 200, dtype=np.uint8)
VALID = np.ones((H, W), dtype=bool)
PARAMS = EverythingParams(tile=64, padding=0, points_per_side=10, passes=6, min_mask_px=10)


def test_relax_steps_down_to_the_floor() -> None:
    assert relax(0.93, 0.05, 0.6) == 0.88
    assert relax(0.62, 0.05, 0.6) == 0.6
    assert relax(0.6, 0.05, 0.6) == 0.6


def test_thresholds_relax_only_after_a_stalled_pass_and_each_object_records_them() -> None:
    a, b, c = box(0, 0, 40, 40), box(50, 50, 90, 90), box(0, 60, 30, 95)
    gen = Scripted([(a, 0.96, 1.0), (b, 0.90, 1.0), (c, 0.85, 0.9)])
    res = run_passes(IMAGE, VALID, EVERYWHERE, gen, PARAMS)
    got = [(p.index, p.pred_iou_thresh, p.stability_thresh, p.added) for p in res.passes]
    assert got == [
        (1, 0.93, 0.93, 1),  # a
        (2, 0.93, 0.93, 0),  # stalls: relax
        (3, 0.88, 0.88, 1),  # b
        (4, 0.88, 0.88, 0),  # stalls: relax
        (5, 0.83, 0.83, 1),  # c (score 0.85 > 0.83, stability 0.9 >= 0.83)
        (6, 0.83, 0.83, 0),
    ]
    assert res.stop == STOP_PASSES
    assert [(o.pass_index, o.pred_iou_thresh, o.score) for o in res.objects] == [
        (1, 0.93, 0.96),
        (3, 0.88, 0.90),
        (5, 0.83, 0.85),
    ]
    cov = [p.coverage for p in res.passes]
    assert cov == sorted(cov) and cov[-1] == pytest.approx((a | b | c).mean())
    assert [c["t"] for c in gen.calls] == [(p.pred_iou_thresh, p.stability_thresh) for p in res.passes]


def test_accepted_masks_are_painted_black_and_their_points_dropped() -> None:
    a = box(10, 10, 60, 60)
    gen = Scripted([(a, 0.96, 1.0)])
    res = run_passes(IMAGE, VALID, EVERYWHERE, gen, PARAMS.replace(passes=2))
    first, second = gen.calls
    assert (first["image"] == IMAGE).all()
    assert (second["image"][a] == 0).all() and (second["image"][~a] == 200).all()
    assert len(first["points"]) == 100
    # the second pass only prompts points on uncovered pixels
    px = (second["points"] * [W, H]).astype(int)
    assert not a[px[:, 1], px[:, 0]].any() and len(px) == 100 - a[5::10, 5::10].sum()
    assert (res.labels[a] == 1).all() and (res.labels[~a] == 0).all()


def test_overlap_and_small_parts_are_dropped_and_objects_never_overlap() -> None:
    a = box(0, 0, 50, 50)
    mostly_covered = box(0, 0, 50, 60)  # 5/6 of it under a: dropped
    half_new = box(20, 30, 60, 80)  # 12 % under a: kept, only its new pixels
    with_crumb = box(70, 0, 90, 20) | box(95, 95, 97, 97)  # a 4-px crumb: dropped as small
    masks = [a, mostly_covered, half_new, with_crumb]
    gen = Scripted([(m, s, 1.0) for m, s in zip(masks, (0.99, 0.98, 0.97, 0.96), strict=True)])
    res = run_passes(IMAGE, VALID, EVERYWHERE, gen, PARAMS.replace(passes=1))
    (p,) = res.passes
    assert (p.added, p.dropped_overlap, p.dropped_small) == (3, 1, 1)
    assert (res.labels == 2).sum() == (half_new & ~a).sum()
    assert (res.labels[95:97, 95:97] == 0).all()


def test_stops_target_no_points_floor_and_no_data() -> None:
    whole = box(0, 0, H, W)
    res = run_passes(IMAGE, VALID, EVERYWHERE, Scripted([(whole, 0.99, 1.0)]), PARAMS)
    assert res.stop == STOP_TARGET and len(res.passes) == 1

    most = box(0, 0, 96, W)  # covers all grid points but not 99 % of the pixels
    res = run_passes(IMAGE, VALID, EVERYWHERE, Scripted([(most, 0.99, 1.0)]), PARAMS)
    assert res.stop == STOP_NO_POINTS and len(res.passes) == 1

    params = PARAMS.replace(passes=20, pred_iou_floor=0.8, stability_floor=0.8)
    res = run_passes(IMAGE, VALID, EVERYWHERE, Scripted([(most, 0.5, 1.0)]), params)
    assert res.stop == STOP_FLOOR
    assert [p.pred_iou_thresh for p in res.passes] == [0.93, 0.88, 0.83, 0.8]

    res = run_passes(IMAGE, np.zeros((H, W), bool), EVERYWHERE, Scripted([(most, 0.99, 1.0)]), PARAMS)
    assert res.stop == STOP_NO_DATA and res.passes == []


def test_coverage_counts_only_own_valid_pixels() -> None:
    valid = VALID.copy()
    valid[:, 80:] = False  # no data on the right
    a = box(0, 0, 50, 100)
    res = run_passes(IMAGE, valid, (slice(0, 50), slice(0, 100)), Scripted([(a, 0.99, 1.0)]), PARAMS)
    assert res.valid_own_px == 50 * 80 and res.covered_own_px == 50 * 80
    assert res.passes[0].coverage == 1.0 and (res.labels[:, 80:] == 0).all()


def test_known_answer_thresholds_reach_the_right_sam2_filters() -> None:
    """Through SAM2's own generator: predicted IoU is compared with pred_iou_thresh (strictly above),
    stability with stability_score_thresh; swapping or inverting them changes what comes back."""
    crowns = gpd.GeoDataFrame(
        {"score": [0.97, 0.90]},
        geometry=[shapely.box(0.5, -1.5, 1.5, -0.5), shapely.box(2.0, -2.0, 2.4, -0.2)],
        crs="EPSG:3067",
    )
    params = EverythingParams(tile=128, padding=0, points_per_side=16)
    gen = KnownAnswerGenerator(crowns, Affine(0.025, 0, 0, 0, -0.025, 0), params)
    grid = tile_grid(128, 128, 128, 0)
    gen.start_tile(grid.tiles[0])
    pts = np.array([[1.0 / 3.2, 1.0 / 3.2], [2.2 / 3.2, 1.0 / 3.2], [0.05, 0.95]])  # crown 1, crown 2, ground
    image = np.zeros((128, 128, 3), np.uint8)
    scores = lambda recs: sorted(round(r["predicted_iou"], 2) for r in recs)  # noqa: E731
    assert scores(gen.generate(image, pts, 0.93, 0.5)) == [0.97]
    assert scores(gen.generate(image, pts, 0.85, 0.5)) == [0.90, 0.97]
    assert scores(gen.generate(image, pts, 0.85, 1.01)) == []  # stability is 1: 1.01 filters all
    assert scores(gen.generate(image, pts, 0.97, 0.5)) == []  # strictly above pred_iou_thresh
