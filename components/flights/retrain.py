"""Retraining on the flight catalog: pseudolabel the flights not yet processed, train one Mask R-CNN on the
pseudolabels of every flight, evaluate it on the fixed evaluation set, promote it only if it is better.

Steps of :func:`retrain` (the rules of "processed" and "trained" are in :mod:`crownsam.flights.state`):

1. **Plan** (:func:`plan_retrain`, also ``crownsam flights scan`` and the pipeline's first step): list the
   catalog; fingerprint the complete flights and ask MLflow which are processed; flights whose selected
   bands have other names (``flight.yaml``) than in the earliest processed flight (else the earliest new
   one) are invalid (a model needs the same bands from every flight). No new flight and a complete
   retraining for the current dataset key: **up-to-date**, nothing else happens.
2. **Per new flight** (each flight id once; MLflow is asked again just before, so a flight processed
   meanwhile is skipped): check the orthophoto against ``flight.yaml``; coarse segments (``coarse.gpkg``,
   else CHM segmentation); SAM2 pseudolabels (finished windows kept under the work area, so a retried run
   resumes); a COCO export (its test area held out, its manual crowns as test ground truth). Outputs go to
   ``<work>/flights/<id>/<inputs key>/``; the flight's MLflow run is FINISHED only after they are written.
   A flight with bad data (one-line :class:`CrownsamError`) is reported as failed and the others go on.
3. **Training set**: the COCO exports of every complete, processed flight of the catalog (new and
   earlier; an export made with other settings, or before the flight's manual crowns changed, is made
   again from its stored pseudolabels), merged with :func:`crownsam.coco.merge.merge_exports`. Train and
   val come from every flight; **test** is the union of the test splits of the flights with manual crowns:
   the fixed evaluation set. Without any such flight nothing is trained (status ``no-evaluation-set``).
4. **Model**: train (tags ``flight_ids``, ``label_source = pseudo``), evaluate ``segm_AP`` on the merged
   test split, and register it with :func:`crownsam.comparison.registry.register_and_promote` under the
   test-set id of the merged ``test.json``. The champion is re-measured on this test set when its own
   ``test_set`` tag differs (a new evaluation set never silently crowns or dethrones a model); a champion
   that cannot be measured on it is kept. The new version becomes ``champion`` only if its metric is
   strictly greater, otherwise ``challenger``, with the reason as the version's ``decision`` tag.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crownsam.common import storage
from crownsam.common.errors import CrownsamError
from crownsam.flights import catalog
from crownsam.flights.catalog import Flight
from crownsam.flights.state import (
    DATASET_KEY,
    DEFAULT_EXPERIMENT,
    KIND,
    TRAINING_KIND,
    FlightInputs,
    FlightRecord,
    FlightState,
    dataset_key,
    digest,
    flight_inputs,
    resolve_tracking_uri,
)
from crownsam.pseudolabel.predictor import BoxPredictor

log = logging.getLogger(__name__)

DEFAULT_REGISTERED_MODEL = "crownsam-maskrcnn"
METRIC = "segm_AP"
WORK_DIR = "work"
NO_EVALUATION_SET = (
    "no flight has manual crowns and a test area: there is nothing to evaluate a model on, so nothing was "
    "trained (add manual.gpkg + test_area.gpkg to a flight)"
)

NEW, PROCESSED, INCOMPLETE, INVALID = "new", "processed", catalog.INCOMPLETE, catalog.INVALID

PredictorFactory = Callable[[Flight, Path], BoxPredictor]


# ------------------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Everything a retraining takes besides the catalog root (see :func:`retrain`)."""

    work_uri: str
    tracking_uri: str
    experiment: str = DEFAULT_EXPERIMENT
    registered_model_name: str = DEFAULT_REGISTERED_MODEL
    # SAM2
    sam2_model: str = "sam2.1_hiera_t"
    checkpoint: str | None = None
    untrained: bool = False
    device: str = "auto"
    # COCO export (and the bands SAM2 sees as R, G, B)
    bands: tuple[int, ...] = (3, 2, 1)
    chip: int = 1024
    overlap: float = 0.25
    val_fraction: float = 0.15
    val_block: int = 4
    buffer_m: float = 10.0
    # Mask R-CNN
    epochs: int = 20
    max_iters: int | None = None
    lr: float = 0.005
    batch_size: int = 2
    model_version: str = "v2"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    progress: bool = False

    def export_params(self) -> dict[str, Any]:
        return {
            "chip": self.chip,
            "overlap": self.overlap,
            "bands": list(self.bands),
            "val_fraction": self.val_fraction,
            "val_block": self.val_block,
            "buffer_m": self.buffer_m,
        }

    def validate(self, sam2: bool = True) -> None:
        """Refuse values that cannot work, before anything is fetched or computed (``sam2``: check the
        SAM2 settings too; not when a predictor factory replaces SAM2)."""
        from crownsam.pseudolabel.sam2_model import MODELS

        if sam2:
            if self.sam2_model not in MODELS:
                raise CrownsamError(None, f"--model {self.sam2_model}: choose one of {', '.join(MODELS)}")
            if bool(self.checkpoint) == bool(self.untrained):
                raise CrownsamError(
                    None, "SAM2 needs either --checkpoint URI or --untrained (plumbing only), not both"
                )
        if len(self.bands) != 3 or any(b < 1 for b in self.bands):
            raise CrownsamError(
                None, f"--bands: three 1-based band numbers (R,G,B for SAM2), got {self.bands}"
            )
        checks = (
            (self.chip >= 32, f"--chip must be at least 32 px, got {self.chip}"),
            (0 <= self.overlap < 1, f"--overlap must be in [0, 1), got {self.overlap}"),
            (0 <= self.val_fraction < 1, f"--val-fraction must be in [0, 1), got {self.val_fraction}"),
            (self.val_block >= 1, f"--val-block must be >= 1, got {self.val_block}"),
            (self.buffer_m >= 0, f"--buffer must be >= 0, got {self.buffer_m}"),
        )
        for ok, problem in checks:
            if not ok:
                raise CrownsamError(None, problem)
        self.train_config("x", "x").validate()

    def train_config(self, coco_dir: str, out_dir: str, **kw: Any) -> Any:
        from crownsam.training.config import TrainConfig

        return TrainConfig(
            coco_dir=coco_dir,
            out_dir=out_dir,
            label_source="pseudo",
            model_version=self.model_version,
            epochs=self.epochs,
            max_iters=self.max_iters,
            lr=self.lr,
            batch_size=self.batch_size,
            device=self.device,
            tracking_uri=self.tracking_uri,
            experiment=self.experiment,
            model_kwargs=dict(self.model_kwargs),
            cache_dir=self.cache_dir,
            evaluate_test=False,  # evaluated right after, on the merged test split
            progress=self.progress,
            **kw,
        )


