"""Model registry: register both models, decide champion/challenger by a stated rule, apply aliases.

Rule (``decide``): the candidate with the higher ``metric`` (segm AP on the held-out test set) is the
best. It becomes ``champion`` only if there is no champion yet or it beats the current champion's
``metric`` **on the same test set** (strictly greater). Otherwise it becomes ``challenger`` and the
champion stays. The other candidate is left without alias (tagged with the reason). Every version gets
tags saying why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from crownsam.common.errors import mlflow_errors
from crownsam.common.tracking import using_tracking_uri

log = logging.getLogger(__name__)

REGISTERED_MODEL = "crownsam-maskrcnn"  # the default registered model name

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class Candidate:
    """A freshly trained model: its label source, MLflow run, and test metric."""

    source: str
    run_id: str
    metric: float


@dataclass
class Decision:
    """What the registry step decided, in words and aliases."""

    best: str
    champion_before: str | None  # version
    champion_metric: float | None
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> candidate source
    reasons: dict[str, str] = field(default_factory=dict)  # candidate source -> why
    promoted: bool = False


def decide(
    candidates: list[Candidate],
    champion_version: str | None,
    champion_metric: float | None,
    metric_name: str = "segm_AP",
) -> Decision:
    """Pure promotion rule (see module docstring). ``champion_metric`` must be on the same test set;
    None with a ``champion_version`` means the champion could not be measured on it (never replaced)."""
    if not candidates:
        raise ValueError("no candidates to decide between")
    ranked = sorted(candidates, key=lambda c: (-_num(c.metric), c.source))
    best, rest = ranked[0], ranked[1:]
    d = Decision(best=best.source, champion_before=champion_version, champion_metric=champion_metric)
    if champion_version is not None and champion_metric is None:
        d.aliases[CHALLENGER] = best.source
        d.reasons[best.source] = (
            f"challenger: champion v{champion_version} has no {metric_name} on this test set to compare with"
        )
    elif champion_version is None or _num(best.metric) > _num(champion_metric):
        d.promoted = True
        d.aliases[CHAMPION] = best.source
        d.reasons[best.source] = f"champion: best {metric_name} {best.metric:.4g}" + (
            ""
            if champion_version is None
            else f" > previous champion v{champion_version} {champion_metric:.4g}"
        )
    else:
        d.aliases[CHALLENGER] = best.source
        d.reasons[best.source] = (
            f"challenger: best {metric_name} {best.metric:.4g} does not beat champion v{champion_version} "
            f"{champion_metric:.4g} on the same test set"
        )
    for c in rest:
        if CHALLENGER not in d.aliases:
            d.aliases[CHALLENGER] = c.source
            d.reasons[c.source] = (
                f"challenger: {metric_name} {c.metric:.4g} below {best.source} {best.metric:.4g}"
            )
        else:
            d.reasons[c.source] = (
                f"no alias: {metric_name} {c.metric:.4g} below {best.source} {best.metric:.4g}"
            )
    return d


def _num(x: float | None) -> float:
    return -math.inf if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def current_champion(client, name: str) -> tuple[str | None, dict[str, str]]:
    """The version holding the ``champion`` alias and its tags, or (None, {})."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, {}
    return str(mv.version), dict(mv.tags)


def register_and_promote(
    client,
    name: str,
    candidates: list[Candidate],
    *,
    test_set: str,
    tags: dict[str, str],
    metric_name: str = "segm_AP",
    reevaluate: Callable[[str], float] | None = None,
) -> tuple[Decision, dict[str, str]]:
    """Register every candidate under ``name`` with ``tags``, decide, and set aliases; return the decision
    and ``{source: version}``.

    The current champion's metric is taken from its ``test_set``/``metric`` tags when they match this test
    set; otherwise ``reevaluate(version)`` measures it on this test set (None: it cannot be compared and
    the best candidate becomes challenger).
    """
    import mlflow

    from crownsam.common.errors import CrownsamError

    champ_version, champ_tags = current_champion(client, name)
    champ_metric: float | None = None
    if champ_version is not None:
        if champ_tags.get("test_set") == test_set and metric_name in champ_tags:
            champ_metric = float(champ_tags[metric_name])
        elif reevaluate is not None:
            champ_metric = reevaluate(champ_version)
            log.info(
                "re-evaluated champion v%s on this test set: %s %.4f",
                champ_version,
                metric_name,
                champ_metric,
            )
        else:
            champ_metric = math.inf  # not comparable: never silently replace a champion
    versions: dict[str, str] = {}
    for c in candidates:
        try:
            with using_tracking_uri(
                client.tracking_uri
            ):  # the fluent API reads the global URI, not the client's
                mv = mlflow.register_model(
                    f"runs:/{c.run_id}/model", name, tags=tags | {"label_source": c.source}
                )
        except mlflow_errors() as exc:
            raise CrownsamError(None, f"cannot register run {c.run_id} as {name}: {exc}") from exc
        versions[c.source] = str(mv.version)
        client.set_model_version_tag(name, mv.version, "test_set", test_set)
        client.set_model_version_tag(name, mv.version, metric_name, f"{c.metric:.6f}")
    d = decide(candidates, champ_version, champ_metric, metric_name)
    for alias, source in d.aliases.items():
        client.set_registered_model_alias(name, alias, versions[source])
    for source, why in d.reasons.items():
        client.set_model_version_tag(name, versions[source], "decision", why)
    return d, versions
