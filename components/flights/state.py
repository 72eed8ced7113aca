"""Which flights are processed, and which flight sets a model was trained on: asked of MLflow, never of a
marker file.

Rules:

* A flight is **processed** when the experiment (default ``crownsam-flights``) holds a run with status
  ``FINISHED`` and tags ``crownsam.kind = flight-pseudolabels``, ``flight_id = <id>`` and the
  **same input fingerprints** as the flight has now: ``ortho_fingerprint`` (``storage.fingerprint`` of
  ``ortho.tif``) and ``segments_fingerprint`` (of ``coarse.gpkg``, else of ``chm.tif``). A re-uploaded
  orthophoto or new coarse segments make it new again; rewriting ``flight.yaml`` does not.
* A flight run is created ``RUNNING`` when processing starts and set ``FINISHED`` only after its outputs
  (segments, pseudolabels, COCO export, under the work area) are written; a failure sets ``FAILED`` and a
  crash leaves it ``RUNNING``: neither counts.
* A flight set is **trained** when the experiment holds a ``FINISHED`` run with tags ``crownsam.kind =
  flight-retraining``, ``crownsam.dataset_key = <key>`` and ``crownsam.retrain_complete = true`` (set
  after the model was evaluated and registered). The dataset key (:func:`dataset_key`) names the flight
  runs trained on and the fingerprints of their manual crowns and test areas.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crownsam.common import storage
from crownsam.common.errors import CrownsamError, mlflow_errors
from crownsam.flights.catalog import Flight

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "crownsam-flights"
KIND = "crownsam.kind"
FLIGHT_KIND = "flight-pseudolabels"
TRAINING_KIND = "flight-retraining"
DATASET_KEY = "crownsam.dataset_key"
COMPLETE_TAG = "crownsam.retrain_complete"


def digest(obj: Any, n: int = 16) -> str:
    """Short sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def resolve_tracking_uri(tracking_uri: str | None, work_uri: str | None = None) -> str:
    """The given URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<work>/mlflow.db`` for a local work
    area; a ``gs://`` work area without a tracking URI is an error (sqlite cannot live in a bucket)."""
    if tracking_uri:
        return tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if work_uri and not storage.is_remote(work_uri):
        path = Path(work_uri).expanduser().resolve()  # created with the store (FlightState), not here
        return f"sqlite:///{(path / 'mlflow.db').as_posix()}"
    raise CrownsamError(
        None,
        "an MLflow tracking URI is needed (--tracking-uri or MLFLOW_TRACKING_URI) for a remote work area",
    )


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for other stores)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///"))  # sqlite:////abs -> /abs; sqlite:///rel -> rel


@dataclass(frozen=True)
class FlightInputs:
    """The content identity of a flight's inputs to pseudolabeling."""

    flight_id: str
    ortho_fingerprint: str
    segments_source: str  # "coarse" or "chm"
    segments_fingerprint: str

    @property
    def key(self) -> str:
        """Folder name for this version of the flight's outputs (16 hex digits)."""
        return digest([self.ortho_fingerprint, self.segments_source, self.segments_fingerprint])


def flight_inputs(flight: Flight) -> FlightInputs:
    """Fingerprint the orthophoto and the segment source (``gs://``: metadata only; local: sha256)."""
    role = flight.segments_role
    return FlightInputs(
        flight.flight_id,
        storage.fingerprint(flight.file("ortho")),
        role,
        storage.fingerprint(flight.file(role)),
    )