# ----------------------------------------------------------------------------------------------- plan


@dataclass
class FlightStatus:
    """A catalog folder and what retraining makes of it."""

    flight: Flight
    status: str  # new | processed | incomplete | invalid
    reason: str = ""
    inputs: FlightInputs | None = None
    record: FlightRecord | None = None  # the FINISHED run matching the inputs (processed flights)

    @property
    def flight_id(self) -> str:
        return self.flight.flight_id

    def row(self) -> dict[str, str]:
        return {
            "flight_id": self.flight_id,
            "status": self.status,
            "date": self.flight.meta.date if self.flight.meta else "",
            "manual": "yes" if self.flight.has_manual else "no",
            "run_id": self.record.run_id if self.record else "",
            "reason": self.reason,
        }


@dataclass
class Plan:
    """What a retraining would do now."""

    flights: list[FlightStatus]
    dataset_key: str | None = None  # set when every usable flight is processed
    trained_by: str | None = None  # the complete retraining run for that key

    def of(self, status: str) -> list[FlightStatus]:
        return [f for f in self.flights if f.status == status]

    @property
    def new_ids(self) -> list[str]:
        return [f.flight_id for f in self.of(NEW)]

    @property
    def action(self) -> str:
        """``pseudolabel`` (new flights), ``train`` (all processed, no model for them yet), ``up-to-date``,
        ``no-evaluation-set`` (all processed, but no flight has manual crowns to evaluate a model on) or
        ``no-flights`` (nothing complete and valid in the catalog)."""
        if self.of(NEW):
            return "pseudolabel"
        if not self.of(PROCESSED):
            return "no-flights"
        if self.trained_by:
            return "up-to-date"
        return "train" if any(s.flight.has_manual for s in self.of(PROCESSED)) else "no-evaluation-set"


