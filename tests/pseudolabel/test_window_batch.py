"""``--window-batch``: several windows through SAM2's image encoder in one call (SAM2's batch API) give
the masks of one window at a time (real SAM2 code, untrained tiny model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rasterio import Affine

from crownsam.common.raster import open_raster
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.run import SegmentTable, predict_windows, read_window
from crownsam.pseudolabel.sam2_model import Sam2BoxPredictor, build_sam2_model
from crownsam.synthetic import generate_scene
from crownsam.tiling.params import TileParams
from crownsam.tiling.plan import plan_from_files


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    scene = generate_scene(tmp_path_factory.mktemp("scene"), size=512, seed=2)
    plan, segments, _ = plan_from_files(
        str(scene.ortho), str(scene.coarse), TileParams(window=256, stride=256)
    )
    table = SegmentTable.of(segments, Affine(*plan.transform[:6]))
    with open_raster(scene.ortho) as src:
        inps = [read_window(src, plan, w, table) for w in plan.windows]
    inps = [i for i in inps if len(i.segment_ids) >= 2][:2]
    assert len(inps) == 2
    return inps


@pytest.mark.slow  # four 1024 px embeddings of SAM2 on a CPU
def test_batch_of_two_windows_gives_the_masks_of_one_at_a_time(inputs) -> None:
    net = build_sam2_model("sam2.1_hiera_t", None, untrained=True, device=torch.device("cpu"))
    predictor = Sam2BoxPredictor(net, name="sam2.1_hiera_t", untrained=True)
    params = PseudolabelParams(batch_size=4)
    one = predict_windows(predictor, inputs[:1], params) + predict_windows(predictor, inputs[1:], params)
    f0 = predictor.forward_seconds
    both = predict_windows(predictor, inputs, params)
    assert predictor.forward_seconds > f0
    assert len(both) == 2
    for a, b, inp in zip(one, both, inputs, strict=True):
        assert len(a.patches) == len(b.patches) == len(inp.segment_ids)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        for pa, pb in zip(a.patches, b.patches, strict=True):
            assert (pa.r0, pa.c0, pa.data.shape) == (pb.r0, pb.c0, pb.data.shape)
            np.testing.assert_allclose(pa.data, pb.data, atol=1e-3 * max(1.0, float(np.abs(pa.data).max())))
    # the check can fail: the two windows' answers differ (a batch answered for the wrong image would show)
    d0, d1 = one[0].patches[0].data, both[1].patches[0].data
    h, w = min(d0.shape[0], d1.shape[0]), min(d0.shape[1], d1.shape[1])
    assert not np.allclose(d0[:h, :w], d1[:h, :w], atol=1e-3 * max(1.0, float(np.abs(d0).max())))
