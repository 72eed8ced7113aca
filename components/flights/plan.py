"""Which flights of the catalog are new, processed, incomplete or invalid, and what a retraining would do
(step 1 of :mod:`crownsam.flights.retrain`; the rules of "processed" and "trained" are in
:mod:`crownsam.flights.state`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crownsam.common import storage
from crownsam.common.errors import CrownsamError
from crownsam.flights import catalog
from crownsam.flights.catalog import Flight
from crownsam.flights.settings import RetrainSettings
from crownsam.flights.state import FlightInputs, FlightRecord, FlightState, dataset_key, flight_inputs

NEW, PROCESSED, INCOMPLETE, INVALID = "new", "processed", catalog.INCOMPLETE, catalog.INVALID


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
        key=lambda s: (s.status != PROCESSED, s.flight.meta.date if s.flight.meta else "", s.flight_id),
    )
    ref: tuple[str, tuple[str, ...]] | None = None
    spec = ",".join(map(str, bands))
    for s in complete:
        names = catalog.selected_band_names(s.flight, bands)
        if names is None:
            s.status = INVALID
            s.reason = (
                f"{catalog.META}: bands lists {len(s.flight.meta.bands) if s.flight.meta else 0} names; "
                f"--bands {spec} needs more"
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
    root: str, settings: RetrainSettings, state: FlightState, flights: list[Flight] | None = None
) -> Plan:
    """List the catalog (unless ``flights`` are given) and ask MLflow what is processed and trained (see
    the module docstring)."""
    flights = catalog.list_flights(root) if flights is None else flights
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
        plan.dataset_key = dataset_key([dataset_entry(s) for s in plan.of(PROCESSED)])
        plan.trained_by = state.trained(plan.dataset_key)
    return plan


def dataset_entry(s: FlightStatus) -> tuple[str, str, str, str]:
    assert s.record is not None
    manual_fp, area_fp = evaluation_fingerprints(s.flight)
    return (s.flight_id, s.record.run_id, manual_fp, area_fp)


def scan_summary(plan: Plan) -> dict[str, Any]:
    """What the retraining pipeline's first step returns: ``{"action", "new", "flights"}``, action
    ``retrain`` when there is work (new flights, or processed flights without a model trained on them),
    else ``up-to-date``, ``no-evaluation-set`` or ``no-flights``."""
    action = "retrain" if plan.action in ("pseudolabel", "train") else plan.action
    return {"action": action, "new": plan.new_ids, "flights": [s.row() for s in plan.flights]}
