"""Per-flight processing (step 2 of :mod:`crownsam.flights.retrain`): coarse segments, SAM2 pseudolabels
and a COCO export of one new flight, written under the work area; the flight's MLflow run is FINISHED
only after they are."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crownsam.common import storage
from crownsam.common.errors import CrownsamError
from crownsam.flights import catalog
from crownsam.flights.catalog import Flight
from crownsam.flights.plan import FlightStatus, evaluation_fingerprints
from crownsam.flights.settings import RetrainSettings
from crownsam.flights.state import FlightInputs, FlightRecord, FlightState, digest
from crownsam.pseudolabel.predictor import BoxPredictor

log = logging.getLogger(__name__)

PredictorFactory = Callable[[Flight, Path], BoxPredictor]


def output_uri(settings: RetrainSettings, inputs: FlightInputs) -> str:
    """``<work>/flights/<id>/<inputs key>``: one folder per version of the flight's inputs."""
    return storage.join(settings.work, "flights", inputs.flight_id, inputs.key)


def export_key(settings: RetrainSettings, flight: Flight) -> str:
    """Identity of a flight's COCO export: the export settings and its evaluation files' fingerprints."""
    return digest([settings.export.as_dict(), *evaluation_fingerprints(flight)], 12)


def export_flight(
    flight: Flight, labels_local: Path, ortho_local: Path, out: Path, settings: RetrainSettings
) -> dict[str, Any]:
    """COCO export of one flight's pseudolabels; its test area held out with the manual crowns as ground
    truth when it has them."""
    from crownsam.coco.export import export_coco

    return export_coco(
        ortho_local,
        labels_local,
        out,
        holdout=flight.file("test_area") if flight.has_manual else None,
        manual=flight.file("manual") if flight.has_manual else None,
        params=settings.export,
        cache_dir=settings.cache_dir,
    )


class Sam2Once:
    """The default predictor factory: SAM2 built once per retraining, reused for every flight."""

    def __init__(self, settings: RetrainSettings) -> None:
        self.settings = settings
        self.predictor: BoxPredictor | None = None

    def __call__(self, flight: Flight, ortho: Path) -> BoxPredictor:
        if self.predictor is None:
            from crownsam.pseudolabel.sam2_model import sam2_box_predictor

            self.predictor = sam2_box_predictor(self.settings.sam2, self.settings.cache_dir)
        return self.predictor


def process_flight(
    fs: FlightStatus,
    settings: RetrainSettings,
    state: FlightState,
    predictor_factory: PredictorFactory,
    scratch: Path,
) -> FlightRecord:
    """Segments -> pseudolabels -> COCO export of one new flight, written under the work area, then its
    MLflow run set FINISHED. Raises :class:`CrownsamError` for bad data (the run is marked FAILED)."""
    from crownsam.flights.segments import prepare_segments
    from crownsam.pseudolabel.api import PseudolabelRequest, run_pseudolabel, summary_path
    from crownsam.pseudolabel.params import PseudolabelParams

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
        "sam2_checkpoint": settings.sam2.checkpoint or "",
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
            cache_dir=settings.cache_dir,
            progress=settings.progress,
            resume_dir=storage.join(out_uri, "pseudolabels.parts"),
            sam2=settings.sam2,
            params=PseudolabelParams(rgb_bands=settings.bands),
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


def flight_coco(fs: FlightStatus, settings: RetrainSettings, scratch: Path) -> Path:
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
