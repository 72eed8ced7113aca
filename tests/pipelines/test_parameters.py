"""Each parameter is defined once, in its step's dataclass: the KFP components and pipelines restate the
names and defaults (KFP reads them from the function signatures), and these tests hold them to it.

* Defaults agree: every component and pipeline parameter named after a dataclass field has that field's
  default (as a KFP scalar); every other parameter is an input or an identity listed in ``NOT_SETTINGS``.
* Values arrive: each component's ``python_func`` is called with non-default values, and the parameter
  object it hands to its library entry point must equal the one built from those values. The library
  entry point is replaced by a recorder for this, which stops the call (``Stop``): this checks only the
  thin layer between KFP and the library (the historical bug: a component that took ``val_block`` and
  never passed it on); each library call is tested for real in its step's own tests.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from crownsam.coco.component import export_coco_op
from crownsam.coco.params import ExportParams
from crownsam.common.component import fingerprint_op
from crownsam.common.params import Params
from crownsam.comparison.component import compare_op
from crownsam.comparison.registry import REGISTERED_MODEL
from crownsam.evaluation.component import evaluate_labels_op
from crownsam.evaluation.params import EvaluateParams
from crownsam.everything.component import add_missed_op, merge_everything_op, segment_everything_op
from crownsam.everything.params import AddMissedParams, EverythingParams
from crownsam.flights.component import prepare_segments_op
from crownsam.flights.settings import RetrainSettings
from crownsam.pipelines.crownsam_pipeline import crownsam_pipeline
from crownsam.pipelines.pseudolabel import pseudolabel_pipeline
from crownsam.pipelines.retrain import CLUSTER_TRACKING_URI, retrain_op, retraining_pipeline, scan_flights_op
from crownsam.pseudolabel.component import merge_labels_op, pseudolabel_op
from crownsam.pseudolabel.params import PseudolabelParams, Sam2Params
from crownsam.tiling.component import tile_op
from crownsam.tiling.params import TileParams
from crownsam.training.component import evaluate_model_op, train_op
from crownsam.training.config import TrainConfig

# Parameters that are not settings: inputs, fingerprints (cache keys), identities and switches of a run.
NOT_SETTINGS = {
    "ortho_uri",
    "coarse_uri",
    "chm_uri",
    "manual_uri",
    "test_area_uri",
    "uri",
    "root",
    "flight_id",
    "kfp_run_id",
    "label_source",
    "shard",
    "shards_of",
    "ortho_fingerprint",
    "coarse_fingerprint",
    "chm_fingerprint",
    "manual_fingerprint",
}
# Defaults that differ from the dataclass on purpose, with the reason.
PIPELINE_EXCEPTIONS = {
    (
        "crownsam-retraining",
        "tracking_uri",
    ): "the retraining runs on the cluster: its default is the in-cluster MLflow service",
}
SETTINGS_CLASSES: tuple[type[Params], ...] = (
    TileParams,
    Sam2Params,
    PseudolabelParams,
    ExportParams,
    EvaluateParams,
    EverythingParams,
    AddMissedParams,
)


def defaults_of(classes: tuple[type[Params], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cls in classes:
        out |= cls.pipeline_defaults()
    return out


ALL_DEFAULTS = (
    defaults_of(SETTINGS_CLASSES)
    | TrainConfig(coco_dir="x", out_dir="x").to_pipeline()
    | {"registered_model_name": REGISTERED_MODEL}
)


def scalar_defaults(func: Callable) -> dict[str, Any]:
    return {
        n: p.default
        for n, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


COMPONENTS = [
    segment_everything_op,
    merge_everything_op,
    add_missed_op,
    fingerprint_op,
    prepare_segments_op,
    tile_op,
    pseudolabel_op,
    merge_labels_op,
    evaluate_labels_op,
    export_coco_op,
    train_op,
    evaluate_model_op,
    compare_op,
    scan_flights_op,
    retrain_op,
]


@pytest.mark.parametrize("op", COMPONENTS, ids=lambda op: op.name)
def test_component_defaults_are_the_dataclass_defaults(op) -> None:
    defaults = scalar_defaults(op.python_func)
    for name, value in defaults.items():
        if name in NOT_SETTINGS:
            continue
        assert name in ALL_DEFAULTS, f"{op.name}({name}): not a field of a step's parameters"
        assert value == ALL_DEFAULTS[name], (op.name, name, value, ALL_DEFAULTS[name])


@pytest.mark.parametrize(
    "pipeline",
    [crownsam_pipeline, pseudolabel_pipeline, retraining_pipeline],
    ids=lambda p: p.name,
)
def test_pipeline_defaults_are_the_dataclass_defaults(pipeline) -> None:
    expected = ALL_DEFAULTS | (RetrainSettings.pipeline_defaults() if pipeline is retraining_pipeline else {})
    for name, spec in (pipeline.component_spec.inputs or {}).items():
        if spec.type not in ("String", "Integer", "Float", "Boolean") or name in NOT_SETTINGS:
            continue  # artifacts, inputs and identities
        if spec.default is None:
            assert name in NOT_SETTINGS, f"{pipeline.name}: required parameter {name} is not an input"
            continue
        if (pipeline.name, name) in PIPELINE_EXCEPTIONS:
            assert spec.default == CLUSTER_TRACKING_URI
            continue
        assert name in expected, f"{pipeline.name}({name}): not a field of a step's parameters"
        assert spec.default == expected[name], (pipeline.name, name, spec.default, expected[name])


def test_the_retraining_pipeline_takes_every_retraining_setting() -> None:
    inputs = set(retraining_pipeline.component_spec.inputs or {})
    assert inputs == set(RetrainSettings.pipeline_defaults()) | {"root"}


# ------------------------------------------------------------------------------------- values arrive


class Stop(Exception):
    """Raised by the recorder once it has the library call's arguments."""