@dataclass(frozen=True)
class FlightRecord:
    """A FINISHED flight run: what was processed and where its outputs are."""

    run_id: str
    flight_id: str
    ortho_fingerprint: str
    segments_source: str
    segments_fingerprint: str
    output_uri: str
    pseudolabels_uri: str
    coco_uri: str
    start_time: int
    tags: Mapping[str, str] = field(default_factory=dict)

    def matches(self, inputs: FlightInputs) -> bool:
        return (
            self.flight_id == inputs.flight_id
            and self.ortho_fingerprint == inputs.ortho_fingerprint
            and self.segments_source == inputs.segments_source
            and self.segments_fingerprint == inputs.segments_fingerprint
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class FlightState:
    """Reads and writes the flight and retraining runs of one MLflow experiment."""

    def __init__(self, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client: Any = None
        self._experiment_id: str | None = None

    @property
    def client(self) -> Any:
        """The MLflow client, made on first use (making one creates a missing sqlite store)."""
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    # -- experiment ---------------------------------------------------------------------------------

    def experiment_id(self, create: bool = False) -> str | None:
        """The experiment's id; None when it does not exist and ``create`` is False. Reading never
        creates anything: a sqlite store whose file does not exist yet holds no experiment (MLflow would
        create the database on first contact), so a scan or a dry run leaves the work area alone."""
        if self._experiment_id is None:
            db = sqlite_file(self.tracking_uri)
            if db is not None and not db.exists():
                if not create:
                    return None
                db.parent.mkdir(parents=True, exist_ok=True)
            try:
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is not None:
                    self._experiment_id = exp.experiment_id
                elif create:
                    from crownsam.training.tracking import experiment_id

                    self._experiment_id = experiment_id(self.experiment, self.tracking_uri)
            except mlflow_errors() as exc:
                raise CrownsamError(self.tracking_uri, f"cannot reach MLflow ({_one_line(exc)})") from exc
        return self._experiment_id

    def _search(self, filter_string: str) -> Iterator[Any]:
        exp = self.experiment_id()
        if exp is None:
            return
        token = None
        while True:
            try:
                page = self.client.search_runs(
                    [exp], filter_string=filter_string, max_results=1000, page_token=token,
                    order_by=["attributes.start_time DESC"],
                )  # fmt: skip
            except mlflow_errors() as exc:
                raise CrownsamError(
                    self.tracking_uri, f"cannot search MLflow runs ({_one_line(exc)})"
                ) from exc
            yield from page
            token = page.token
            if not token:
                return

    # -- flights ------------------------------------------------------------------------------------

    def flight_records(self, flight_id: str | None = None) -> list[FlightRecord]:
        """FINISHED flight runs (of one flight, or all), newest first."""
        query = f"tags.`{KIND}` = '{FLIGHT_KIND}' and attributes.status = 'FINISHED'"
        if flight_id is not None:
            query += f" and tags.flight_id = '{flight_id}'"
        out = []
        for run in self._search(query):
            t = run.data.tags
            out.append(
                FlightRecord(
                    run_id=run.info.run_id,
                    flight_id=t.get("flight_id", ""),
                    ortho_fingerprint=t.get("ortho_fingerprint", ""),
                    segments_source=t.get("segments_source", ""),
                    segments_fingerprint=t.get("segments_fingerprint", ""),
                    output_uri=t.get("output_uri", ""),
                    pseudolabels_uri=t.get("pseudolabels_uri", ""),
                    coco_uri=t.get("coco_uri", ""),
                    start_time=int(run.info.start_time or 0),
                    tags=dict(t),
                )
            )
        return out

    def processed(
        self, inputs: FlightInputs, records: Sequence[FlightRecord] | None = None
    ) -> FlightRecord | None:
        """The newest FINISHED run of this flight with these inputs, or None (asks MLflow unless
        ``records`` are given)."""
        pool = self.flight_records(inputs.flight_id) if records is None else records
        return next((r for r in pool if r.matches(inputs)), None)

    def start_flight(self, inputs: FlightInputs, tags: Mapping[str, str]) -> str:
        """Create the flight's run, RUNNING, tagged with its inputs; return the run id."""
        exp = self.experiment_id(create=True)
        assert exp is not None
        all_tags = {
            KIND: FLIGHT_KIND,
            "flight_id": inputs.flight_id,
            "ortho_fingerprint": inputs.ortho_fingerprint,
            "segments_source": inputs.segments_source,
            "segments_fingerprint": inputs.segments_fingerprint,
            "inputs_key": inputs.key,
            **tags,
        }
        try:
            run = self.client.create_run(exp, tags=all_tags, run_name=f"pseudolabels {inputs.flight_id}")
        except mlflow_errors() as exc:
            raise CrownsamError(self.tracking_uri, f"cannot create an MLflow run ({_one_line(exc)})") from exc
        return run.info.run_id

    def finish(
        self,
        run_id: str,
        tags: Mapping[str, str],
        metrics: Mapping[str, float] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Record outputs (tags, metrics, a summary artifact), then set the run FINISHED."""
        from mlflow.entities import Metric, RunTag

        now = _now_ms()
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        if summary is not None:
            self.client.log_dict(run_id, dict(summary), "summary.json")
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, run_id: str, reason: str) -> None:
        """Mark a run FAILED with the reason (best effort: the original error matters more)."""
        try:
            self.client.set_tag(run_id, "crownsam.failure", reason[:4000])
            self.client.set_terminated(run_id, "FAILED")
        except mlflow_errors() as exc:  # MLflow down while handling another error
            log.warning("could not mark MLflow run %s FAILED: %s", run_id, _one_line(exc))

    # -- retraining ---------------------------------------------------------------------------------

    def trained(self, dataset_key: str) -> str | None:
        """The newest complete retraining run for ``dataset_key``, or None."""
        query = (
            f"tags.`{KIND}` = '{TRAINING_KIND}' and tags.`{DATASET_KEY}` = '{dataset_key}' "
            f"and tags.`{COMPLETE_TAG}` = 'true' and attributes.status = 'FINISHED'"
        )
        return next((run.info.run_id for run in self._search(query)), None)

    def last_training(self) -> Any | None:
        """The newest complete retraining run (any dataset), or None."""
        query = f"tags.`{KIND}` = '{TRAINING_KIND}' and tags.`{COMPLETE_TAG}` = 'true'"
        return next(iter(self._search(query)), None)

    def complete_training(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(
            run_id, tags=[RunTag(k, str(v)) for k, v in {**tags, COMPLETE_TAG: "true"}.items()]
        )


def dataset_key(entries: Sequence[tuple[str, str, str, str]]) -> str:
    """Key of a training set: sorted ``(flight_id, flight run id, manual fingerprint, test-area
    fingerprint)`` (empty strings for a flight without manual crowns)."""
    return digest(sorted(entries))


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
