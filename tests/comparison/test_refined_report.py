"""The comparison shows raw and refined predicted crowns side by side when evaluate-model refined them."""

from __future__ import annotations

import math

from crownsam.comparison.compare import Comparison, ModelEval, markdown, refined_rows
from crownsam.comparison.report import build_html

RAW_ONLY = {"segm_AP": 0.41, "jaccard_mean/model": 0.55, "f1/model": 0.6}
REFINED = RAW_ONLY | {
    "jaccard_mean/refined": 0.71,
    "f1/refined": 0.74,
    "paired_diff_mean/refined-model": 0.16,
    "paired_diff_ci_low/refined-model": 0.1,
    "paired_diff_ci_high/refined-model": 0.22,
    "refined_segm_AP": 0.47,
}


def comparison(pseudo: dict[str, float]) -> Comparison:
    models = [ModelEval("coarse", "r1", dict(RAW_ONLY)), ModelEval("pseudo", "r2", pseudo)]
    return Comparison(label_sets=["coarse", "pseudo"], label_metrics={}, models=models)


def test_refined_rows_put_raw_and_refined_side_by_side() -> None:
    rows = refined_rows(comparison(dict(REFINED)))
    assert rows == [
        ("pseudo", ["0.550", "0.710", "+0.160", "+0.100 to +0.220", "0.600", "0.740", "0.410", "0.470"])
    ]
    md = markdown(comparison(dict(REFINED)))
    assert "raw and refined by SAM2" in md
    assert "| pseudo | 0.550 | 0.710 | +0.160 | +0.100 to +0.220 | 0.600 | 0.740 | 0.410 | 0.470 |" in md
    page = build_html(comparison(dict(REFINED)))
    assert "<td>+0.100 to +0.220</td>" in page and "Predicted crowns, raw and refined" in page
    flat = comparison(dict(REFINED)).flat_metrics()
    assert (
        flat["crowns_jaccard_mean_refined/pseudo"] == 0.71 and flat["crowns_refined_segm_AP/pseudo"] == 0.47
    )
    assert "crowns_jaccard_mean_refined/coarse" not in flat


def test_no_refined_section_without_refinement_and_dashes_for_missing_numbers() -> None:
    assert refined_rows(comparison(dict(RAW_ONLY))) == []
    assert "refined" not in markdown(comparison(dict(RAW_ONLY)))
    no_ap = {k: v for k, v in REFINED.items() if k != "refined_segm_AP"} | {"f1/refined": math.nan}
    ((_, cells),) = refined_rows(comparison(no_ap))
    assert cells[5] == "-" and cells[7] == "-"
