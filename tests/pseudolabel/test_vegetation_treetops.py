"""The vegetation filter (median NDVI per segment) and the treetops (columns, CHM, pole), before any model."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from rasterio import Affine

from crownsam.common.errors import InputError
from crownsam.common.raster import raster_info
from crownsam.pseudolabel.api import PseudolabelRequest, prepare
from crownsam.pseudolabel.params import PseudolabelParams
from crownsam.pseudolabel.run import NDVI, TREETOP_X, TREETOP_Y
from crownsam.pseudolabel.treetops import find_treetops
from crownsam.pseudolabel.vegetation import median_ndvi, ndvi_bands
from crownsam.synthetic import generate_scene
from crownsam.synthetic.scene import scene_layout

try:
    from ..helpers import CRS, GSD, ORIGIN, pixel_box, write_raster
except ImportError:  # tests/ collected without __init__.py files (rootdir-relative imports)
    from helpers import CRS, GSD, ORIGIN, pixel_box, write_raster


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """2048 px, seed 0: two houses, whose roofs carry false coarse segments, and ~200 tree segments."""
    return generate_scene(tmp_path_factory.mktemp("scene"), size=2048, seed=0)


def test_ndvi_filter_drops_roofs_and_keeps_trees(scene, tmp_path) -> None:
    coarse = gpd.read_file(scene.coarse)
    roofs = shapely.union_all([r.polygon for r in scene_layout(2048, 0).roofs])
    on_roof = coarse.geometry.intersection(roofs).area > 0.5 * coarse.area
    roof_ids = set(coarse.loc[on_roof & (coarse["error"] == "false"), "segment_id"])
    tree_ids = set(coarse.loc[coarse["error"] != "false", "segment_id"])
    assert len(roof_ids) == 2 and len(tree_ids) > 150

    req = PseudolabelRequest(
        ortho=str(scene.ortho),
        segments=str(scene.coarse),
        out=str(tmp_path / "x.gpkg"),
        params=PseudolabelParams(min_ndvi=0.3),
    )
    prep = prepare(req)  # no model: the filter runs before one is loaded
    dropped = {s["segment_id"]: s["ndvi"] for s in prep.plan.skipped if s["reason"] == "low_ndvi"}
    planned = {sid for w in prep.plan.windows for sid in w.segment_ids}
    assert roof_ids <= set(dropped), (roof_ids, dropped)
    assert len(tree_ids & planned) >= 0.99 * len(tree_ids)
    assert all(v < 0.3 for v in dropped.values())
    v = prep.summary["vegetation"]
    assert (v["red_band"], v["nir_band"]) == (3, 4)  # from the band descriptions
    assert v["dropped"] == len(dropped) and v["kept"] == len(planned)
    ndvi = prep.segments.set_index("segment_id")[NDVI]
    assert ndvi[sorted(tree_ids & planned)].min() > 0.6  # crowns: NDVI ~0.83
    assert not set(dropped) & planned


def test_median_ndvi_by_hand(tmp_path) -> None:
    """Red 1000 and NIR 3000 (NDVI 0.5) in the left half, NIR 1000 (NDVI 0) in the right half, one nodata
    pixel: a segment over 3 x 2 left and 1 x 2 right pixels has the median of {0.5 x 6, 0 x 2} = 0.5."""
    path = tmp_path / "r.tif"
    data = np.zeros((2, 4, 8), dtype="uint16")
    data[0] = 1000
    data[1, :, :4], data[1, :, 4:] = 3000, 1000
    data[:, 0, 7] = 0  # nodata
    profile = dict(driver="GTiff", width=8, height=4, count=2, dtype="uint16", crs=CRS, nodata=0)
    with rasterio.open(path, "w", transform=Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1]), **profile) as dst:
        dst.write(data)
    pix = [shapely.box(1, 1, 5, 3), shapely.box(6, 0, 8, 1), shapely.box(0.2, 0.2, 0.4, 0.4)]
    with rasterio.open(path) as src:
        got = median_ndvi(src, pix, 1, 2)
    assert got[0] == pytest.approx(0.5)
    assert got[1] == pytest.approx(0.0)  # (6, 0) valid, (7, 0) nodata
    assert np.isnan(got[2])  # holds no pixel centre


def test_bands_from_descriptions_or_options(tmp_path) -> None:
    plain = raster_info(write_raster(tmp_path / "plain.tif"))
    assert ndvi_bands(plain, 3, 4) == (3, 4)
    with pytest.raises(InputError, match=r"no band is described as red .*pass --red-band N"):
        ndvi_bands(plain, None, 4)
    with pytest.raises(InputError, match=r"no band is described as NIR .*pass --nir-band N"):
        ndvi_bands(plain, 3, None)
    with pytest.raises(InputError, match=r"--nir-band 9 out of range: the raster has bands 1\.\.6"):
        ndvi_bands(plain, 3, 9)
    named = write_raster(tmp_path / "named.tif")
    with rasterio.open(named, "r+") as dst:
        for i, d in enumerate(["Blue", "Green", "Red", "NIR", "Red edge", "thermal"], start=1):
            dst.set_band_description(i, d)
    assert ndvi_bands(raster_info(named), None, None) == (3, 4)  # "Red edge" is not red


# ---------------------------------------------------------------------------------------------- treetops


def segments(crs: str = CRS) -> gpd.GeoDataFrame:
    boxes = [pixel_box(100, 100, 160, 160), pixel_box(300, 200, 380, 260), pixel_box(10, 10, 10.4, 10.4)]
    g = gpd.GeoDataFrame({"segment_id": [1, 2, 3]}, geometry=boxes, crs=CRS)
    return g.to_crs(crs)


def test_treetops_from_columns_in_another_crs() -> None:
    seg = segments()
    tops = np.array([[p.x, p.y] for p in seg.geometry.centroid])
    wgs = seg.to_crs("EPSG:4326")
    moved = gpd.GeoSeries(gpd.points_from_xy(tops[:, 0], tops[:, 1]), crs=CRS).to_crs("EPSG:4326")
    wgs["treetop_x"], wgs["treetop_y"] = moved.x, moved.y
    back = wgs.to_crs(CRS)  # what read_segments gives: geometry reprojected, columns as in the file
    t = find_treetops(back, source="s.gpkg", file_crs=pyproj.CRS("EPSG:4326"), pixel_size=GSD)
    assert t.counts() == {"columns": 3}
    np.testing.assert_allclose(t.xy, tops, atol=1e-6)


def test_treetops_outside_their_segment_or_missing_are_errors() -> None:
    seg = segments()
    seg["treetop_x"] = [p.x for p in seg.geometry.centroid]
    seg["treetop_y"] = [p.y for p in seg.geometry.centroid]
    seg.loc[1, "treetop_x"] += 5.0  # 5 m east of a 2 m box
    with pytest.raises(
        InputError, match=r"s.gpkg: 1 treetop\(s\) lie outside their segment \(segment_id 2\)"
    ):
        find_treetops(seg, source="s.gpkg", file_crs=pyproj.CRS(CRS), pixel_size=GSD)
    seg.loc[1, "treetop_x"] = np.nan
    with pytest.raises(InputError, match="treetop_x/treetop_y missing for segment_id 2"):
        find_treetops(seg, source="s.gpkg", file_crs=pyproj.CRS(CRS), pixel_size=GSD)
    with pytest.raises(InputError, match="has treetop_y but not treetop_x"):
        find_treetops(
            seg.drop(columns="treetop_x"), source="s.gpkg", file_crs=pyproj.CRS(CRS), pixel_size=GSD
        )


def test_treetops_from_the_chm_or_the_pole(tmp_path) -> None:
    """CHM at 0.2 m (8 orthophoto pixels): the highest pixel whose centre lies in each segment; a
    segment holding no CHM pixel centre, or a run without a CHM, takes its pole of inaccessibility."""
    seg = segments()
    chm = np.zeros((100, 100), dtype="float32")
    chm[14, 15] = 20.0  # in segment 1 (ortho px 100..160 -> CHM px 12.5..20)
    chm[13, 18] = 20.0  # the same height, earlier in raster order: this one
    chm[30, 40] = 15.0  # in segment 2 (ortho cols 300..380 -> CHM 37.5..47.5, rows 25..32.5)
    chm[27, 45] = 9999.0  # nodata (the file's nodata value) never counts, however high
    path = tmp_path / "chm.tif"
    profile = dict(driver="GTiff", width=100, height=100, count=1, dtype="float32", crs=CRS, nodata=9999.0)
    t = Affine(0.2, 0, ORIGIN[0], 0, -0.2, ORIGIN[1])
    with rasterio.open(path, "w", transform=t, **profile) as dst:
        dst.write(chm[None])
    tops = find_treetops(seg, source="s", file_crs=pyproj.CRS(CRS), pixel_size=GSD, chm=str(path))
    assert tops.source.tolist() == ["chm", "chm", "pole"]
    np.testing.assert_allclose(tops.xy[0], t @ (18.5, 13.5))  # first maximum in raster order
    np.testing.assert_allclose(tops.xy[1], t @ (40.5, 30.5))
    assert seg.geometry.iloc[2].contains(shapely.Point(tops.xy[2]))
    assert tops.counts() == {"chm": 2, "pole": 1}
    none = find_treetops(seg, source="s", file_crs=pyproj.CRS(CRS), pixel_size=GSD)
    assert none.counts() == {"pole": 3}
    assert all(g.contains(shapely.Point(xy)) for g, xy in zip(seg.geometry, none.xy, strict=True))


def test_prepare_adds_treetops_only_when_prompting_uses_them(tmp_path) -> None:
    ortho = write_raster(tmp_path / "o.tif")
    seg = segments().iloc[:2]
    seg.to_file(tmp_path / "s.gpkg", driver="GPKG")
    base = dict(ortho=str(ortho), segments=str(tmp_path / "s.gpkg"), out=str(tmp_path / "x.gpkg"))
    assert TREETOP_X not in prepare(PseudolabelRequest(**base)).segments.columns
    for params in (PseudolabelParams(prompt="point"), PseudolabelParams(negative_calibration=True)):
        prep = prepare(PseudolabelRequest(**base, params=params))
        assert prep.summary["treetop_sources"] == {"pole": 2}
        assert prep.segments[[TREETOP_X, TREETOP_Y]].notna().all().all()
