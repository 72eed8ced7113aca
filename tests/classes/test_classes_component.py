"""The pseudo-classes KFP component runs as a real task on KFP's local runner with a label artifact folder
as input: with the switch on it classifies, with it off the labels pass through unchanged. (Its defaults
and the arrival of its values are checked with every component in tests/pipelines/test_parameters.py.)"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotations.
import shutil
from pathlib import Path

import geopandas as gpd
import pytest
from kfp import dsl, local

from crownsam.classes.component import pseudo_classes_op
from crownsam.classes.params import ClassesParams, PipelineClasses
from crownsam.common.errors import CrownsamError
from crownsam.pipelines.local import task_temp_dir


def test_from_pipeline_round_trips_every_field() -> None:
    p = ClassesParams(features="both", band_names=("blue", "-", "red"), percentiles=(25.0,))
    assert ClassesParams.from_pipeline(**p.to_pipeline()) == p


@pytest.mark.parametrize(
    ("text", "enabled", "k"),
    [("off", False, None), ("auto", True, None), ("5", True, 5), (" Auto ", True, None)],
)
def test_the_pipeline_switch(text: str, enabled: bool, k: int | None) -> None:
    s = PipelineClasses(pseudo_classes=text)
    assert s.enabled is enabled and s.k() == k
    assert s.classes_params(ClassesParams()).k == k


@pytest.mark.parametrize("text", ["1", "0", "-3", "many", "2.5", ""])
def test_a_bad_switch_is_one_error_naming_it(text: str) -> None:
    with pytest.raises(CrownsamError, match=r"pseudo_classes: .* must be off, auto or a number K >= 2"):
        PipelineClasses(pseudo_classes=text)


def run_component(small_scene, tmp_path: Path, switch: str) -> Path:
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
            pseudo_classes=switch,
            indices="ndvi,gcc",
        )

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "kfp"),
        workspace_root=str(tmp_path / "ws"),  # else a /tmp/kfp-workspace-* that only a pipeline run removes
    )
    with task_temp_dir():  # the tasks' temporary folders go with it
        one_step(labels_dir=str(labels))
    return tmp_path / "kfp"


def test_component_runs_as_a_kfp_task(small_scene, tmp_path: Path) -> None:
    root = run_component(small_scene, tmp_path, "2")
    classed = next(root.rglob("pseudo_classes.gpkg"))
    frame = gpd.read_file(classed)
    truth = gpd.read_file(small_scene.truth)
    assert len(frame) == len(truth) and set(frame["pseudo_class"]) == {0, 1}
    assert "f_ndvi" in frame and "f_ndre" not in frame  # the component's indices reached the library
    assert (classed.parent / "pseudo_classes.centres.json").exists()
    report = [p for p in root.rglob("report") if p.is_file()]
    assert report and report[0].read_text().startswith("<!DOCTYPE html>")


def test_switched_off_the_labels_pass_through_unchanged(small_scene, tmp_path: Path) -> None:
    root = run_component(small_scene, tmp_path, "off")
    assert not list(root.rglob("pseudo_classes.gpkg"))
    (passed,) = [p for p in root.rglob("pseudolabels.gpkg") if "labels" not in p.parent.name]
    assert passed.read_bytes() == small_scene.truth.read_bytes()
    report = next(p for p in root.rglob("report") if p.is_file()).read_text()
    assert "Pseudo-classes are off" in report
