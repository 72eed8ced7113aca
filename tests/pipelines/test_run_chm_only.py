"""``crownsam run --flight DIR`` on a flight folder without ``coarse.gpkg`` (the README says that works):
the whole pipeline on KFP's local runner takes its coarse crowns from the CHM. Slow: two Mask R-CNN
trainings on CPU; the default suite runs the CHM branch as a KFP task
(tests/flights/test_flights_component.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import pytest

from crownsam import cli
from crownsam.common.artifacts import label_file
from crownsam.synthetic import generate_scene

pytestmark = pytest.mark.slow

FAST = ["shards=1", "chip=256", "chip_overlap=0", "val_block=1", "holdout_buffer_m=0.5", "max_iters=1",
        "epochs=1", "batch_size=1"]  # fmt: skip


def test_run_a_flight_that_has_only_a_chm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    scene = generate_scene(tmp_path / "scene", size=1024, seed=9, n_manual=6)
    flight = tmp_path / "flight"
    flight.mkdir()
    for name in ("ortho.tif", "chm.tif", "manual.gpkg", "test_area.gpkg"):
        shutil.copy(Path(scene.root) / name, flight / name)
    argv = ["run", "--flight", str(flight), "--out", str(tmp_path / "run"), "--untrained"]
    assert cli.main([*argv, *(x for p in FAST for x in ("--param", p))]) == 0
    (segments,) = (tmp_path / "run").rglob("prepare-segments-op/segments*")

    crowns = gpd.read_file(label_file(str(segments)))  # the artifact: a folder holding segments.gpkg
    assert len(crowns) > 10 and {"treetop_x", "treetop_y"} <= set(crowns.columns)  # made from the CHM
    (comparison,) = (tmp_path / "run").rglob("comparison.json")
    assert set(json.loads(comparison.read_text())["registry"]["versions"]) == {"coarse", "pseudo"}