def evaluation_fingerprints(flight: Flight) -> tuple[str, str]:
    """Fingerprints of the manual crowns and the test area ('' when the flight has none)."""
    if not flight.has_manual:
        return "", ""
    return storage.fingerprint(flight.file("manual")), storage.fingerprint(flight.file("test_area"))


def _check_bands(statuses: list[FlightStatus], bands: tuple[int, ...]) -> None:
    """Mark new and processed flights invalid when the selected bands are not in flight.yaml, or have
    other names than in the reference flight: the earliest processed flight (by date, then id), else the
    earliest new one (so a back-dated upload cannot invalidate what models were trained on)."""
    complete = sorted(
        (s for s in statuses if s.status in (NEW, PROCESSED)),
        key=lambda s: (s.status != PROCESSED, s.flight.meta.date, s.flight_id),
    )
    ref: tuple[str, tuple[str, ...]] | None = None
    spec = ",".join(map(str, bands))
    for s in complete:
        names = catalog.selected_band_names(s.flight, bands)
        if names is None:
            s.status = INVALID
            s.reason = (
                f"{catalog.META}: bands lists {len(s.flight.meta.bands)} names; --bands {spec} needs more"
            )
        elif ref is None:
            ref = (s.flight_id, names)
        elif names != ref[1]:
            s.status = INVALID
            s.reason = (
                f"{catalog.META}: bands {spec} are {','.join(names)} here but {','.join(ref[1])} in flight "
                f"{ref[0]}; a model needs the same bands from every flight"
            )


def plan_retrain(
    root: str, settings: Settings, state: FlightState | None = None, flights: list[Flight] | None = None
) -> Plan:
    """List the catalog (unless ``flights`` are given) and ask MLflow what is processed and trained (see
    the module docstring)."""
    flights = catalog.list_flights(root) if flights is None else flights
    state = state or FlightState(settings.tracking_uri, settings.experiment)
    statuses = [FlightStatus(f, f.state, f.reason) for f in flights]
    records = state.flight_records()
    for s in statuses:
        if s.status != catalog.COMPLETE:
            continue
        try:
            s.inputs = flight_inputs(s.flight)
        except CrownsamError as exc:  # vanished or unreadable since listing
            s.status, s.reason = INVALID, str(exc)
            continue
        s.record = state.processed(s.inputs, [r for r in records if r.flight_id == s.flight_id])
        if s.record is not None:
            s.status, s.reason = PROCESSED, f"pseudolabels from MLflow run {s.record.run_id}"
        else:
            earlier = next((r for r in records if r.flight_id == s.flight_id), None)
            s.status = NEW
            s.reason = f"inputs changed since MLflow run {earlier.run_id}" if earlier else "not processed yet"
    _check_bands(statuses, settings.bands)
    for s in statuses:
        if s.status == INVALID:
            s.record = None
    plan = Plan(statuses)
    if not plan.of(NEW) and plan.of(PROCESSED):
        plan.dataset_key = dataset_key([_dataset_entry(s) for s in plan.of(PROCESSED)])
        plan.trained_by = state.trained(plan.dataset_key)
    return plan


def _dataset_entry(s: FlightStatus) -> tuple[str, str, str, str]:
    assert s.record is not None
    manual_fp, area_fp = evaluation_fingerprints(s.flight)
    return (s.flight_id, s.record.run_id, manual_fp, area_fp)


# ------------------------------------------------------------------------------------- flight outputs


def output_uri(settings: Settings, inputs: FlightInputs) -> str:
    """``<work>/flights/<id>/<inputs key>``: one folder per version of the flight's inputs."""
    return storage.join(settings.work_uri, "flights", inputs.flight_id, inputs.key)


