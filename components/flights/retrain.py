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
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crownsam.common import storage
from crownsam.common.errors import CrownsamError
from crownsam.flights import catalog
from crownsam.flights.plan import INVALID, NEW, PROCESSED, Plan, dataset_entry, plan_retrain
from crownsam.flights.process import PredictorFactory, Sam2Once, process_flight
from crownsam.flights.promote import NO_EVALUATION_SET, train_and_promote
from crownsam.flights.settings import RetrainSettings
from crownsam.flights.state import FlightState, dataset_key, resolve_tracking_uri

log = logging.getLogger(__name__)

WORK_DIR = "work"


def resolved(root: str, settings: RetrainSettings) -> RetrainSettings:
    """The settings with the work area (default ``<root>/work``) and the tracking URI resolved."""
    work = settings.work_uri or storage.join(root, WORK_DIR)
    return settings.replace(work_uri=work, tracking_uri=resolve_tracking_uri(settings.tracking_uri, work))


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
    settings: RetrainSettings | None = None,
    *,
    predictor_factory: PredictorFactory | None = None,
    dry_run: bool = False,
    force: bool = False,
    scratch_dir: str | None = None,
) -> dict[str, Any]:
    """Pseudolabel the new flights of the catalog at ``root``, retrain on all flights, evaluate and
    promote (see the module docstring); return a summary (``status``, ``message``, per-flight statuses,
    what was pseudolabeled, the metric, the registry decision and its reason).

    ``settings.work_uri`` (default ``<root>/work``) holds the flights' outputs; ``settings.tracking_uri``
    (default ``$MLFLOW_TRACKING_URI``, or a sqlite store in a local work area) the state.
    ``predictor_factory(flight, local ortho)`` replaces SAM2 (tests); ``dry_run`` only plans; ``force``
    retrains even when up-to-date.
    """
    settings = settings or RetrainSettings()
    flights = catalog.list_flights(root)  # a wrong root fails here, before anything is created
    settings = resolved(root, settings)
    if predictor_factory is None:
        settings.require_sam2()
    state = FlightState(settings.state_uri, settings.experiment)
    plan = plan_retrain(root, settings, state, flights)
    summary: dict[str, Any] = {
        "root": root,
        "work_uri": settings.work_uri,
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
        factory = predictor_factory or Sam2Once(settings)
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
        key = dataset_key([dataset_entry(s) for s in usable])
        if not force and state.trained(key):
            return summary | {
                "status": "up-to-date",
                "dataset_key": key,
                "message": "up-to-date: trained meanwhile",
            }
        summary |= train_and_promote(usable, key, settings, scratch)
    return summary


def scan(root: str, settings: RetrainSettings | None = None) -> Plan:
    """The catalog's flights with their status, and what a retraining would do (reads only)."""
    flights = catalog.list_flights(root)  # a wrong root fails here, before anything is created
    settings = resolved(root, settings or RetrainSettings())
    return plan_retrain(root, settings, FlightState(settings.state_uri, settings.experiment), flights)


def note_catalog_change(result: dict[str, Any], scanned_new: list[str]) -> None:
    """Say when the flights found new by the pipeline's scan step differ from those processed now."""
    if set(result["new"]) != set(scanned_new):
        log.info(
            "the catalog changed since the scan: new flights now %s (scan: %s)",
            ", ".join(result["new"]) or "none",
            ", ".join(scanned_new) or "none",
        )
