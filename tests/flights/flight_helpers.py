"""Flights for the catalog tests: synthetic scenes uploaded in the catalog layout, a known-answer SAM2
stand-in per flight, and the tiny training settings.

Why a known-answer predictor in the retraining scenario: untrained SAM2 costs about 30 s per flight on
the 2 shared cores here (model build plus one 1024-px window) and adds nothing the scenario checks
(which flights are processed, once; what is trained on; how the registry decides). SAM2 itself runs in
the slow CLI test and in tests/pseudolabel. The stand-in returns each box's true crown
(:class:`crownsam.pseudolabel.predictor.KnownAnswerPredictor`), so the pseudolabels are real polygons.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import rasterio

from crownsam.common import storage
from crownsam.flights.catalog import FlightMeta, dump_meta
from crownsam.flights.settings import RetrainSettings
from crownsam.pseudolabel.predictor import KnownAnswerPredictor
from crownsam.synthetic import ScenePaths, generate_scene

BANDS6 = ("blue", "green", "red", "nir", "rededge", "thermal")
META = FlightMeta("2024-06-01", "EPSG:3067", BANDS6, "synthetic 6-band")
FLIGHT_FILES = ("ortho.tif", "chm.tif", "coarse.gpkg", "manual.gpkg", "test_area.gpkg")

# Smaller proposal and detection budgets than torchvision's defaults: same code paths, less CPU.
TEST_MODEL_KWARGS: dict[str, Any] = {
    "rpn_pre_nms_top_n_train": 300,
    "rpn_post_nms_top_n_train": 150,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "box_batch_size_per_image": 128,
    "box_detections_per_img": 10,
}


def tiny_settings(**own: Any) -> RetrainSettings:
    """One training step of batch 1 on 256-px chips; val blocks of one chip; a 0.5 m test-area buffer;
    ``own``: RetrainSettings' own fields (tracking URI, experiment, registered model name)."""
    base = RetrainSettings(**own, model_kwargs=TEST_MODEL_KWARGS)
    return base.replace(
        sam2=base.sam2.replace(device="cpu"),
        export=base.export.replace(chip=256, val_block=1, buffer_m=0.5),
        train=dataclasses.replace(base.train, max_iters=1, batch_size=1, epochs=1),
    )


def make_scene(folder: Path, seed: int) -> ScenePaths:
    """A 1024-px synthetic flight (25.6 m) with 3 manual crowns: one 256-px test chip, ~8 train chips."""
    return generate_scene(folder, size=1024, seed=seed, n_manual=3)


def upload_flight(
    scene: ScenePaths,
    dest: str,
    files: tuple[str, ...] = FLIGHT_FILES,
    meta: FlightMeta | None = META,
) -> str:
    """Copy the scene's files into the flight folder ``dest`` (path or gs://) the way an uploader does:
    data files first, ``flight.yaml`` last (``meta=None``: not written, an upload in progress)."""
    for name in files:
        storage.upload(Path(scene.root) / name, storage.join(dest, name))
    if meta is not None:
        storage.write_bytes(storage.join(dest, "flight.yaml"), dump_meta(meta).encode())
    return dest


@dataclass
class TruthPredictors:
    """``predictor_factory`` for retrain: the known-answer predictor of each flight's scene; remembers
    which flights it was asked for (= which flights were pseudolabeled)."""

    truths: dict[str, Path] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add(self, flight_id: str, scene: ScenePaths) -> None:
        self.truths[flight_id] = Path(scene.truth)

    def __call__(self, flight, ortho: Path) -> KnownAnswerPredictor:
        self.calls.append(flight.flight_id)
        with rasterio.open(ortho) as src:
            transform = src.transform
        return KnownAnswerPredictor(gpd.read_file(self.truths[flight.flight_id]), transform)
