"""The label half of the pipeline on KFP's local runner: real subprocess tasks, real components.

fingerprints -> coarse segments -> tile -> two SAM2 shards in parallel (untrained) -> merge -> missed
crowns (find_missed on: two segment-everything shards -> merge -> add-missed) -> Jaccard evaluation of
three label sets. Checks the fan-out/fan-in, artifacts passed between tasks, and that the merged result
equals what the library gives for the same plan. Runs under ``crownsam run``'s console (run.log, one line per
step, progress lines of the shards).
"""

# No `from __future__ import annotations`: KFP reads the pipeline annotations below.

import io
import json

import geopandas as gpd
import pytest
from kfp import dsl

from crownsam.common.component import fingerprint_op
from crownsam.evaluation.component import evaluate_labels_op
from crownsam.flights.component import prepare_segments_op
from crownsam.pipelines.console import RunConsole
from crownsam.pipelines.everything import find_missed_pipeline
from crownsam.pipelines.local import find_artifacts, run_pipeline, step_names
from crownsam.pipelines.pseudolabel import pseudolabel_pipeline
from crownsam.synthetic import generate_scene


@dsl.pipeline(name="labels-half")
def labels_half(ortho_uri: str, coarse_uri: str, manual_uri: str, test_area_uri: str, shards: int):
    fo = fingerprint_op(uri=ortho_uri).set_caching_options(False)
    fc = fingerprint_op(uri=coarse_uri).set_caching_options(False)
    seg = prepare_segments_op(
        coarse_uri=coarse_uri, coarse_fingerprint=fc.output, chm_uri="", chm_fingerprint=""
    )
    pseudo = pseudolabel_pipeline(
        ortho_uri=ortho_uri, ortho_fingerprint=fo.output, segments=seg.outputs["segments"], shards=shards,
        untrained=True,
    )  # fmt: skip
    # untrained SAM2 scores low: thresholds at 0 so that it gives objects for add-missed to judge
    completed = find_missed_pipeline(
        ortho_uri=ortho_uri, ortho_fingerprint=fo.output, labels=pseudo.output, find_missed=True,
        shards=shards, untrained=True, amg_passes=1, amg_points_per_side=4, amg_pred_iou_start=0.0,
        amg_pred_iou_floor=0.0, amg_stability_start=0.0, amg_stability_floor=0.0,
    )  # fmt: skip
    evaluate_labels_op(
        manual_uri=manual_uri, manual_fingerprint="", test_area_uri=test_area_uri, ortho_uri=ortho_uri,
        ortho_fingerprint=fo.output, coarse=seg.outputs["segments"], pseudo=pseudo.output,
        completed=completed.output, untrained=True, find_missed=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("half")
    scene = generate_scene(root / "flight", size=1536, seed=6)  # 4 windows -> 2 shards of 2 windows
    console = RunConsole(root, *step_names(labels_half.pipeline_spec), stream=io.StringIO())
    args = {"ortho_uri": str(scene.ortho), "coarse_uri": str(scene.coarse), "manual_uri": str(scene.manual),
            "test_area_uri": str(scene.test_area), "shards": 2}  # fmt: skip
    with console:  # run_pipeline restores print and the root logger before the per-test hygiene fixture
        run_pipeline(console, labels_half, args, root / "kfp")
    (run_dir,) = (root / "kfp").iterdir()
    return scene, run_dir, console


def test_shards_fan_out_and_merge(run) -> None:
    scene, run_dir, _ = run
    shard_dirs = sorted(run_dir.rglob("pseudolabel-op/labels"))
    assert len(shard_dirs) == 2
    parts = [json.loads((d / "pseudolabels.summary.json").read_text()) for d in shard_dirs]
    assert sorted(p["shard"][0] for p in parts) == [0, 1] and all(p["windows_processed"] == 2 for p in parts)
    merged_dir = find_artifacts(run_dir)["pseudolabels"]
    merged = json.loads((merged_dir / "pseudolabels.summary.json").read_text())
    labels = gpd.read_file(merged_dir / "pseudolabels.gpkg")
    coarse = gpd.read_file(scene.coarse)
    assert merged["windows_processed"] == 4 and merged["segments_labeled"] == len(labels)
    assert merged["segments_prompted"] + merged["skipped_by_reason"].get("outside_raster", 0) == len(coarse)
    assert labels["segment_id"].is_unique and labels["untrained"].all()
    # exclusive labels: each shard leaves its labels' claims; the merge resolves contests across windows
    assert all(p["exclusive"]["pending"] for p in parts)
    assert all((d / "pseudolabels.claims.json").is_file() for d in shard_dirs)
    assert merged["exclusive"]["pending"] is False and merged["overlap_in_output"]["pairs"] == 0
    assert not list(merged_dir.glob("*.claims.json"))
    assert not list(run_dir.rglob("*.parts"))  # resume state removed after success


def test_label_report_and_metrics(run) -> None:
    _, run_dir, _ = run
    report = find_artifacts(run_dir)["label_report"].read_text()
    assert "UNTRAINED SAM2" in report and "<img" in report
    metrics = json.loads((run_dir / "evaluate-labels-op" / "results" / "metrics.json").read_text())
    assert metrics["n_trees"] >= 20 and 0 <= metrics["jaccard_mean/coarse"] <= 1
    assert "paired_diff_mean/pseudo-coarse" in metrics


def test_missed_crowns_complete_the_pseudolabels_and_the_report_shows_them(run) -> None:
    _, run_dir, _ = run
    shards = sorted(run_dir.rglob("segment-everything-op/tiles"))
    assert len(shards) == 2 and all((d / "shard.json").is_file() for d in shards)
    masks = json.loads((run_dir / "merge-everything-op" / "masks" / "masks.summary.json").read_text())
    done_dir = run_dir / "add-missed-op" / "completed"
    summary = json.loads((done_dir / "completed.summary.json").read_text())
    completed = gpd.read_file(done_dir / "completed.gpkg")
    pseudo = gpd.read_file(find_artifacts(run_dir)["pseudolabels"] / "pseudolabels.gpkg")
    assert masks["objects"] == summary["objects"] > 0
    assert summary["added"] + sum(summary["dropped"].values()) == summary["objects"]
    assert len(completed) == len(pseudo) + summary["added"]
    assert (completed["label_source"] == "amg").sum() == summary["added"]
    metrics = json.loads((run_dir / "evaluate-labels-op" / "results" / "metrics.json").read_text())
    assert "jaccard_mean/completed" in metrics and "paired_diff_mean/completed-pseudo" in metrics


def test_console_shows_steps_and_logs_the_rest(run) -> None:
    """One line per step as it starts and ends, in display names; the shards' window counts arrive as
    progress; everything else is in run.log, with no warning of the runner or of GDAL left in it."""
    *_, console = run
    shown = console.stream.getvalue().splitlines()
    steps = {s.label: s for s in console.steps}
    # tasks without a display name keep the runner's name
    assert set(steps) == {
        "fingerprint-op",
        "fingerprint-op-2",
        "prepare-segments-op",
        "tile",
        "pseudolabel shard 1",
        "pseudolabel shard 2",
        "merge shards",
        "segment-everything shards",
        "segment-everything shard 1",
        "segment-everything shard 2",
        "merge segment-everything shards",
        "add missed crowns (if find_missed)",
        "evaluate-labels-op",
    }
    assert all(s.status == "SUCCESS" for s in console.steps)
    assert len(shown) == 2 * len(steps) and all(" start " in ln or " done " in ln for ln in shown)
    assert sum("pseudolabel shard" in ln for ln in shown) == 4
    for shard in ("pseudolabel shard 1", "pseudolabel shard 2"):
        assert steps[shard].progress == ("windows", 2, 2)
        assert "Executor" in steps[shard].log.read_text()  # its own log holds its output
    log = console.log_path.read_text()
    assert "Executing task" in log and "crownsam-progress" not in log and "\x1b[" not in log
    assert "non conformant file extension" not in log and "should be 'gpkg'" not in log
    assert "have no effect in the current local runner" not in log and "base image" not in log
