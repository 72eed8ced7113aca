"""The pseudo-classes KFP component: its parameters are the library's (names and defaults), and it runs as
a real task on KFP's local runner with a label artifact folder as input."""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations.
import dataclasses
import shutil
from pathlib import Path

import geopandas as gpd
from kfp import dsl, local

from crownsam.classes.api import ClassesParams
from crownsam.classes.component import pseudo_classes_op

ARTIFACTS = {"ortho_uri", "ortho_fingerprint", "labels", "classed", "report", "metrics"}


def test_component_parameters_are_the_dataclass_fields_with_their_defaults() -> None:
    inputs = pseudo_classes_op.component_spec.inputs
    scalars = {name: spec.default for name, spec in inputs.items() if name not in ARTIFACTS}
    assert scalars == ClassesParams.pipeline_defaults()
    assert {f.pipeline_name for f in ClassesParams.pipeline_fields()} == set(scalars)


def test_from_pipeline_round_trips_every_field() -> None:
    p = ClassesParams(
        k=4, features="both", band_names=("blue", "-", "red"), percentiles=(25.0,), untrained=True
    )
    assert ClassesParams.from_pipeline(**p.to_pipeline()) == p
    assert dataclasses.replace(p, k=None).to_pipeline()["k"] == 0


def test_component_runs_as_a_kfp_task(small_scene, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copyfile(small_scene.truth, labels / "pseudolabels.gpkg")  # a label artifact is a folder

    @dsl.pipeline
    def one_step(labels_dir: str) -> None:
        imported = dsl.importer(artifact_uri=labels_dir, artifact_class=dsl.Dataset)
        pseudo_classes_op(
            ortho_uri=str(small_scene.ortho),
            ortho_fingerprint="x",
            labels=imported.output,
            k=2,
            indices="ndvi,gcc",
        )

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    one_step(labels_dir=str(labels))
    classed = next((tmp_path / "kfp").rglob("pseudo_classes.gpkg"))
    frame = gpd.read_file(classed)
    truth = gpd.read_file(small_scene.truth)
    assert len(frame) == len(truth) and set(frame["pseudo_class"]) == {0, 1}
    assert "f_ndvi" in frame and "f_ndre" not in frame  # the component's indices reached the library
    assert (classed.parent / "pseudo_classes.centres.json").exists()
    report = [p for p in (tmp_path / "kfp").rglob("report") if p.is_file()]
    assert report and report[0].read_text().startswith("<!DOCTYPE html>")