@dataclass
class Arrival:
    """One component: the library entry point it calls (module, name), how to pick the parameters out of
    that call, and the non-default values to give it."""

    op: Any
    target: tuple[str, str]
    pick: Callable[[inspect.BoundArguments], Any]
    values: dict[str, Any]
    expected: Callable[[dict[str, Any]], Any]
    artifacts: dict[str, str] = field(default_factory=dict)  # parameter -> artifact kind


def art(kind: str, path: Path) -> Any:
    cls = {"dataset": Dataset, "model": Model, "metrics": Metrics, "artifact": Artifact}[kind]
    return cls(name=path.name, uri=str(path), metadata={})


ARRIVALS = [
    Arrival(
        segment_everything_op,
        ("crownsam.everything.api", "segment_everything_shard_artifact"),
        lambda b: (b.arguments["sam2"], b.arguments["params"]),
        {
            "sam2_model": "sam2.1_hiera_s",
            "sam2_checkpoint": "gs://b/w.pt",
            "untrained": False,
            "amg_tile": 512,
            "amg_padding": 64,
            "amg_passes": 2,
            "amg_pred_iou_start": 0.9,
            "amg_pred_iou_step": 0.1,
            "amg_pred_iou_floor": 0.5,
            "amg_stability_start": 0.9,
            "amg_stability_step": 0.1,
            "amg_stability_floor": 0.5,
            "amg_min_gain": 0.01,
            "amg_target_coverage": 0.9,
            "amg_max_overlap": 0.4,
            "amg_min_mask_px": 50,
            "amg_points_per_side": 16,
            "amg_points_per_batch": 32,
            "amg_box_nms_thresh": 0.6,
            "rgb_bands": "1,2,3",
        },
        lambda v: (
            Sam2Params.from_pipeline(**{k: v[k] for k in ("sam2_model", "sam2_checkpoint", "untrained")}),
            EverythingParams.from_pipeline(
                **{k: x for k, x in v.items() if k.startswith("amg_") or k == "rgb_bands"}
            ),
        ),
    ),
    Arrival(
        add_missed_op,
        ("crownsam.everything.add_missed", "add_missed_artifact"),
        lambda b: b.arguments["params"],
        {
            "missed_max_overlap": 0.5,
            "missed_min_area": 0.5,
            "missed_max_area": 90.0,
            "missed_min_compactness": 0.2,
            "missed_min_ndvi": 0.3,
            "missed_min_height": 1.0,
            "red_band": 2,
            "nir_band": 5,
            "missed_existing_source": "coarse",
        },
        lambda v: AddMissedParams.from_pipeline(**v),
    ),
    Arrival(
        tile_op,
        ("crownsam.tiling.plan", "tile_files"),
        lambda b: b.arguments["tile"],
        {"shards": 7, "rgb_bands": "1,2,3"},
        lambda v: TileParams.from_pipeline(**v),
    ),
    Arrival(
        pseudolabel_op,
        ("crownsam.pseudolabel.api", "pseudolabel_shard_artifact"),
        lambda b: b.arguments["sam2"],
        {"sam2_model": "sam2.1_hiera_s", "sam2_checkpoint": "gs://b/w.pt", "untrained": False},
        lambda v: Sam2Params.from_pipeline(**v),
    ),
    Arrival(
        pseudolabel_op,
        ("crownsam.pseudolabel.api", "pseudolabel_shard_artifact"),
        lambda b: (b.arguments["params"], b.arguments["chm"]),
        {
            "min_ndvi": 0.3,
            "red_band": 3,
            "nir_band": 4,
            "prompt": "box+point",
            "negative_calibration": True,
            "exclusive": False,
            "fallback": False,
            "fallback_min_area_ratio": 0.3,
            "fallback_max_area_ratio": 3.0,
            "fallback_min_iou": 0.25,
            "fallback_min_score": 0.7,
            "chm_uri": "gs://b/chm.tif",
        },
        lambda v: (
            PseudolabelParams.from_pipeline(**{k: x for k, x in v.items() if k != "chm_uri"}),
            "gs://b/chm.tif",
        ),
    ),
    Arrival(
        export_coco_op,
        ("crownsam.coco.export", "export_coco"),
        lambda b: b.arguments["params"],
        {
            "chip": 512,
            "chip_overlap": 0.5,
            "rgb_bands": "1,2,3",
            "val_fraction": 0.3,
            "holdout_buffer_m": 2.5,
            "val_block": 2,
        },
        lambda v: ExportParams.from_pipeline(**v),
    ),
    Arrival(
        evaluate_labels_op,
        ("crownsam.evaluation.api", "evaluate_files"),
        lambda b: b.arguments["params"],
        {"rgb_bands": "4,3,2"},
        lambda v: EvaluateParams.from_pipeline(**v),
    ),
    Arrival(
        train_op,
        ("crownsam.training.train", "train"),
        lambda b: {
            f: getattr(b.arguments["cfg"], f)
            for f in (
                "epochs",
                "max_iters",
                "lr",
                "batch_size",
                "model_version",
                "weights",
                "tracking_uri",
                "experiment",
            )
        },
        {
            "epochs": 3,
            "max_iters": 9,
            "lr": 0.01,
            "batch_size": 4,
            "model_version": "v1",
            "init_weights": "gs://b/r50.pt",
            "mlflow_tracking_uri": "http://m:5000",
            "mlflow_experiment": "e",
        },
        lambda v: {
            "epochs": 3,
            "max_iters": 9,
            "lr": 0.01,
            "batch_size": 4,
            "model_version": "v1",
            "weights": "gs://b/r50.pt",
            "tracking_uri": "http://m:5000",
            "experiment": "e",
        },
    ),
    Arrival(
        evaluate_model_op,
        ("crownsam.training.api", "evaluate_model"),
        lambda b: b.arguments["tracking_uri"],
        {"mlflow_tracking_uri": "http://m:5000"},
        lambda v: "http://m:5000",
    ),
    Arrival(
        compare_op,
        ("crownsam.comparison.api", "compare_step"),
        lambda b: (b.arguments["register_name"], b.arguments["tracking_uri"]),
        {"registered_model_name": "other", "mlflow_tracking_uri": "http://m:5000"},
        lambda v: ("other", "http://m:5000"),
    ),
    Arrival(
        scan_flights_op,
        ("crownsam.flights.retrain", "scan"),
        lambda b: b.arguments["settings"],
        {"work_uri": "gs://b/w", "tracking_uri": "http://m:5000", "experiment": "e", "rgb_bands": "1,2,3"},
        lambda v: RetrainSettings.from_pipeline(**v),
    ),
    Arrival(
        retrain_op,
        ("crownsam.flights.retrain", "retrain"),
        lambda b: b.arguments["settings"],
        {
            "work_uri": "gs://b/w",
            "tracking_uri": "http://m:5000",
            "experiment": "e",
            "registered_model_name": "m",
            "sam2_model": "sam2.1_hiera_l",
            "sam2_checkpoint": "",
            "untrained": True,
            "rgb_bands": "1,2,3",
            "chip": 512,
            "chip_overlap": 0.5,
            "val_fraction": 0.3,
            "val_block": 2,
            "holdout_buffer_m": 2.5,
            "epochs": 3,
            "max_iters": 9,
            "lr": 0.01,
            "batch_size": 4,
            "model_version": "v1",
        },
        lambda v: RetrainSettings.from_pipeline(**v),
    ),
]