def export_key(settings: Settings, flight: Flight) -> str:
    """Identity of a flight's COCO export: the export settings and its evaluation files' fingerprints."""
    return digest([settings.export_params(), *evaluation_fingerprints(flight)], 12)


def export_flight(
    flight: Flight, labels_local: Path, ortho_local: Path, out: Path, settings: Settings
) -> dict[str, Any]:
    """COCO export of one flight's pseudolabels; its test area held out with the manual crowns as ground
    truth when it has them."""
    from crownsam.coco.export import export_coco

    manual = area = None
    if flight.has_manual:
        manual = storage.fetch(flight.file("manual"), settings.cache_dir, what="manual crowns")
        area = storage.fetch(flight.file("test_area"), settings.cache_dir, what="test area")
    return export_coco(
        ortho_local,
        labels_local,
        out,
        holdout=area,
        manual=manual,
        chip=settings.chip,
        overlap=settings.overlap,
        bands=settings.bands,
        val_fraction=settings.val_fraction,
        val_block=settings.val_block,
        buffer_m=settings.buffer_m,
    )


class _Sam2Once:
    """The default predictor factory: SAM2 built once per retraining, reused for every flight."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.predictor: BoxPredictor | None = None

    def __call__(self, flight: Flight, ortho: Path) -> BoxPredictor:
        if self.predictor is None:
            from crownsam.pseudolabel.sam2_model import Sam2BoxPredictor, build_sam2_model, resolve_device

            s = self.settings
            device = resolve_device(s.device)
            net = build_sam2_model(
                s.sam2_model, s.checkpoint, untrained=s.untrained, device=device, cache_dir=s.cache_dir
            )
            self.predictor = Sam2BoxPredictor(net, name=s.sam2_model, untrained=s.untrained)
        return self.predictor


def process_flight(
    fs: FlightStatus,
    settings: Settings,
    state: FlightState,
    predictor_factory: PredictorFactory,
    scratch: Path,
) -> FlightRecord:
    """Segments -> pseudolabels -> COCO export of one new flight, written under the work area, then its
    MLflow run set FINISHED. Raises :class:`CrownsamError` for bad data (the run is marked FAILED)."""
    from crownsam.flights.segments import prepare_segments
    from crownsam.pseudolabel.api import PseudolabelRequest, run_pseudolabel, summary_path

    flight, inputs = fs.flight, fs.inputs
    assert inputs is not None and flight.meta is not None
    ortho = storage.fetch(flight.file("ortho"), settings.cache_dir, what="orthophoto")
    catalog.check_ortho(flight, ortho)
    out_uri = output_uri(settings, inputs)
    ekey = export_key(settings, flight)
    uris = {
        "output_uri": out_uri,
        "segments_uri": storage.join(out_uri, "segments.gpkg"),
        "pseudolabels_uri": storage.join(out_uri, "pseudolabels.gpkg"),
        "coco_uri": storage.join(out_uri, f"coco-{ekey}"),
    }
    tags = {
        "ortho_uri": flight.file("ortho"),
        "segments_input_uri": flight.file(flight.segments_role),
        "flight_date": flight.meta.date,
        "sensor": flight.meta.sensor,
        "has_manual": str(flight.has_manual).lower(),
        "sam2_checkpoint": settings.checkpoint or "",
    }
    run_id = state.start_flight(inputs, tags)
    log.info("flight %s: processing (MLflow run %s) into %s", flight.flight_id, run_id, out_uri)
    try:
        here = scratch / "flights" / flight.flight_id
        segments = here / "segments.gpkg"
        seg_info = prepare_segments(flight.file("coarse"), flight.file("chm"), str(segments))
        storage.upload(segments, uris["segments_uri"])
        req = PseudolabelRequest(
            ortho=flight.file("ortho"),
            segments=str(segments),
            out=uris["pseudolabels_uri"],
            model=settings.sam2_model,
            checkpoint=settings.checkpoint,
            untrained=settings.untrained,
            rgb_bands=settings.bands,
            device=settings.device,
            cache_dir=settings.cache_dir,
            progress=settings.progress,
            resume_dir=storage.join(out_uri, "pseudolabels.parts"),
        )
        predictor = predictor_factory(flight, ortho)
        summary = run_pseudolabel(req, predictor=predictor)
        labels = (
            storage.fetch(req.out, settings.cache_dir, what="pseudolabels")
            if storage.is_remote(req.out)
            else Path(req.out)
        )
        export = export_flight(flight, labels, ortho, here / "coco", settings)
        storage.upload_dir(here / "coco", uris["coco_uri"], last="export.json")
        metrics = {
            "segments": float(seg_info.get("segments", summary.get("segments_total", 0)) or 0),
            "segments_labeled": float(summary.get("segments_labeled", 0)),
            "windows_processed": float(summary.get("windows_processed", 0)),
            **{f"{k}_chips": float(v["chips"]) for k, v in export["splits"].items()},
        }
        done = uris | {
            "export_key": ekey,
            "summary_uri": summary_path(req),
            "segments_from": seg_info["source"],
            "predictor": predictor.name,
            "untrained": str(predictor.untrained).lower(),
        }
        state.finish(run_id, done, metrics, {"pseudolabel": summary, "export_splits": export["splits"]})
    except CrownsamError as exc:
        state.fail(run_id, str(exc))
        raise
    except BaseException as exc:
        state.fail(run_id, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        shutil.rmtree(scratch / "flights" / flight.flight_id, ignore_errors=True)
    log.info(
        "flight %s: %d pseudolabels, MLflow run %s FINISHED",
        flight.flight_id,
        summary.get("segments_labeled", 0),
        run_id,
    )
    record = state.processed(inputs)
    if record is None or record.run_id != run_id:
        raise CrownsamError(
            settings.tracking_uri, f"MLflow does not list the finished run {run_id} for {flight.flight_id}"
        )
    return record


def flight_coco(fs: FlightStatus, settings: Settings, scratch: Path) -> Path:
    """A local copy of the flight's COCO export for the current settings and evaluation files: the stored
    one, or a new export from the flight's stored pseudolabels (then stored too)."""
    assert fs.record is not None
    ekey = export_key(settings, fs.flight)
    uri = storage.join(fs.record.output_uri, f"coco-{ekey}")
    local = scratch / "coco" / fs.flight_id
    if storage.exists(storage.join(uri, "export.json")):
        return storage.download_dir(uri, local, settings.cache_dir)
    log.info(
        "flight %s: exporting COCO again (other settings or evaluation files than when processed)",
        fs.flight_id,
    )
    labels = storage.fetch(fs.record.pseudolabels_uri, settings.cache_dir, what="pseudolabels")
    ortho = storage.fetch(fs.flight.file("ortho"), settings.cache_dir, what="orthophoto")
    export_flight(fs.flight, labels, ortho, local, settings)
    storage.upload_dir(local, uri, last="export.json")
    return local


