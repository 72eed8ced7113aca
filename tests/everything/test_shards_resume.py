"""Shards and resume: two shards merged equal one run; a crashed run resumes its finished tiles."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import rasterio

from crownsam.common.errors import InputError
from crownsam.everything.api import EverythingRequest, merge_everything, run_segment_everything
from crownsam.everything.known_answer import KnownAnswerGenerator
from crownsam.everything.params import EverythingParams
from crownsam.everything.tiles import Tile
from crownsam.synthetic import generate_scene

PARAMS = EverythingParams(tile=512, padding=64, points_per_side=8, passes=2)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate_scene(tmp_path_factory.mktemp("shards-scene"), size=1024, seed=5)


def generator(scene, params: EverythingParams = PARAMS) -> KnownAnswerGenerator:
    with rasterio.open(scene.ortho) as src:
        return KnownAnswerGenerator(gpd.read_file(scene.truth), src.transform, params)


def request(scene, out: Path, **kw) -> EverythingRequest:
    return EverythingRequest(
        ortho=str(scene.ortho), out=str(out), params=kw.pop("params", PARAMS), progress=False, **kw
    )


def same_objects(a: Path, b: Path) -> None:
    fa, fb = gpd.read_file(a), gpd.read_file(b)
    assert len(fa) == len(fb) > 10
    assert fa.drop(columns="geometry").equals(fb.drop(columns="geometry"))
    assert all(x.equals(y) for x, y in zip(fa.geometry, fb.geometry, strict=True))


@pytest.fixture(scope="module")
def single(scene, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("single") / "masks.gpkg"
    return out, run_segment_everything(request(scene, out), generator(scene))


def test_two_shards_merged_equal_one_run(scene, single, tmp_path: Path) -> None:
    out, s1 = single
    folders = [tmp_path / f"shard{i}" for i in range(2)]
    shard_summaries = [
        run_segment_everything(request(scene, f, shard=(i, 2)), generator(scene))
        for i, f in enumerate(folders)
    ]
    assert sorted(t for s in shard_summaries for t in s["per_tile"]) == sorted(s1["per_tile"])
    assert all(s["tiles_planned"] == 2 for s in shard_summaries)
    assert not Path(str(folders[0]) + ".parts").exists()  # finished tiles are cleared on success
    merged = tmp_path / "merged.gpkg"
    s = merge_everything([str(f) for f in folders], str(merged))
    same_objects(out, merged)
    assert s["coverage_per_pass"] == s1["coverage_per_pass"] and s["objects"] == s1["objects"]
    assert s["shards"] == 2 and s["tiles_processed"] == 4 and s["merge"]["pairs_merged"] > 0

    with pytest.raises(InputError, match=r"missing \[1\]"):
        merge_everything([str(folders[0])], str(tmp_path / "x.gpkg"))
    with pytest.raises(InputError, match=r"duplicated \[0\]"):
        merge_everything([str(folders[0]), str(folders[0])], str(tmp_path / "x.gpkg"))
    with pytest.raises(InputError, match="not a finished segment-everything shard"):
        merge_everything([str(folders[0]), str(tmp_path)], str(tmp_path / "x.gpkg"))
    other = tmp_path / "other1"
    run_segment_everything(
        request(scene, other, shard=(1, 2), params=PARAMS.replace(passes=1)), generator(scene)
    )
    with pytest.raises(InputError, match="different runs"):
        merge_everything([str(folders[0]), str(other)], str(tmp_path / "x.gpkg"))
    assert not (tmp_path / "x.gpkg").exists()


class Crashing(KnownAnswerGenerator):
    """Fails on its third tile, like a preempted pod."""

    tiles = 0

    def start_tile(self, tile: Tile) -> None:
        self.tiles += 1
        if self.tiles == 3:
            raise RuntimeError("preempted")
        super().start_tile(tile)


def test_a_crashed_run_resumes_its_finished_tiles(scene, single, tmp_path: Path) -> None:
    out = tmp_path / "masks.gpkg"
    with rasterio.open(scene.ortho) as src:
        crashing = Crashing(gpd.read_file(scene.truth), src.transform, PARAMS)
    with pytest.raises(RuntimeError, match="preempted"):
        run_segment_everything(request(scene, out), crashing)
    assert not out.exists()
    parts = Path(str(out).removesuffix(".gpkg") + ".parts")
    assert len(list(parts.rglob("*.json"))) == 2
    s = run_segment_everything(request(scene, out), generator(scene))
    assert (s["tiles_resumed"], s["tiles_processed"]) == (2, 2)
    same_objects(single[0], out)
    assert not parts.exists()
    # tiles saved by a run with other settings are not reused
    with pytest.raises(RuntimeError):
        run_segment_everything(
            request(scene, out), Crashing(gpd.read_file(scene.truth), crashing.model._transform, PARAMS)
        )
    s = run_segment_everything(request(scene, out, params=PARAMS.replace(passes=1)), generator(scene))
    assert s["tiles_resumed"] == 0