def call_component(a: Arrival, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call ``a.op.python_func`` with ``a.values`` (other parameters: placeholders) and return what the
    recorder saw of the library call."""
    import importlib

    module = importlib.import_module(a.target[0])
    real = getattr(module, a.target[1])
    seen: list[Any] = []

    def recorder(*args: Any, **kwargs: Any) -> Any:
        seen.append(a.pick(inspect.signature(real).bind(*args, **kwargs)))
        raise Stop

    monkeypatch.setattr(module, a.target[1], recorder)
    kwargs: dict[str, Any] = {}
    for name, p in inspect.signature(a.op.python_func).parameters.items():
        ann = str(p.annotation)
        if name in a.values:
            kwargs[name] = a.values[name]
        elif "Model" in ann:
            kwargs[name] = art("model", tmp_path / name)
        elif "Metrics" in ann:
            kwargs[name] = art("metrics", tmp_path / name)
        elif "Dataset" in ann:
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / "labels.gpkg").touch()
            kwargs[name] = art("dataset", tmp_path / name)
        elif "Artifact" in ann or "HTML" in ann or "Markdown" in ann:
            kwargs[name] = art("artifact", tmp_path / name)
        elif p.default is not inspect.Parameter.empty:
            continue
        else:
            kwargs[name] = {bool: False, int: 0, float: 0.0}.get(p.annotation, "x")
    with pytest.raises(Stop):
        a.op.python_func(**kwargs)
    (got,) = seen
    return got


@pytest.mark.parametrize("a", ARRIVALS, ids=lambda a: a.op.name)
def test_component_values_reach_the_library(a: Arrival, tmp_path: Path, monkeypatch) -> None:
    same = {"sam2_checkpoint", "untrained"}  # one of the two is at its default
    assert all(a.values[k] != ALL_DEFAULTS.get(k, object()) for k in a.values if k not in same)
    assert call_component(a, tmp_path, monkeypatch) == a.expected(a.values)


def test_a_component_that_drops_a_value_is_caught(tmp_path: Path, monkeypatch) -> None:
    """The historical bug, re-created: ``val_block`` taken but not passed on. The check above fails."""
    from crownsam.coco.params import ExportParams as P

    def export_coco_op_dropping(
        labels: Input[Dataset], coco: Output[Dataset], chip: int = 1024, val_block: int = 4
    ) -> None:
        from crownsam.coco import export

        export.export_coco("o", "l", coco.path, params=P.from_pipeline(chip=chip))

    broken = type("Op", (), {"python_func": staticmethod(export_coco_op_dropping), "name": "broken"})()
    a = Arrival(
        broken,
        ("crownsam.coco.export", "export_coco"),
        lambda b: b.arguments["params"],
        {"chip": 512, "val_block": 2},
        lambda v: P.from_pipeline(**v),
    )
    assert call_component(a, tmp_path, monkeypatch) != a.expected(a.values)


# ------------------------------------------------------------------------------ pipeline wiring arrives


def test_pseudolabel_settings_arrive_from_both_pipelines(tmp_path: Path) -> None:
    """Every pseudolabel setting (and the CHM) is a parameter of the main pipeline and of the pseudolabel
    sub-pipeline, and reaches the shard task under its own name; the main pipeline passes the flight's
    CHM and its fingerprint. Read from the compiled IR, so a parameter taken but not passed on fails."""
    import yaml
    from kfp import compiler

    names = [f.pipeline_name for f in PseudolabelParams.pipeline_fields()] + ["chm_uri", "chm_fingerprint"]
    assert {"min_ndvi", "prompt", "negative_calibration", "exclusive", "fallback"} <= set(names)
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(crownsam_pipeline, str(out))
    ir = yaml.safe_load(out.read_text())
    main = ir["root"]["dag"]["tasks"]["crownsam-pseudolabel"]["inputs"]["parameters"]
    shard = ir["components"]["comp-for-loop-1"]["dag"]["tasks"]["pseudolabel-op"]["inputs"]["parameters"]
    for name in names:
        if name != "chm_fingerprint":
            assert main[name] == {"componentInputParameter": name}, name
        assert shard[name] == {"componentInputParameter": f"pipelinechannel--{name}"}, name
    fp = main["chm_fingerprint"]["taskOutputParameter"]["producerTask"]
    fp_uri = ir["root"]["dag"]["tasks"][fp]["inputs"]["parameters"]["uri"]
    assert fp_uri == {"componentInputParameter": "chm_uri"}
    defaults = ir["root"]["inputDefinitions"]["parameters"]
    for name, value in PseudolabelParams.pipeline_defaults().items():
        assert defaults[name]["defaultValue"] == value, name
