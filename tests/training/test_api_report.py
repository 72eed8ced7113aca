"""The model evaluation page shown in KFP's HTML viewer."""

import json

import numpy as np
from PIL import Image

from crownsam.training.api import model_report_html


def test_report_has_metrics_and_embedded_images(tmp_path) -> None:
    (tmp_path / "metrics.json").write_text(
        json.dumps({"model": "runs:/abc/model", "run_id": "abc", "metrics": {"segm_AP": 0.25, "x": None}})
    )
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "predictions_test.png")
    page = model_report_html(str(tmp_path))
    assert "<td>segm_AP</td><td>0.2500</td>" in page and "<td>x</td>" not in page
    assert page.count("data:image/png;base64,") == 1 and "abc" in page
    assert "http" not in page  # self-contained