# ---------------------------------------------------------------------------------------------- main


@contextlib.contextmanager
def _scratch(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    tmp = Path(tempfile.mkdtemp(prefix="crownsam-retrain-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def retrain(
    root: str,
    *,
    work_uri: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    registered_model_name: str = DEFAULT_REGISTERED_MODEL,
    sam2_model: str = "sam2.1_hiera_t",
    checkpoint: str | None = None,
    untrained: bool = False,
    device: str = "auto",
    bands: tuple[int, ...] = (3, 2, 1),
    chip: int = 1024,
    overlap: float = 0.25,
    val_fraction: float = 0.15,
    val_block: int = 4,
    buffer_m: float = 10.0,
    epochs: int = 20,
    max_iters: int | None = None,
    lr: float = 0.005,
    batch_size: int = 2,
    model_version: str = "v2",
    model_kwargs: dict[str, Any] | None = None,
    predictor_factory: PredictorFactory | None = None,
    dry_run: bool = False,
    force: bool = False,
    cache_dir: str | None = None,
    scratch_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Pseudolabel the new flights of the catalog at ``root``, retrain on all flights, evaluate and
    promote (see the module docstring); return a summary (``status``, ``message``, per-flight statuses,
    what was pseudolabeled, the metric, the registry decision and its reason).

    ``work_uri`` (default ``<root>/work``) holds the flights' outputs; ``tracking_uri`` (default
    ``$MLFLOW_TRACKING_URI``, or a sqlite store in a local work area) the state. ``predictor_factory(flight,
    local ortho)`` replaces SAM2 (tests); ``dry_run`` only plans; ``force`` retrains even when up-to-date.
    """
    flights = catalog.list_flights(root)  # a wrong root fails here, before anything is created
    work = work_uri or storage.join(root, WORK_DIR)
    settings = Settings(
        work_uri=work,
        tracking_uri=resolve_tracking_uri(tracking_uri, work),
        experiment=experiment,
        registered_model_name=registered_model_name,
        sam2_model=sam2_model,
        checkpoint=checkpoint,
        untrained=untrained,
        device=device,
        bands=tuple(int(b) for b in bands),
        chip=chip,
        overlap=overlap,
        val_fraction=val_fraction,
        val_block=val_block,
        buffer_m=buffer_m,
        epochs=epochs,
        max_iters=max_iters,
        lr=lr,
        batch_size=batch_size,
        model_version=model_version,
        model_kwargs=dict(model_kwargs or {}),
        cache_dir=cache_dir,
        progress=progress,
    )
    settings.validate(sam2=predictor_factory is None)
    state = FlightState(settings.tracking_uri, settings.experiment)
    plan = plan_retrain(root, settings, state, flights)
    summary: dict[str, Any] = {
        "root": root,
        "work_uri": work,
        "tracking_uri": settings.tracking_uri,
        "flights": {s.flight_id: s.row() for s in plan.flights},
        "new": plan.new_ids,
        "pseudolabeled": [],
        "failed": {},
    }
    action = plan.action
    if action == "no-flights":
        return summary | {
            "status": "no-flights",
            "message": f"no complete, valid flight under {catalog.flights_uri(root)}",
        }
    if action == "up-to-date" and not force:
        return summary | {
            "status": "up-to-date",
            "dataset_key": plan.dataset_key,
            "training_run_id": plan.trained_by,
            "message": (
                f"up-to-date: no new flight; the {len(plan.of(PROCESSED))} processed flight(s) were "
                f"trained on in MLflow run {plan.trained_by}; nothing done"
            ),
        }
    if action == "no-evaluation-set":
        return summary | {"status": action, "message": NO_EVALUATION_SET}
    if dry_run:
        return summary | {
            "status": "dry-run",
            "action": action,
            "message": (
                f"would pseudolabel {', '.join(plan.new_ids)} and retrain"
                if plan.new_ids
                else "would retrain"
            ),
        }

    with _scratch(scratch_dir) as scratch:
        factory = predictor_factory or _Sam2Once(settings)
        done: set[str] = set()
        for fs in plan.of(NEW):
            if fs.flight_id in done:
                continue
            done.add(fs.flight_id)
            assert fs.inputs is not None
            already = state.processed(fs.inputs)  # processed by another run since the plan was made?
            if already is not None:
                fs.status, fs.record, fs.reason = (
                    PROCESSED,
                    already,
                    f"processed meanwhile by run {already.run_id}",
                )
                continue
            try:
                fs.record = process_flight(fs, settings, state, factory, scratch)
            except CrownsamError as exc:
                log.error("flight %s: %s", fs.flight_id, exc)
                fs.status, fs.reason = INVALID, str(exc)
                summary["failed"][fs.flight_id] = str(exc)
                continue
            fs.status, fs.reason = PROCESSED, f"pseudolabeled now (MLflow run {fs.record.run_id})"
            summary["pseudolabeled"].append(fs.flight_id)
        summary["flights"] = {s.flight_id: s.row() for s in plan.flights}
        usable = plan.of(PROCESSED)
        if not usable:
            return summary | {"status": "failed", "message": "no flight could be processed; see failed"}
        key = dataset_key([_dataset_entry(s) for s in usable])
        if not force and state.trained(key):
            return summary | {
                "status": "up-to-date",
                "dataset_key": key,
                "message": "up-to-date: trained meanwhile",
            }
        summary |= _train_and_promote(usable, key, settings, scratch)
    return summary


def _train_and_promote(
    usable: list[FlightStatus], key: str, settings: Settings, scratch: Path
) -> dict[str, Any]:
    from mlflow import MlflowClient

    from crownsam.coco.merge import merge_exports
    from crownsam.comparison.registry import Candidate, register_and_promote
    from crownsam.comparison.steps import git_commit, test_set_id
    from crownsam.training import tracking
    from crownsam.training.api import evaluate_model
    from crownsam.training.train import train

    ids = [s.flight_id for s in usable]
    evaluation = [s.flight_id for s in usable if s.flight.has_manual]
    out: dict[str, Any] = {"trained_on": ids, "evaluation_flights": evaluation, "dataset_key": key}
    if not evaluation:
        return out | {"status": "no-evaluation-set", "message": NO_EVALUATION_SET}
    sources = {s.flight_id: flight_coco(s, settings, scratch) for s in usable}
    merged_dir = scratch / "merged"
    merged = merge_exports(sources, merged_dir)
    out["merged"] = {
        split: {"chips": c["chips"], "annotations": c["annotations"]} for split, c in merged["splits"].items()
    }
    out["merged_by_flight"] = {name: src["splits"] for name, src in merged["sources"].items()}
    test_set = test_set_id(merged_dir)
    tags = {
        KIND: TRAINING_KIND,
        DATASET_KEY: key,
        "flight_ids": ",".join(ids),
        "evaluation_flight_ids": ",".join(evaluation),
        "flight_runs": ",".join(s.record.run_id for s in usable if s.record),
        "label_source": "pseudo",
        "test_set": test_set,
    }
    cfg = settings.train_config(
        str(merged_dir), str(scratch / "train"), run_name=f"retrain on {len(ids)} flight(s)", tags=tags
    )
    cfg.validate()
    metrics = train(cfg)
    run_id, model_uri = metrics["run_id"], metrics["model_uri"]
    client = MlflowClient(settings.tracking_uri)
    client.log_dict(run_id, merged, "merged_export.json")
    result = evaluate_model(
        model_uri, str(merged_dir), str(scratch / "eval"), tracking_uri=settings.tracking_uri,
        device=settings.device, progress=False,
    )  # fmt: skip
    metric = float(result["metrics"][METRIC])
    name = settings.registered_model_name
    unmeasured: dict[str, str] = {}

    def reevaluate(version: str) -> float:
        """The champion's metric on this evaluation set; inf (never replaced) when it cannot be measured."""
        with tempfile.TemporaryDirectory(prefix="crownsam-champion-") as tmp:
            try:
                r = evaluate_model(
                    f"models:/{name}/{version}", str(merged_dir), tmp, tracking_uri=settings.tracking_uri,
                    device=settings.device, log_to_mlflow=False, progress=False,
                )  # fmt: skip
            except CrownsamError as exc:
                log.warning("champion v%s cannot be measured on this evaluation set: %s", version, exc)
                unmeasured[version] = str(exc)
                return math.inf
        return float(r["metrics"][METRIC])

    with tracking.quiet_stdout():  # register_and_promote points the fluent API at the client's URI
        decision, versions = register_and_promote(
            client,
            name,
            [Candidate("pseudo", run_id, metric)],
            test_set=test_set,
            tags={"git_commit": git_commit(), "flight_ids": ",".join(ids), DATASET_KEY: key},
            metric_name=METRIC,
            reevaluate=reevaluate,
        )
    version = versions["pseudo"]
    reason = decision.reasons["pseudo"]
    if decision.champion_before in unmeasured:
        reason = (
            f"challenger: champion v{decision.champion_before} could not be measured on this evaluation set "
            f"({unmeasured[decision.champion_before]}); it stays champion"
        )
        client.set_model_version_tag(name, version, "decision", reason)
    alias = next(iter(decision.aliases))
    state = FlightState(settings.tracking_uri, settings.experiment)
    state.complete_training(
        run_id, {"registered_version": version, "alias": alias, "decision": reason[:4000]}
    )
    champion_metric = decision.champion_metric
    return out | {
        "status": "retrained",
        "training_run_id": run_id,
        "model_uri": model_uri,
        "test_set": test_set,
        "metric_name": METRIC,
        "metric": metric,
        "registry": {
            "name": name,
            "version": version,
            "alias": alias,
            "promoted": decision.promoted,
            "champion_before": decision.champion_before,
            "champion_before_metric": None
            if champion_metric is None or math.isinf(champion_metric)
            else champion_metric,
            "reason": reason,
        },
        "message": (
            f"trained on {len(ids)} flight(s) ({', '.join(ids)}); {METRIC} {metric:.4f}; v{version} {reason}"
        ),
    }


# ------------------------------------------------------------------------------------ entry points


def scan(
    root: str,
    *,
    work_uri: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    bands: tuple[int, ...] = (3, 2, 1),
) -> Plan:
    """The catalog's flights with their status, and what a retraining would do (reads only)."""
    flights = catalog.list_flights(root)  # a wrong root fails here, before anything is created
    work = work_uri or storage.join(root, WORK_DIR)
    settings = Settings(
        work_uri=work,
        tracking_uri=resolve_tracking_uri(tracking_uri, work),
        experiment=experiment,
        bands=tuple(int(b) for b in bands),
    )
    return plan_retrain(root, settings, flights=flights)


def scan_step(root: str, work_uri: str, tracking_uri: str, experiment: str, rgb_bands: str) -> dict[str, Any]:
    """The pipeline's first step: ``{"action", "new", "flights"}``; action ``retrain`` when there is work
    (new flights, or processed flights without a model trained on them), else ``up-to-date`` or
    ``no-flights``."""
    from crownsam.common.raster import parse_bands

    plan = scan(
        root,
        work_uri=work_uri or None,
        tracking_uri=tracking_uri or None,
        experiment=experiment,
        bands=parse_bands(rgb_bands),
    )
    for s in plan.flights:
        log.info("flight %s: %s%s", s.flight_id, s.status, f" ({s.reason})" if s.reason else "")
    action = "retrain" if plan.action in ("pseudolabel", "train") else plan.action
    return {"action": action, "new": plan.new_ids, "flights": [s.row() for s in plan.flights]}


def retrain_step(
    root: str,
    work_uri: str,
    tracking_uri: str,
    experiment: str,
    registered_model_name: str,
    sam2_model: str,
    sam2_checkpoint: str,
    untrained: bool,
    rgb_bands: str,
    chip: int,
    chip_overlap: float,
    val_fraction: float,
    val_block: int,
    holdout_buffer_m: float,
    epochs: int,
    max_iters: int,
    lr: float,
    batch_size: int,
    model_version: str,
    scan_path: str | None = None,
) -> dict[str, Any]:
    """The pipeline's retrain step: pipeline parameters ('' and 0 for "not set") to :func:`retrain`."""
    from crownsam.common.raster import parse_bands

    result = retrain(
        root,
        work_uri=work_uri or None,
        tracking_uri=tracking_uri or None,
        experiment=experiment,
        registered_model_name=registered_model_name,
        sam2_model=sam2_model,
        checkpoint=sam2_checkpoint or None,
        untrained=untrained,
        bands=parse_bands(rgb_bands),
        chip=chip,
        overlap=chip_overlap,
        val_fraction=val_fraction,
        val_block=val_block,
        buffer_m=holdout_buffer_m,
        epochs=epochs,
        max_iters=max_iters or None,
        lr=lr,
        batch_size=batch_size,
        model_version=model_version,
    )
    if scan_path:
        import json

        expected = json.loads(Path(scan_path).read_text()).get("new", [])
        if set(result["new"]) != set(expected):
            log.info(
                "the catalog changed since the scan: new flights now %s (scan: %s)",
                ", ".join(result["new"]) or "none",
                ", ".join(expected) or "none",
            )
    return result
