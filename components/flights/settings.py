"""What a retraining takes besides the catalog root: one :class:`RetrainSettings`, made of the step
parameters it shares with the main pipeline (SAM2, COCO export, training), each defined once in its step.

The retraining pipeline exposes :data:`TRAIN_FIELDS` of the training configuration and every pipeline
parameter of :class:`Sam2Params` and :class:`ExportParams`, under their pipeline names;
:meth:`RetrainSettings.from_pipeline` and :meth:`RetrainSettings.pipeline_defaults` map those names, and
:func:`add_retrain_options` / :meth:`RetrainSettings.from_args` do the same for ``crownsam flights``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from crownsam.coco.params import ExportParams
from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, add_options, param
from crownsam.comparison.registry import REGISTERED_MODEL
from crownsam.pseudolabel.params import Sam2Params
from crownsam.training.config import TrainConfig

DEFAULT_EXPERIMENT = "crownsam-flights"
# The training settings a retraining takes (the rest keep TrainConfig's defaults).
TRAIN_FIELDS = ("epochs", "max_iters", "lr", "batch_size", "model_version")
# ``crownsam flights`` already has --model (SAM2's): the Mask R-CNN version is --model-version there.
TRAIN_FLAGS = {"model_version": "--model-version"}


def _train_default() -> TrainConfig:
    return TrainConfig(label_source="pseudo", evaluate_test=False, progress=False)


@dataclass(frozen=True)
class RetrainSettings(Params):
    """Where a retraining keeps its state and outputs, and the SAM2, export and training settings."""

    work_uri: str | None = param(
        None, "work area for the flights' outputs (default ROOT/work)", flag="--work", unset=""
    )
    tracking_uri: str | None = param(
        None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI)", unset="", metavar="URI"
    )
    experiment: str = param(DEFAULT_EXPERIMENT, "MLflow experiment of flight and retraining runs")
    registered_model_name: str = param(REGISTERED_MODEL, "MLflow registered model")
    cache_dir: str | None = param(None, "download cache for gs:// and https:// inputs", pipeline=None)
    progress: bool = param(False, "progress bars", flag="", pipeline=None)
    sam2: Sam2Params = field(default_factory=Sam2Params)
    export: ExportParams = field(default_factory=ExportParams)
    train: TrainConfig = field(default_factory=_train_default)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra torchvision MaskRCNN arguments

    def check(self) -> None:
        if len(self.export.bands) != 3:
            raise CrownsamError(
                None, f"--bands: three 1-based band numbers (R,G,B for SAM2), got {self.export.bands}"
            )
        self.train_config("x", "x").validate()

    @property
    def state_uri(self) -> str:
        """The resolved tracking URI (see :func:`crownsam.flights.retrain.resolved`)."""
        if not self.tracking_uri:
            raise ValueError("the tracking URI is resolved before use")
        return self.tracking_uri

    @property
    def work(self) -> str:
        """The resolved work area (see :func:`crownsam.flights.retrain.resolved`)."""
        if not self.work_uri:
            raise ValueError("the work area is resolved before use")
        return self.work_uri

    @property
    def bands(self) -> tuple[int, ...]:
        """The orthophoto bands SAM2 sees as R, G, B, and the chips' bands."""
        return self.export.bands

    def require_sam2(self) -> None:
        """SAM2 runs here: it needs weights or an explicit ``--untrained``."""
        if bool(self.sam2.checkpoint) == bool(self.sam2.untrained):
            raise CrownsamError(
                None, "SAM2 needs either --checkpoint URI or --untrained (plumbing only), not both"
            )

    def train_config(self, coco_dir: str, out_dir: str, **changes: Any) -> TrainConfig:
        """The training configuration of a retraining (tracking where the flights' state is)."""
        return dataclasses.replace(
            self.train,
            coco_dir=coco_dir,
            out_dir=out_dir,
            device=self.sam2.device,
            tracking_uri=self.tracking_uri,
            experiment=self.experiment,
            model_kwargs=dict(self.model_kwargs),
            cache_dir=self.cache_dir,
            progress=self.progress,
            **changes,
        )

    # -- pipeline parameters --------------------------------------------------------------------------

    @classmethod
    def _parts(cls) -> dict[str, tuple[type[Params], tuple[str, ...] | None]]:
        """Nested settings: attribute -> (class, the fields the retraining exposes; None: all)."""
        return {
            "sam2": (Sam2Params, None),
            "export": (ExportParams, None),
            "train": (TrainConfig, TRAIN_FIELDS),
        }

    @classmethod
    def pipeline_defaults(cls) -> dict[str, Any]:
        out = super().pipeline_defaults()
        for _, (part, names) in cls._parts().items():
            defaults = part.pipeline_defaults() if part is not TrainConfig else _train_default().to_pipeline()
            keep = {part.field(n).pipeline_name for n in names} if names else set(defaults)
            out |= {k: v for k, v in defaults.items() if k in keep}
        return out

    @classmethod
    def from_pipeline(cls, **values: Any) -> Self:
        own = {f.pipeline_name: f for f in cls.pipeline_fields()}
        mine = {k: v for k, v in values.items() if k in own}
        rest = {k: v for k, v in values.items() if k not in own}
        parts: dict[str, Any] = {}
        for attr, (part, names) in cls._parts().items():
            allowed = {f.pipeline_name for f in part.pipeline_fields() if names is None or f.name in names}
            given = {k: rest.pop(k) for k in list(rest) if k in allowed}
            if part is TrainConfig:
                parts[attr] = dataclasses.replace(_train_default(), **_from_pipeline_fields(part, given))
            else:
                parts[attr] = part.from_pipeline(**given)
        if rest:
            raise TypeError(f"the retraining has no pipeline parameter(s) {', '.join(sorted(rest))}")
        base = super().from_pipeline(**mine)
        return dataclasses.replace(base, **parts)

    # -- command line ---------------------------------------------------------------------------------

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        prefix: str = "",
        flags: Mapping[str, str] | None = None,
        **fixed: Any,
    ) -> Self:
        base = super().from_args(args, prefix, flags)
        train = dataclasses.replace(
            _train_default(),
            **{k: v for k, v in TrainConfig.given(args, prefix).items() if k in TRAIN_FIELDS},
        )
        return dataclasses.replace(
            base,
            train=train,
            sam2=Sam2Params.from_args(args, prefix),
            export=ExportParams.from_args(args, prefix),
            **fixed,
        )


