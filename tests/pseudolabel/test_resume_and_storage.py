"""Reliability: a crashed run resumes where it stopped; a flight in a GCS bucket is pseudolabeled there."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from common.gcs_emulator import gcs_emulator

from crownsam.common import storage
from crownsam.pseudolabel.api import PseudolabelRequest, resume_uri, run_pseudolabel
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.predictor import KnownAnswerPredictor
from crownsam.synthetic import generate_scene


class Crash(RuntimeError):
    pass


class Counting(KnownAnswerPredictor):
    """Counts image embeddings; optionally crashes (like a preempted pod) after ``crash_after`` windows."""

    def __init__(self, *a, crash_after: int | None = None, **k) -> None:
        super().__init__(*a, **k)
        self.crash_after = crash_after
        self.windows: list[tuple[int, int]] = []

    def set_image(self, image, window) -> None:
        if self.crash_after is not None and len(self.windows) == self.crash_after:
            raise Crash("pod preempted")
        self.windows.append((window.row_off, window.col_off))
        super().set_image(image, window)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("scene"), size=1536, seed=5)


def predictor(scene, **k) -> Counting:
    with rasterio.open(scene.ortho) as src:
        return Counting(gpd.read_file(scene.truth), src.transform, **k)


def request(scene, out: Path, batch_size: int = 16, **k) -> PseudolabelRequest:
    return PseudolabelRequest(
        ortho=str(scene.ortho), segments=str(scene.coarse), out=str(out), progress=False,
        params=PseudolabelParams(batch_size=batch_size), **k,
    )  # fmt: skip


def test_crashed_run_resumes_without_redoing_finished_windows(scene, tmp_path) -> None:
    out = tmp_path / "pseudo.gpkg"
    first = predictor(scene, crash_after=2)
    with pytest.raises(Crash):
        run_pseudolabel(request(scene, out), predictor=first)
    assert not out.exists() and not Path(str(out).replace(".gpkg", ".summary.json")).exists()
    parts = [p for p in storage.list_prefix(resume_uri(request(scene, out))) if p.endswith(".json")]
    assert len(parts) == 2  # the two finished windows were kept

    second = predictor(scene)
    summary = run_pseudolabel(request(scene, out), predictor=second)
    assert len(second.windows) == 2 and not set(second.windows) & set(first.windows)
    assert summary["windows_resumed"] == 2 and summary["windows_processed"] == 2
    assert not Path(resume_uri(request(scene, out))).exists()  # cleaned up after success

    clean = tmp_path / "clean.gpkg"
    run_pseudolabel(request(scene, clean), predictor=predictor(scene))
    a, b = gpd.read_file(out), gpd.read_file(clean)
    assert a["segment_id"].tolist() == b["segment_id"].tolist()
    assert all(x.equals(y) for x, y in zip(a.geometry, b.geometry, strict=True))


def test_parts_from_another_run_are_not_reused(scene, tmp_path) -> None:
    out = tmp_path / "pseudo.gpkg"
    with pytest.raises(Crash):
        run_pseudolabel(request(scene, out, batch_size=4), predictor=predictor(scene, crash_after=2))
    again = predictor(scene)
    summary = run_pseudolabel(request(scene, out, batch_size=8), predictor=again)  # other settings
    assert len(again.windows) == 4 and summary["windows_resumed"] == 0


def test_resume_can_be_disabled(scene, tmp_path) -> None:
    out = tmp_path / "pseudo.gpkg"
    with pytest.raises(Crash):
        run_pseudolabel(request(scene, out, resume_dir=""), predictor=predictor(scene, crash_after=1))
    assert not list(tmp_path.iterdir())


def test_flight_in_a_bucket_is_pseudolabeled_there(scene, tmp_path, monkeypatch) -> None:
    """Real google-cloud-storage client against a real emulator process: inputs, resume parts, outputs."""
    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path / "cache"))
    from google.cloud import storage as gcs

    with gcs_emulator():
        gcs.Client.create_anonymous_client().create_bucket("flights")
        root = "gs://flights/flights/f1"
        for name in ("ortho.tif", "coarse.gpkg"):
            storage.upload(Path(scene.root) / name, f"{root}/{name}")
        req = PseudolabelRequest(
            ortho=f"{root}/ortho.tif",
            segments=f"{root}/coarse.gpkg",
            out=f"{root}/out/pseudo.gpkg",
            progress=False,
            cache_dir=str(tmp_path / "cache"),
        )
        with pytest.raises(Crash):
            run_pseudolabel(req, predictor=predictor(scene, crash_after=3))
        assert len(storage.list_prefix(f"{root}/out/pseudo.parts")) == 3
        again = predictor(scene)
        summary = run_pseudolabel(req, predictor=again)
        assert len(again.windows) == 1 and summary["ortho"] == f"{root}/ortho.tif"
        listed = storage.list_prefix(f"{root}/out")
        assert listed == [f"{root}/out/pseudo.gpkg", f"{root}/out/pseudo.summary.json"]
        labels = gpd.read_file(storage.fetch(f"{root}/out/pseudo.gpkg", tmp_path / "cache2"))
        assert len(labels) == summary["segments_labeled"] > 0
