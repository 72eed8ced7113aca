"""``crownsam train``, ``crownsam predict`` and ``crownsam evaluate-model``."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from crownsam.common.cli_util import bands_arg
from crownsam.common.errors import CrownsamError
from crownsam.common.params import add_options
from crownsam.common.window_pipeline import WindowLoopParams
from crownsam.pseudolabel.params import Sam2Params
from crownsam.refine.params import METHODS, RefineParams
from crownsam.training.config import InferenceParams, TrainConfig

if TYPE_CHECKING:
    from crownsam.refine.api import RefineSetup

log = logging.getLogger(__name__)


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} must look like KEY=VALUE")
    return key, value


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def run_train(args: argparse.Namespace) -> int:
    from crownsam.training.train import train

    cfg = TrainConfig.from_args(args, tags=dict(args.tag or []))
    m = train(cfg)
    if "rank" in m:  # torchrun worker other than rank 0
        return 0
    best = m["best"]["val_segm_AP"] if m["best"] else None
    test = m["test"]["test_segm_AP"] if m["test"] else None
    print(
        f"crownsam: trained {m['iterations']} steps ({m['epochs_completed']} full epochs, stopped by "
        f"{m['stopped']}); final loss {_num(m['final_loss'])}; best val segm AP "
        f"{_num(best)}; test segm AP {_num(test)} "
        f"-> {cfg.out_dir}"
    )
    print(
        f"crownsam: MLflow run {m['run_id']} at {m['tracking_uri']}" if m["run_id"] else "crownsam: no MLflow"
    )
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from crownsam.training.api import PredictRequest, predict_files, summary_path

    req = PredictRequest(
        model=args.model,
        ortho=args.ortho,
        out=args.out,
        area=args.area,
        bands=args.bands,
        stretch=args.stretch,
        tracking_uri=args.tracking_uri,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        inference=InferenceParams.from_args(args),
        loop=WindowLoopParams.from_args(args),
    )
    s = predict_files(req)
    print(
        f"crownsam: {s['crowns']} crowns from {s['windows']} windows ({s['windows_per_s']:.3g} windows/s); "
        f"{s['duplicates_dropped']} duplicates dropped, {s['stitched_from']} cut instances stitched "
        + (f"; per class {s['crowns_per_class']} " if "crowns_per_class" in s else "")
        + f"-> {args.out} (summary {summary_path(args.out)})"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from crownsam.training.api import evaluate_model

    r = evaluate_model(
        args.model,
        args.coco,
        args.out,
        manual=args.manual,
        area=args.area,
        ortho=args.ortho,
        split=args.split,
        inference=InferenceParams.from_args(args),
        tracking_uri=args.tracking_uri,
        log_to_mlflow=not args.no_mlflow,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        refine=refine_setup(args),
        loop=WindowLoopParams.from_args(args),
    )
    m = r["metrics"]
    keys = ["segm_AP", "segm_AP50", "segm_AP75", "bbox_AP", "segm_AR100"]
    keys += [k for k in ("refined_segm_AP", "jaccard_mean/model", "jaccard_mean/refined") if k in m]
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in keys if isinstance(m.get(k), float))
    where = f"; logged to MLflow run {r['logged_to_run']}" if r.get("logged_to_run") else ""
    print(f"crownsam: {r['split']} split: {shown} -> {args.out}/metrics.json{where}")
    return 0


# evaluate-model's names for the refine and SAM2 options (its own --model and --device are Mask R-CNN's)
REFINE_FLAGS = {"t1": "--refine-t1", "t2": "--refine-t2"}
SAM2_FLAGS = {"model": "--sam2-model", "checkpoint": "--sam2-checkpoint", "untrained": "--sam2-untrained"}


def refine_setup(args: argparse.Namespace) -> RefineSetup | None:
    """``--refine`` and its options (SAM2 as ``--sam2-*``, on the inference ``--device``), or None."""
    from crownsam.refine.api import RefineSetup

    params = RefineParams.from_args(args, flags=REFINE_FLAGS)
    if params.method == "none":
        return None
    sam2 = Sam2Params.from_args(
        args, prefix="sam2_", flags=SAM2_FLAGS, device=InferenceParams.from_args(args).device
    )
    if not sam2.checkpoint and not sam2.untrained:
        raise CrownsamError(
            None,
            f"--refine {params.method} runs SAM2: pass --sam2-checkpoint URI (path, gs://, https://) or "
            "--sam2-untrained",
        )
    return RefineSetup(
        params=params,
        sam2=sam2,
        loop=WindowLoopParams.from_args(args),
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )


def add_refine_options(p: argparse.ArgumentParser) -> None:
    """``--refine none|box|sessrs``, ``--refine-t1``, ``--refine-t2``, ``--sam2-model``,
    ``--sam2-checkpoint`` | ``--sam2-untrained`` (``crownsam.refine``)."""
    g = p.add_argument_group("refinement of the predicted crowns (crownsam refine; needs --manual)")
    method = RefineParams.field("method")
    g.add_argument(
        "--refine",
        dest="method",
        choices=METHODS,
        default=argparse.SUPPRESS,
        help=f"{method.spec.help} (default none)",
    )
    add_options(g, RefineParams, only=("t1", "t2"), flags=REFINE_FLAGS)
    add_options(g, Sam2Params, only=("model",), prefix="sam2_", flags=SAM2_FLAGS)
    add_options(
        g.add_mutually_exclusive_group(),
        Sam2Params,
        only=("checkpoint", "untrained"),
        prefix="sam2_",
        flags=SAM2_FLAGS,
    )


def _common_inference(p: argparse.ArgumentParser) -> None:
    add_options(p, InferenceParams)
    add_options(p, WindowLoopParams, only=("workers",))
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI for MLflow model URIs (else $MLFLOW_TRACKING_URI)"
    )
    p.add_argument("--cache-dir", help="cache for gs:// and https:// checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


MODEL_HELP = "RUN_DIR, a checkpoint (.pt, local/gs:///https://), runs:/<id>/model or models:/<name>@<alias>"


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train Mask R-CNN on a COCO export; log to MLflow")
    add_options(t, TrainConfig)
    t.add_argument("--tag", type=_tag, action="append", help="MLflow tag KEY=VALUE (repeatable)")
    t.set_defaults(func=run_train)

    p = sub.add_parser("predict", help="tiled Mask R-CNN inference over an orthophoto -> crown polygons")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--ortho", required=True, help="orthophoto GeoTIFF")
    p.add_argument("--out", required=True, help="GeoPackage to write (polygons with score)")
    p.add_argument("--area", help="predict only here (polygons); crowns whose centroid lies inside are kept")
    p.add_argument("--bands", type=bands_arg, help="orthophoto bands (default: the model's)")
    p.add_argument(
        "--stretch",
        choices=("model", "scene"),
        default="model",
        help="model: the training stretch (default); scene: this orthophoto's",
    )
    _common_inference(p)
    p.set_defaults(func=run_predict)

    e = sub.add_parser("evaluate-model", help="COCO AP of a trained model on the test chips (+ Jaccard)")
    e.add_argument("--model", required=True, help=MODEL_HELP)
    e.add_argument("--coco", required=True, help="folder written by `crownsam export-coco`")
    e.add_argument("--out", required=True, help="folder for metrics.json and pictures")
    e.add_argument("--split", choices=("test", "val", "train"), default="test", help="default test")
    e.add_argument("--manual", help="manual crowns: also compute Jaccard metrics of predicted crowns")
    e.add_argument("--area", help="test area for the Jaccard metrics")
    e.add_argument("--ortho", help="orthophoto to predict crowns over (with --manual)")
    e.add_argument("--no-mlflow", action="store_true", help="do not log the metrics to the model's run")
    add_refine_options(e)
    _common_inference(e)
    e.set_defaults(func=run_evaluate)
