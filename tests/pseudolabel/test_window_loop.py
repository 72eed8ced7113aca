"""The pseudolabel window loop as a pipeline (``--workers``, ``--window-batch``) gives the labels of the
sequential loop: the same rows in the same order, geometry for geometry, and the same claims."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import shapely

from crownsam.common.raster import BandWindow
from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.pseudolabel.api import PseudolabelRequest, claims_path, run_pseudolabel
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.predictor import KnownAnswerPredictor
from crownsam.synthetic import generate_scene
from crownsam.tiling.params import TileParams
from crownsam.tiling.plan import plan_from_files


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("scene"), size=1536, seed=5)


@pytest.fixture(scope="module")
def plan_file(scene, tmp_path_factory) -> Path:
    """Small windows (many of them, overlapping) so that the pipeline has something to overlap."""
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    plan_from_files(str(scene.ortho), str(scene.coarse), TileParams(window=512, stride=384))[0].save(path)
    return path


class StretchesOnDevice(KnownAnswerPredictor):
    """The known-answer predictor taking windows as read, as SAM2 on CUDA does (it stretches them on the
    device); records the type of each image it is given."""

    stretches_on_device = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.given: list[type] = []

    def set_image(self, image, window) -> None:
        self.given.append(type(image))
        super().set_image(image, window)


def run(
    scene,
    plan_file: Path,
    out: Path,
    loop: WindowLoopParams,
    shard: tuple[int, int] | None,
    predictor: type[KnownAnswerPredictor] = KnownAnswerPredictor,
) -> Path:
    truth = gpd.read_file(scene.truth)
    with rasterio.open(scene.ortho) as src:
        oracle = predictor(truth, src.transform)
    req = PseudolabelRequest(
        ortho=str(scene.ortho),
        segments=str(scene.coarse),
        out=str(out),
        plan=str(plan_file),
        shard=shard,
        progress=False,
        resume_dir="",
        params=PseudolabelParams(exclusive=True, fallback=True),
        loop=loop,
    )
    summary = run_pseudolabel(req, predictor=oracle)
    assert summary["window_loop"]["workers"] == loop.settings().workers
    if isinstance(oracle, StretchesOnDevice):
        assert oracle.given and set(oracle.given) == {BandWindow}
    return out


def assert_same_labels(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    assert len(a) == len(b) > 10
    assert a["segment_id"].tolist() == b["segment_id"].tolist()
    assert all(shapely.equals_exact(g, h, tolerance=0) for g, h in zip(a.geometry, b.geometry, strict=True))
    cols = [c for c in a.columns if c != "geometry"]
    assert a[cols].equals(b[cols])


@pytest.mark.parametrize("shard", [None, (0, 2)], ids=["whole", "shard"])
def test_pipeline_labels_equal_the_sequential_loop(scene, plan_file, tmp_path, shard) -> None:
    seq = run(scene, plan_file, tmp_path / "seq.gpkg", WindowLoopParams(workers=0), shard)
    expected = gpd.read_file(seq)
    for name, loop in [
        ("w2", WindowLoopParams(workers=2)),
        ("w1b3", WindowLoopParams(workers=1, window_batch=3)),  # no batch API here: one at a time
    ]:
        got = gpd.read_file(run(scene, plan_file, tmp_path / f"{name}.gpkg", loop, shard))
        assert_same_labels(got, expected)
        if shard:  # the claims merge-labels needs, too
            a = json.loads(Path(claims_path(str(tmp_path / f"{name}.gpkg"))).read_text())
            b = json.loads(Path(claims_path(str(seq))).read_text())
            assert a == b


def test_a_predictor_that_stretches_on_its_device_gets_windows_as_read(scene, plan_file, tmp_path) -> None:
    seq = gpd.read_file(run(scene, plan_file, tmp_path / "seq.gpkg", WindowLoopParams(workers=0), None))
    for workers in (0, 2):
        out = tmp_path / f"device{workers}.gpkg"
        got = run(scene, plan_file, out, WindowLoopParams(workers=workers), None, StretchesOnDevice)
        assert_same_labels(gpd.read_file(got), seq)


def test_the_comparison_catches_a_changed_label(scene, plan_file, tmp_path) -> None:
    """A one-pixel change in one label (or a swapped pair of rows) fails the comparison above."""
    labels = gpd.read_file(run(scene, plan_file, tmp_path / "seq.gpkg", WindowLoopParams(workers=0), None))
    moved = labels.copy()
    moved.loc[3, "geometry"] = shapely.affinity.translate(moved.geometry[3], 0.025, 0)
    with pytest.raises(AssertionError):
        assert_same_labels(moved, labels)
    swapped = labels.iloc[[1, 0, *range(2, len(labels))]].reset_index(drop=True)
    with pytest.raises(AssertionError):
        assert_same_labels(swapped, labels)


def test_segment_table_rows_are_the_segments() -> None:
    """The run's segment table (made once, indexed per window) holds each segment's geometry, pixel
    geometry, box and treetop by ``segment_id``, whatever the input order; a missing id is named."""
    import numpy as np
    from rasterio import Affine

    from crownsam.pseudolabel.run import TREETOP_X, TREETOP_Y, SegmentTable

    t = Affine(0.5, 0, 100.0, 0, -0.5, 200.0)
    seg = gpd.GeoDataFrame(
        {"segment_id": [7, 3, 5], TREETOP_X: [101.0, 102.0, 103.0], TREETOP_Y: [199.0, 198.0, 197.0]},
        geometry=[
            shapely.box(101, 190, 104, 195),
            shapely.box(100, 199, 101, 200),
            shapely.box(105, 180, 106, 181),
        ],
    )
    table = SegmentTable.of(seg, t)
    assert table.ids.tolist() == [3, 5, 7]
    rows = table.rows([7, 3])
    assert [g.equals(seg.geometry[i]) for g, i in zip(table.geoms[rows], [0, 1], strict=True)] == [True, True]
    assert table.bounds[rows].tolist() == [[2.0, 10.0, 8.0, 20.0], [0.0, 0.0, 2.0, 2.0]]
    assert table.treetops is not None and table.treetops[rows].tolist() == [[2.0, 2.0], [4.0, 4.0]]
    assert np.isnan(table.ndvi).all()
    with pytest.raises(KeyError, match="segment_id 4"):
        table.rows([3, 4])


class SeesTheBlockCache(KnownAnswerPredictor):
    """The known-answer predictor, recording GDAL's block cache size (bytes) whenever it is given a window,
    and the windows' offsets in the order given."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cache: set[int] = set()
        self.order: list[tuple[int, int]] = []

    def set_image(self, image, window) -> None:
        from rasterio._env import get_gdal_config

        self.cache.add(int(get_gdal_config("GDAL_CACHEMAX")))
        self.order.append((window.row_off, window.col_off))
        super().set_image(image, window)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_block_cache_holds_a_row_of_windows_during_the_loop(scene, plan_file, tmp_path, workers) -> None:
    """While the windows are read, GDAL's block cache is what one row of windows needs (not GDAL's default
    of 5 % of the RAM, which filled with blocks no window reads again); the size before comes back after."""
    from rasterio._env import get_gdal_config

    from crownsam.common.raster import window_rows_cache_mib
    from crownsam.tiling.plan import Plan

    before = int(get_gdal_config("GDAL_CACHEMAX"))
    truth = gpd.read_file(scene.truth)
    with rasterio.open(scene.ortho) as src:
        oracle = SeesTheBlockCache(truth, src.transform)
        want = int(window_rows_cache_mib(src, Plan.load(plan_file).window) * 2**20)
        bh, bw = src.block_shapes[0]
        whole = -(-src.height // bh) * bh * -(-src.width // bw) * bw * src.count * 2  # every block, uint16
    req = PseudolabelRequest(
        ortho=str(scene.ortho), segments=str(scene.coarse), out=str(tmp_path / "p.gpkg"),
        plan=str(plan_file), progress=False, resume_dir="", loop=WindowLoopParams(workers=workers),
    )  # fmt: skip
    run_pseudolabel(req, predictor=oracle)
    assert oracle.cache == {want} and 0 < want < whole < before
    assert int(get_gdal_config("GDAL_CACHEMAX")) == before


@pytest.mark.parametrize("workers", [0, 2])
def test_a_raster_too_wide_for_the_cache_is_read_in_strips(
    scene, plan_file, tmp_path, workers, monkeypatch
) -> None:
    """With a cache budget below one row of windows across the scene, windows are read in strips (each
    row by row), with the strip's cache; the labels and the claims are those of row-major order."""
    from crownsam.common import raster
    from crownsam.common.raster import strip_order, window_rows_cache_mib, window_strips
    from crownsam.tiling.plan import Plan

    plan = Plan.load(plan_file)
    rows = run(scene, plan_file, tmp_path / "rows.gpkg", WindowLoopParams(workers=workers), (0, 1))
    with rasterio.open(scene.ortho) as src:
        monkeypatch.setattr(raster, "WINDOW_CACHE_MIB", window_rows_cache_mib(src, plan.window) * 0.7)
        strip, mib = window_strips(src, plan.window, plan.stride)
        oracle = SeesTheBlockCache(gpd.read_file(scene.truth), src.transform)
    assert strip < plan.width
    req = PseudolabelRequest(
        ortho=str(scene.ortho), segments=str(scene.coarse), out=str(tmp_path / "strips.gpkg"),
        plan=str(plan_file), shard=(0, 1), progress=False, resume_dir="",
        params=PseudolabelParams(exclusive=True, fallback=True), loop=WindowLoopParams(workers=workers),
    )  # fmt: skip
    run_pseudolabel(req, predictor=oracle)
    offsets = [(w.row_off, w.col_off) for w in plan.windows]
    assert oracle.order == [offsets[i] for i in strip_order(offsets, strip)] != offsets
    assert oracle.cache == {int(mib * 2**20)}
    assert_same_labels(gpd.read_file(tmp_path / "strips.gpkg"), gpd.read_file(rows))
    a = json.loads(Path(claims_path(str(tmp_path / "strips.gpkg"))).read_text())
    b = json.loads(Path(claims_path(str(rows))).read_text())
    assert a == b and len(a["claims"]) > 10
