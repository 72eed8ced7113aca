"""The evaluation on the synthetic scene, and the report as headless Chromium renders it.

Pseudolabels come from the known-answer predictor (the true crown inside each coarse segment's box), so
they must score J >= 0.95 on the trees whose coarse segment names exactly one crown, and beat the coarse
segments with a positive paired difference whose interval excludes zero.
"""

from __future__ import annotations

import base64
import io
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from helpers import png_size, run_chromium
from PIL import Image

from crownsam.evaluation.api import OUTPUT_FILES, evaluate_files
from crownsam.evaluation.report import MANUAL_COLOR, set_colors
from crownsam.pseudolabel.api import PseudolabelRequest, run_pseudolabel
from crownsam.pseudolabel.predictor import KnownAnswerPredictor
from crownsam.synthetic import generate_scene

BANNER = "UNTRAINED SAM2: these pseudolabels are meaningless"
BANNER_RGB = "#b00020"
ONE_CROWN = ("none", "dilated", "eroded", "offset")  # coarse errors whose box still names one crown


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("scene"), size=1536, seed=3)


@pytest.fixture(scope="module")
def evaluated(scene, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    with rasterio.open(scene.ortho) as src:
        predictor = KnownAnswerPredictor(gpd.read_file(scene.truth), src.transform)
    pseudo = root / "pseudo.gpkg"
    req = PseudolabelRequest(
        ortho=str(scene.ortho), segments=str(scene.coarse), out=str(pseudo), progress=False
    )
    run_pseudolabel(req, predictor=predictor)
    out = root / "out"
    ev = evaluate_files(
        str(scene.manual),
        {"coarse": str(scene.coarse), "pseudo": str(pseudo)},
        str(out),
        area=str(scene.test_area),
        ortho=str(scene.ortho),
        banner=BANNER,
    )
    return ev, out


def one_crown_trees(scene) -> set[int]:
    """Manual trees prompted by a coarse segment that names only them (not merged, split or missed)."""
    coarse = gpd.read_file(scene.coarse)
    ok = coarse[coarse["error"].isin(ONE_CROWN)]
    return {int(t) for t in ok["source_tree_ids"].astype(str) if "," not in t}


def test_known_answer_pseudolabels_beat_coarse(evaluated, scene) -> None:
    ev, out = evaluated
    m = ev.metrics
    assert m["n_trees"] == len(gpd.read_file(scene.manual)) >= 20
    j = ev.jaccard_table()
    single = sorted(one_crown_trees(scene) & set(j.index))
    assert len(single) >= 0.7 * len(j)
    assert j.loc[single, "pseudo"].mean() >= 0.95, j.loc[single]
    assert j.loc[single, "pseudo"].min() >= 0.9, j.loc[single]
    assert m["jaccard_median/pseudo"] >= 0.95
    assert m["jaccard_mean/coarse"] < m["jaccard_mean/pseudo"] - 0.1
    assert j.loc[single, "coarse"].mean() < j.loc[single, "pseudo"].mean() - 0.1
    # Later minus earlier: pseudo - coarse, positive, the interval above zero, and significant.
    d = m["paired_diff_mean/pseudo-coarse"]
    assert d == pytest.approx(m["jaccard_mean/pseudo"] - m["jaccard_mean/coarse"], abs=1e-12)
    assert 0 < m["paired_diff_ci_low/pseudo-coarse"] < d < m["paired_diff_ci_high/pseudo-coarse"]
    assert m["wilcoxon_p/pseudo-coarse"] < 0.01
    assert m["f1/pseudo"] > m["f1/coarse"]
    # Pseudolabels keep their coarse segment's id: the same id serves the same tree in both sets.
    assert m["paired_same_label/pseudo-coarse"] >= 0.8
    # The written files agree with the returned evaluation.
    csv = pd.read_csv(out / "per_tree.csv")
    np.testing.assert_allclose(csv["jaccard"], ev.per_tree["jaccard"], rtol=0, atol=1e-12)


def colour_pixels(img: np.ndarray, hex_rgb: str, tol: int = 40) -> int:
    target = np.array([int(hex_rgb[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - target).sum(axis=2) <= tol).sum())


def test_report_renders_in_headless_chromium(evaluated, tmp_path) -> None:
    ev, out = evaluated
    report = (out / OUTPUT_FILES["report"]).resolve()
    url = report.as_uri()

    dom = run_chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    summary = re.search(r'<table class="summary">.*?</table>', html, re.S)
    assert summary and all(f"{s}</td>" in summary.group(0) for s in ("coarse", "pseudo"))
    assert len(re.findall(r"<tr>", summary.group(0))) == 3  # header + two label sets
    per_tree = re.search(r'<table class="pertree">.*?</table>', html, re.S)
    assert per_tree and len(re.findall(r"<tr>", per_tree.group(0))) == 1 + int(ev.metrics["n_trees"])
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 4  # scatter, histogram, one map per label set
    sizes = [png_size(base64.b64decode(b)) for b in images]
    assert all(w >= 300 and h >= 300 for w, h in sizes), sizes
    assert BANNER in html

    shot = tmp_path / "report.png"
    res = run_chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    assert img.shape == (2400, 1280, 3)
    assert img.std() > 30  # not a blank page
    assert colour_pixels(img, BANNER_RGB) > 5000  # the banner, near the top
    assert colour_pixels(img[:400], BANNER_RGB) > 5000
    colors = set_colors(ev.label_sets)
    # Outlines on the maps: without them, swatches, scatter and histogram give < 2000 such pixels.
    for name, hex_rgb in [("manual", MANUAL_COLOR), *colors.items()]:
        assert colour_pixels(img, hex_rgb) > 4000, name
