"""Training and promotion (steps 3 and 4 of :mod:`crownsam.flights.retrain`): one Mask R-CNN on the
pseudolabels of every processed flight, evaluated on the fixed evaluation set, promoted only if better."""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from crownsam.common.errors import CrownsamError
from crownsam.flights.plan import FlightStatus
from crownsam.flights.process import flight_coco
from crownsam.flights.settings import RetrainSettings
from crownsam.flights.state import DATASET_KEY, KIND, TRAINING_KIND, FlightState

log = logging.getLogger(__name__)

METRIC = "segm_AP"
NO_EVALUATION_SET = (
    "no flight has manual crowns and a test area: there is nothing to evaluate a model on, so nothing was "
    "trained (add manual.gpkg + test_area.gpkg to a flight)"
)


def train_and_promote(
    usable: list[FlightStatus], key: str, settings: RetrainSettings, scratch: Path
) -> dict[str, Any]:
    """Steps 3 and 4: merge the flights' COCO exports, train, evaluate on the merged test split, register
    and promote (see :mod:`crownsam.flights.retrain`); return the summary's training part."""
    from mlflow import MlflowClient

    from crownsam.coco.export import test_set_id
    from crownsam.coco.merge import merge_exports
    from crownsam.common.provenance import git_commit
    from crownsam.comparison.registry import Candidate, register_and_promote
    from crownsam.training import tracking
    from crownsam.training.api import evaluate_model
    from crownsam.training.config import InferenceParams
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
        inference=InferenceParams(device=settings.sam2.device), progress=False,
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
                    inference=InferenceParams(device=settings.sam2.device), log_to_mlflow=False,
                    progress=False,
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
    state = FlightState(settings.state_uri, settings.experiment)
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
