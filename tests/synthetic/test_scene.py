"""The synthetic forest scene: file formats, internal consistency, realistic errors, determinism."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from rasterio import features
from rasterio.enums import Compression

from crownsam.common.errors import InputError
from crownsam.synthetic import ScenePaths, generate_scene
from crownsam.synthetic.scene import scene_layout

FILES = {"ortho.tif", "chm.tif", "truth.gpkg", "manual.gpkg", "test_area.gpkg", "coarse.gpkg"}
ERRORS = {"none", "dilated", "eroded", "offset", "merged", "split", "false"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> ScenePaths:
    return generate_scene(tmp_path_factory.mktemp("scene1024") / "out", size=1024, seed=0)


@pytest.fixture(scope="module")
def scene2048(tmp_path_factory: pytest.TempPathFactory) -> ScenePaths:
    return generate_scene(tmp_path_factory.mktemp("scene2048"), size=2048, seed=0)


@pytest.fixture(scope="module")
def ortho(scene: ScenePaths) -> np.ndarray:
    with rasterio.open(scene.ortho) as src:
        return src.read()


@pytest.fixture(scope="module")
def truth(scene: ScenePaths) -> gpd.GeoDataFrame:
    return gpd.read_file(scene.truth)


def _burn(geoms: object, scene: ScenePaths, values: object = None) -> np.ndarray:
    with rasterio.open(scene.ortho) as src:
        shapes = zip(geoms, values, strict=True) if values is not None else ((g, 1) for g in geoms)
        return features.rasterize(shapes, out_shape=src.shape, transform=src.transform, dtype="int32")


def _ndvi(ortho: np.ndarray) -> np.ndarray:
    red, nir = ortho[2].astype(np.float64), ortho[3].astype(np.float64)
    return np.where(nir + red > 0, (nir - red) / np.maximum(nir + red, 1.0), 0.0)


def _best_iou(geom: shapely.Geometry, others: gpd.GeoSeries, index: shapely.STRtree) -> float:
    cands = others.values[index.query(geom)]
    return max((geom.intersection(o).area / geom.union(o).area for o in cands), default=0.0)


def test_files_exist_and_open(scene: ScenePaths) -> None:
    assert scene.root.is_dir()
    assert {p.name for p in scene.root.iterdir()} == FILES  # no temporary leftovers
    for path in (scene.ortho, scene.chm):
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 3067
    for path in (scene.truth, scene.manual, scene.test_area, scene.coarse):
        frame = gpd.read_file(path)
        assert frame.crs.to_epsg() == 3067
        assert len(frame) >= 1


def test_ortho_profile(scene: ScenePaths) -> None:
    with rasterio.open(scene.ortho) as src:
        assert (src.count, src.width, src.height) == (6, 1024, 1024)
        assert set(src.dtypes) == {"uint16"}
        assert src.descriptions == ("blue", "green", "red", "nir", "red_edge", "thermal")
        assert src.crs.to_epsg() == 3067
        assert src.res == pytest.approx((0.025, 0.025))
        assert src.transform.b == 0 and src.transform.d == 0 and src.transform.e < 0  # north-up
        assert abs(src.bounds.left - 385000) < 1000 and abs(src.bounds.top - 6672000) < 1000
        assert src.profile["tiled"] and set(src.block_shapes) == {(256, 256)}
        assert src.compression == Compression.deflate
        assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
        assert src.nodata == 0


def test_nodata_strip_on_right_edge_only(ortho: np.ndarray) -> None:
    nodata = (ortho == 0).all(axis=0)
    assert ((ortho == 0).any(axis=0) == nodata).all()  # a pixel is either all-zero or has no zero band
    assert 0.015 < nodata.mean() < 0.05
    first = np.argmax(nodata, axis=1)
    cols = np.arange(ortho.shape[2])
    assert nodata[:, -1].all()
    assert (nodata == (cols[None, :] >= first[:, None])).all()  # each row: data, then nodata to the edge
    assert first.max() - first.min() >= 2  # the edge is ragged, not a straight line
    assert ortho[:, ~nodata].max() < 15000


def test_vegetation_index_and_thermal(scene: ScenePaths, ortho: np.ndarray, truth: gpd.GeoDataFrame) -> None:
    layout = scene_layout(1024, 0)
    crowns = _burn(truth.geometry, scene) > 0
    road = (_burn([layout.road], scene) > 0) & ~crowns & (ortho[0] > 0)
    roofs = (_burn([r.polygon for r in layout.roofs], scene) > 0) & ~crowns & (ortho[0] > 0)
    assert road.sum() > 1000 and roofs.sum() > 1000
    ndvi = _ndvi(ortho)
    assert np.median(ndvi[crowns]) > 0.75
    assert np.median(ndvi[crowns]) > np.median(ndvi[road]) + 0.5
    thermal = ortho[5].astype(np.float64)
    assert thermal[crowns].mean() < thermal[road].mean() and thermal[crowns].mean() < thermal[roofs].mean()


def test_crowns_textured_and_species_differ(
    ortho: np.ndarray, truth: gpd.GeoDataFrame, scene: ScenePaths
) -> None:
    label = _burn(truth.geometry, scene, truth.tree_id)
    nir = ortho[3].astype(np.float64)
    birch = np.isin(label, truth.tree_id[truth.species == "birch"])
    conifer = np.isin(label, truth.tree_id[truth.species != "birch"])
    assert nir[birch].mean() > 1.2 * nir[conifer].mean()  # broadleaf brighter
    for tid in truth.tree_id[:10]:
        values = nir[label == tid]
        assert values.std() / values.mean() > 0.1  # textured and shaded, not flat


def test_truth_polygons_valid_irregular_and_disjoint(truth: gpd.GeoDataFrame) -> None:
    assert list(truth.columns) == ["tree_id", "height_m", "species", "area_m2", "geometry"]
    assert len(truth) >= 10
    assert list(truth.tree_id) == list(range(1, len(truth) + 1))
    assert truth.is_valid.all() and (truth.geom_type == "Polygon").all()
    assert truth.height_m.between(5, 30).all()
    assert set(truth.species) <= {"spruce", "pine", "birch"}
    assert np.allclose(truth.area_m2, truth.area, atol=1e-3)
    assert (truth.area >= 0.5).all()
    roundness = 4 * np.pi * truth.area / truth.length**2
    assert roundness.median() < 0.9  # star-shaped outlines, not circles
    index = shapely.STRtree(truth.geometry.values)
    left, right = index.query(truth.geometry.values, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(
        shapely.intersection(truth.geometry.values[left[pairs]], truth.geometry.values[right[pairs]])
    )
    assert overlap.sum() < 1e-6
    assert pairs.sum() > 0  # crowns do touch


def test_truth_matches_crown_pixels(scene: ScenePaths, ortho: np.ndarray, truth: gpd.GeoDataFrame) -> None:
    crowns = _burn(truth.geometry, scene) > 0
    mask = (_ndvi(ortho) > 0.68) & (ortho[0] > 0)
    iou = (crowns & mask).sum() / (crowns | mask).sum()
    assert iou > 0.99


def test_manual_crowns_in_test_area(scene: ScenePaths, truth: gpd.GeoDataFrame, ortho: np.ndarray) -> None:
    manual = gpd.read_file(scene.manual)
    area = gpd.read_file(scene.test_area)
    assert len(area) == 1 and area.geometry[0].geom_type == "Polygon"
    assert 15 <= len(manual) <= 30  # about n_manual = 25
    merged = manual.merge(truth, on="tree_id", suffixes=("", "_truth"))
    assert len(merged) == len(manual)
    assert (merged.geometry.values == merged.geometry_truth.values).all()
    assert manual.centroid.within(area.geometry[0]).all()
    inside = truth.centroid.within(area.geometry[0])
    assert set(truth.tree_id[inside]) == set(manual.tree_id)
    with rasterio.open(scene.ortho) as src:
        col = (area.total_bounds[2] - src.bounds.left) / src.res[0]
    first_nodata = np.argmax((ortho == 0).all(axis=0), axis=1).min()
    assert col < first_nodata - 20  # clear of the nodata edge


def test_coarse_segments_realistic(scene2048: ScenePaths) -> None:
    truth = gpd.read_file(scene2048.truth)
    coarse = gpd.read_file(scene2048.coarse)
    assert list(coarse.columns) == ["segment_id", "source_tree_ids", "error", "geometry"]
    assert 100 < len(truth) < 250
    assert list(coarse.segment_id) == list(range(1, len(coarse) + 1))
    assert coarse.is_valid.all() and (coarse.geom_type == "Polygon").all()
    assert set(coarse.error) == ERRORS
    sources = coarse.source_tree_ids.str.split(",")
    assert (coarse.source_tree_ids[coarse.error == "false"] == "").all()
    real = coarse[coarse.error != "false"]
    assert all(int(s) in set(truth.tree_id) for ids in sources[real.index] for s in ids)
    assert (sources[coarse.error == "merged"].str.len() == 2).all()
    assert (
        real.source_tree_ids.value_counts()[lambda c: c > 1].index.isin(
            coarse.source_tree_ids[coarse.error == "split"]
        )
    ).all()
    covered = {int(s) for ids in sources[real.index] for s in ids}
    assert 0.02 < 1 - len(covered) / len(truth) < 0.12  # some trees are missing
    # blocky: vertices on the 0.2 m CHM grid
    xy = shapely.get_coordinates(coarse.geometry.values)
    assert np.allclose(np.round(xy / 0.2) * 0.2, xy, atol=1e-6)
    index = shapely.STRtree(truth.geometry.values)
    ious = np.array([_best_iou(g, truth.geometry, index) for g in real.geometry])
    assert 0.45 < ious.mean() < 0.9
    assert np.median(ious[real.error.values == "none"]) > 0.8  # unaltered crowns only lose their smooth edge


def test_chm_matches_crowns(scene: ScenePaths, truth: gpd.GeoDataFrame, ortho: np.ndarray) -> None:
    with rasterio.open(scene.chm) as src:
        assert src.res == pytest.approx((0.2, 0.2))
        assert src.dtypes == ("float32",) and src.nodata == -9999 and src.crs.to_epsg() == 3067
        with rasterio.open(scene.ortho) as ortho_src:
            assert src.bounds == ortho_src.bounds
        chm = src.read(1)
        transform = src.transform
    nodata = chm == -9999
    assert 0.01 < nodata.mean() < 0.06 and nodata[:, -1].all() and not nodata[:, 0].any()
    ortho_nodata = (ortho == 0).all(axis=0).reshape(128, 8, 128, 8).mean(axis=(1, 3))
    assert (ortho_nodata[nodata] > 0.4).all() and (ortho_nodata[~nodata] < 0.6).all()
    errors = []
    for geom, height in zip(truth.geometry, truth.height_m, strict=True):
        cells = features.rasterize([(geom.buffer(-0.3), 1)], out_shape=chm.shape, transform=transform) > 0
        if cells.any():
            errors.append(float(chm[cells].max()) - height)
    errors = np.array(errors)
    assert np.median(np.abs(errors)) < 0.5
    assert np.mean(np.abs(errors) < 1.0) > 0.8
    assert errors.max() < 1.0
    ground = features.rasterize(
        [(g, 1) for g in truth.geometry.buffer(0.5)], out_shape=chm.shape, transform=transform
    )
    assert np.median(chm[(ground == 0) & ~nodata]) < 0.5


def _frames(paths: ScenePaths) -> dict[str, pd.DataFrame]:
    out = {}
    for name in ("truth", "manual", "test_area", "coarse"):
        frame = gpd.read_file(getattr(paths, name))
        out[name] = pd.DataFrame(frame.drop(columns="geometry")).assign(wkb=frame.geometry.to_wkb())
    return out


def _pixels(paths: ScenePaths) -> np.ndarray:
    with rasterio.open(paths.ortho) as src:
        return src.read()


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_scene(tmp_path / "a", size=512, seed=7, n_manual=5)
    b = generate_scene(tmp_path / "b", size=512, seed=7, n_manual=5)
    c = generate_scene(tmp_path / "c", size=512, seed=8, n_manual=5)
    fa, fb, fc = _frames(a), _frames(b), _frames(c)
    for name in fa:
        pd.testing.assert_frame_equal(fa[name], fb[name])
    assert np.array_equal(_pixels(a), _pixels(b))
    with rasterio.open(a.chm) as sa, rasterio.open(b.chm) as sb:
        assert np.array_equal(sa.read(), sb.read())
    assert not fa["truth"].equals(fc["truth"])
    assert not np.array_equal(_pixels(a), _pixels(c))


def test_tiny_scene_has_a_manual_crown(tmp_path: Path) -> None:
    paths = generate_scene(tmp_path, size=256, seed=3)
    assert len(gpd.read_file(paths.manual)) >= 1


@pytest.mark.parametrize("size", [0, -5, 100, 255])
def test_bad_size_raises_input_error(tmp_path: Path, size: int) -> None:
    with pytest.raises(InputError, match="size"):
        generate_scene(tmp_path, size=size)


def test_interrupted_run_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> np.ndarray:
        raise RuntimeError("interrupted")

    monkeypatch.setattr("crownsam.synthetic.scene.render_ortho", boom)
    with pytest.raises(RuntimeError):
        generate_scene(tmp_path, size=256, seed=0)
    assert {p.name for p in tmp_path.iterdir()} == {"chm.tif"}  # written before; nothing half-written
