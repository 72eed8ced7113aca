"""The KFP components' bodies (``python_func``) on real files: every step parameter reaches the library,
and the component defaults are the dataclass defaults. SAM2 is real and untrained (one tiny tile)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import geopandas as gpd
import pytest
from helpers import pixel_box, write_raster, write_segments
from kfp.dsl import Dataset, Metrics

from crownsam.everything.component import add_missed_op, merge_everything_op, segment_everything_op
from crownsam.everything.params import AddMissedParams, EverythingParams


@pytest.mark.parametrize(
    ("op", "cls"),
    [(segment_everything_op, EverythingParams), (add_missed_op, AddMissedParams)],
)
def test_component_defaults_are_the_dataclass_defaults(op, cls) -> None:
    params = inspect.signature(op.python_func).parameters
    expected = cls.pipeline_defaults()
    got = {k: params[k].default for k in expected}
    assert got == expected
    assert set(expected) <= set(params)


class Recorder(Metrics):
    def __init__(self, uri: str) -> None:
        super().__init__(name="metrics", uri=uri, metadata={})


def artifact(path: Path) -> Dataset:
    return Dataset(name=path.name, uri=str(path), metadata={})


SEGMENT = {  # every parameter away from its default (the model stays the smallest)
    "amg_tile": 256,
    "amg_padding": 16,
    "amg_passes": 1,
    "amg_pred_iou_start": 0.0,
    "amg_pred_iou_step": 0.1,
    "amg_pred_iou_floor": 0.0,
    "amg_stability_start": 0.0,
    "amg_stability_step": 0.2,
    "amg_stability_floor": 0.0,
    "amg_min_gain": 0.01,
    "amg_target_coverage": 0.98,
    "amg_max_overlap": 0.4,
    "amg_min_mask_px": 50,
    "amg_points_per_side": 3,
    "amg_points_per_batch": 8,
    "amg_box_nms_thresh": 0.6,
    "rgb_bands": "1,2,3",
    "sam2_model": "sam2.1_hiera_t",
}
MISSED = {
    "missed_max_overlap": 0.5,
    "missed_min_area": 0.01,
    "missed_max_area": 100.0,
    "missed_min_compactness": 0.1,
    "missed_min_ndvi": -1.0,
    "missed_min_height": 0.5,
    "red_band": 2,
    "nir_band": 5,
    "missed_existing_source": "coarse",
}


def test_shard_merge_and_add_missed_bodies_hand_every_parameter_on(tmp_path: Path) -> None:
    ortho = write_raster(tmp_path / "ortho.tif", width=200, height=180)
    tiles, masks, completed = tmp_path / "tiles", tmp_path / "masks", tmp_path / "completed"
    segment_everything_op.python_func(
        ortho_uri=str(ortho),
        ortho_fingerprint="1",
        shard=0,
        shards=1,
        tiles=artifact(tiles),
        sam2_checkpoint="",
        untrained=True,
        **SEGMENT,
    )
    shard = json.loads((tiles / "shard.json").read_text())
    own = {k: v for k, v in SEGMENT.items() if k != "sam2_model"}
    assert shard["params"] == EverythingParams.from_pipeline(**own).as_dict()
    assert shard["params"]["rgb_bands"] == [1, 2, 3] and shard["untrained"] is True
    assert not Path(str(tiles) + ".parts").exists()

    merge_metrics = Recorder(str(tmp_path / "m1"))
    merge_everything_op.python_func(parts=[artifact(tiles)], masks=artifact(masks), metrics=merge_metrics)
    assert sorted(p.name for p in masks.iterdir()) == ["masks.gpkg", "masks.summary.json"]
    assert merge_metrics.metadata["objects"] == len(gpd.read_file(masks / "masks.gpkg")) >= 1

    labels = tmp_path / "labels"
    labels.mkdir()
    write_segments(labels / "pseudolabels.gpkg", [pixel_box(0, 0, 10, 10)])
    metrics = Recorder(str(tmp_path / "m2"))
    add_missed_op.python_func(
        ortho_uri=str(ortho),
        ortho_fingerprint="1",
        labels=artifact(labels),
        masks=artifact(masks),
        completed=artifact(completed),
        metrics=metrics,
        chm_uri=str(ortho),
        **MISSED,
    )
    summary = json.loads((completed / "completed.summary.json").read_text())
    assert summary["params"] == AddMissedParams.from_pipeline(**MISSED).as_dict()
    assert summary["inputs"]["chm"] == str(ortho) and "WARNING" in summary
    assert metrics.metadata["added"] == summary["added"]
    result = gpd.read_file(completed / "completed.gpkg")
    assert (result.loc[result["label_source"] != "amg", "label_source"] == "coarse").all()


def test_the_three_components_wire_into_a_pipeline(tmp_path: Path) -> None:
    """Shards fanned out, collected into the merge, then add-missed: the types fit and it compiles."""
    from kfp import compiler, dsl

    def wiring(ortho_uri: str, labels_uri: str, shards: int = 2):
        labels = dsl.importer(artifact_uri=labels_uri, artifact_class=Dataset)
        with dsl.ParallelFor(items=[0, 1]) as shard:
            part = segment_everything_op(
                ortho_uri=ortho_uri, ortho_fingerprint="", shard=shard, shards=shards
            )
        merged = merge_everything_op(parts=dsl.Collected(part.outputs["tiles"]))
        add_missed_op(
            ortho_uri=ortho_uri, ortho_fingerprint="", labels=labels.output, masks=merged.outputs["masks"]
        )

    # this module postpones annotations; KFP needs the real types
    wiring.__annotations__ = {"ortho_uri": str, "labels_uri": str, "shards": int}
    out = tmp_path / "wiring.yaml"
    compiler.Compiler().compile(dsl.pipeline(name="everything-wiring")(wiring), str(out))
    text = out.read_text()
    assert "segment-everything-op" in text and "merge-everything-op" in text and "add-missed-op" in text
    assert "amg_points_per_side" in text and "missed_min_ndvi" in text