def given_pipeline_values(args: argparse.Namespace) -> dict[str, Any]:
    """The retraining options given on the command line, as pipeline parameters (name -> KFP scalar)."""
    out: dict[str, Any] = {}
    for cls in (RetrainSettings, Sam2Params, ExportParams, TrainConfig):
        for name, value in cls.given(args).items():
            f = cls.field(name)
            if f.pipeline_name is not None and (cls is not TrainConfig or name in TRAIN_FIELDS):
                out[f.pipeline_name] = f.to_pipeline(value)
    return out


def _from_pipeline_fields(part: type[Params], values: dict[str, Any]) -> dict[str, Any]:
    by_pipeline = {f.pipeline_name: f for f in part.pipeline_fields()}
    return {by_pipeline[k].name: by_pipeline[k].from_pipeline(v) for k, v in values.items()}


def add_retrain_options(p: argparse.ArgumentParser, *, sam2_device: bool = True) -> None:
    """The retraining's options: its own, SAM2's, the export's and the training subset."""
    from crownsam.pseudolabel.cli import add_sam2_options

    add_options(p, RetrainSettings, skip=("work_uri", "tracking_uri", "experiment"))
    add_sam2_options(p, device=sam2_device)
    add_options(p, ExportParams, only=[f.name for f in ExportParams.pipeline_fields()])
    add_options(p, TrainConfig, only=TRAIN_FIELDS, flags=TRAIN_FLAGS)


def add_catalog_options(p: argparse.ArgumentParser) -> None:
    """``--root`` and where the state and outputs go."""
    p.add_argument("--root", required=True, help="catalog root holding flights/<flight_id>/ (path or gs://)")
    add_options(p, RetrainSettings, only=("work_uri", "tracking_uri", "experiment"))
