"""A stand-in for ``kfp.Client``: no Kubeflow Pipelines API server can run here (it needs a Kubernetes
cluster). It checks every call against ``kfp.Client``'s real method signatures and keeps what would be
sent, including the compiled package; everything before the call is the product's real code."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import kfp
import yaml

KFP_CLIENT = kfp.Client  # the real class, for signatures (tests replace kfp.Client by the recorder)


class RecordingClient:
    """Stands in for kfp.Client (no KFP server here): checks each call against kfp.Client's signature
    and keeps what would be sent."""

    def __init__(self, *args, existing: list[str] | None = None, **kwargs) -> None:
        self.init = kwargs
        self.calls: list[tuple[str, dict]] = []
        self.experiments: dict[str, str] = {}
        self.existing = {f"rr-{i}": name for i, name in enumerate(existing or [])}

    def _record(self, name: str, *args, **kwargs) -> dict:
        bound = inspect.signature(getattr(KFP_CLIENT, name)).bind(self, *args, **kwargs)
        call = dict(bound.arguments)
        call.pop("self")
        self.calls.append((name, call))
        return call

    def get_experiment(self, experiment_id=None, experiment_name=None, namespace=None):
        self._record("get_experiment", experiment_id, experiment_name, namespace)
        if experiment_name not in self.experiments:
            raise ValueError(f"No experiment is found with name {experiment_name}.")
        return SimpleNamespace(experiment_id=self.experiments[experiment_name])

    def create_experiment(self, name, description=None, namespace=None):
        self._record("create_experiment", name, description, namespace)
        self.experiments[name] = f"exp-{len(self.experiments) + 1}"
        return SimpleNamespace(experiment_id=self.experiments[name])

    def list_recurring_runs(self, **kwargs):
        self._record("list_recurring_runs", **kwargs)
        runs = [SimpleNamespace(recurring_run_id=k, display_name=v) for k, v in self.existing.items()]
        return SimpleNamespace(recurring_runs=runs or None)

    def delete_recurring_run(self, recurring_run_id):
        self._record("delete_recurring_run", recurring_run_id)
        del self.existing[recurring_run_id]
        return {}

    def create_recurring_run(self, *args, **kwargs):
        call = self._record("create_recurring_run", *args, **kwargs)
        with open(call["pipeline_package_path"]) as f:
            call["package"] = yaml.safe_load(f)
        return SimpleNamespace(recurring_run_id="rr-new")

    def create_run_from_pipeline_package(self, *args, **kwargs):
        call = self._record("create_run_from_pipeline_package", *args, **kwargs)
        with open(call["pipeline_file"]) as f:
            call["package"] = yaml.safe_load(f)
        return SimpleNamespace(run_id="run-123")

    def only(self, name: str) -> dict:
        (call,) = [c for n, c in self.calls if n == name]
        return call
