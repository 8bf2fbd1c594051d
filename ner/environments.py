"""Moving a model version from one environment to the next (staging -> prod) without
retraining.

Each environment has its own registered model, experiment, storage prefix and Label Studio
project (:data:`ner.settings.ENVIRONMENT_DEFAULTS`). :func:`promote_across` copies a version
of the source environment's registered model into the target's with MLflow's
``MlflowClient.copy_model_version`` (same artifacts, new version number), scores the copy on
the *target's* frozen gold set the way train-ner scores (:func:`ner.evaluation.score_model`,
logged with :meth:`Registry.log_evaluation`, recorded with :meth:`Registry.record_evaluation`)
and moves the target's ``@champion`` only through :meth:`Registry.promote`, under the usual
promotion rule against the target's champion (or forced, with the reason audited). The copy
and the audit runs of its promotion carry the source: ``brandloop.source_model``,
``brandloop.source_version``, ``brandloop.source_run``.

Both registered models must live on one MLflow registry (``copy_model_version`` resolves
its ``models:/`` source there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from ner import datasets, evaluation
from ner.errors import (
    ConfigError,
    ModelNotFoundError,
    NoGoldSetError,
    RegistryError,
)
from ner.modelcard import titled_as_copy, without_alias_notes
from ner.registry import (
    CHAMPION,
    GATED_IN,
    TAG_PREFIX,
    AuditEvent,
    Decision,
    Registry,
    decide,
    default_actor,
    does_not_exist,
    run_tags,
    unchecked_refusals,
)
from ner.settings import Settings
from ner.storage import env_storage
from ner.types import Annotation

log = logging.getLogger(__name__)

SOURCE_MODEL = f"{TAG_PREFIX}source_model"
SOURCE_VERSION = f"{TAG_PREFIX}source_version"
SOURCE_RUN = f"{TAG_PREFIX}source_run"
SOURCE_ENV = f"{TAG_PREFIX}source_env"
#: Version tags that describe the source's own history (its evaluations on its gold sets,
#: its alias moves): dropped from the copy, which starts its history in the target.
_SOURCE_HISTORY = (
    f"{TAG_PREFIX}eval.",
    f"{TAG_PREFIX}rolled_back",
    f"{TAG_PREFIX}restored",  # put back by a rollback in the source (trial AP)
    f"{TAG_PREFIX}promotion_reason",  # a promotion in the source (trial AE)
    f"{TAG_PREFIX}promoted_by",
)
#: Per-environment names two environments must not share -> the variable that sets each.
_NAMES = {
    "registered_model_name": "NER_REGISTERED_MODEL_NAME",
    "experiment_name": "NER_EXPERIMENT_NAME",
    "project_title": "NER_LABEL_STUDIO_PROJECT",
}


@dataclass(frozen=True)
class Source:
    """The version copied: registered model, version, run that logged it, environment."""

    model: str
    version: str
    run_id: str
    env: str

    def tags(self) -> dict[str, str]:
        return {
            SOURCE_MODEL: self.model,
            SOURCE_VERSION: self.version,
            SOURCE_RUN: self.run_id,
            SOURCE_ENV: self.env,
        }

    def __str__(self) -> str:
        return f"{self.env} {self.model}/{self.version}"


@dataclass(frozen=True)
class CrossPromotion:
    """Outcome of :func:`promote_across`.

    ``version`` is the copy in ``model`` (the target's registered model); ``f1`` its score on
    the target's gold set ``gold_hash``; ``champion``/``champion_f1`` the target's champion
    before (its F1 on the same gold set, None without a champion); ``promoted`` whether
    ``@champion`` moved to the copy; ``threshold`` the target's business F1 threshold;
    ``events`` the audited alias moves; ``cold_start_f1`` the target's cold start's F1 on
    that gold set, which a first model may not fall below (None with a champion).
    """

    source: Source
    model: str
    version: str
    gold_hash: str
    f1: float
    champion: str | None
    champion_f1: float | None
    decision: Decision
    threshold: float
    promoted: bool = False
    events: tuple[AuditEvent, ...] = ()
    cold_start_f1: float | None = None
    #: The copy was made by an earlier promotion of the same source (none made now).
    reused: bool = False
    #: The copy was the target's champion already: no alias moved.
    already: bool = False


def open_registry(settings: Settings) -> Registry:
    """The registry of ``settings``' environment (its registered model and experiment)."""
    return Registry(
        settings.mlflow_tracking_uri,
        model_name=settings.registered_model_name,
        experiment_name=settings.experiment_name,
        artifact_location=settings.artifact_location(),
    )


def check_apart(source: Settings, target: Settings) -> None:
    """Raise :class:`ConfigError` unless the two environments are different, share no
    registered model, experiment or Label Studio project, and sit on one MLflow registry."""
    if source.env == target.env:
        raise ConfigError(f"source and target are both {source.env!r}: name two environments")
    for name, variable in _NAMES.items():
        if getattr(source, name) == getattr(target, name):
            raise ConfigError(
                f"{source.env} and {target.env} share {name} {getattr(source, name)!r}: unset "
                f"{variable} so each environment gets its own"
            )
    if source.mlflow_tracking_uri != target.mlflow_tracking_uri:
        raise ConfigError(
            f"{source.env} and {target.env} use different MLflow servers "
            f"({source.mlflow_tracking_uri} vs {target.mlflow_tracking_uri}): copying a model "
            "version needs both registered models on one registry"
        )


def target_gold_set(settings: Settings) -> tuple[datasets.GoldSet, list[Annotation]]:
    """The gold set in force in ``settings``' environment storage and its annotations.

    Raises :class:`~ner.errors.NoGoldSetError` naming the storage when none is frozen there.
    """
    storage = env_storage(settings)
    loaded = datasets.load_gold_set(storage)
    if loaded is None:
        raise NoGoldSetError(
            f"no gold set frozen in {storage.uri('')} ({settings.env}): a copied version is "
            f"evaluated on {settings.env}'s gold set before it may be promoted; the first "
            f"train-ner run on {settings.env}'s labels freezes it (brandloop train --set "
            f"env={settings.env}, with --set threshold=0 to freeze it without training); if "
            f"{settings.env}'s storage is elsewhere, point storage_uri at it"
        )
    return loaded


def source_version(registry: Registry, version: str, env: str) -> Source:
    """The version ``version`` of ``registry``'s model; :class:`ModelNotFoundError` naming
    the model and its versions when it has no such version, :class:`RegistryError` when the
    registry cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        mv = registry.client.get_model_version(registry.model_name, version)
    except MlflowException as exc:
        if not does_not_exist(exc):
            raise RegistryError(f"reading {registry.model_name}/{version} failed: {exc}") from exc
        from ner.models import versions_phrase

        raise ModelNotFoundError(
            f"{env} model {registry.model_name} has no version {version!r} "
            f"({versions_phrase(registry.versions())})"
        ) from exc
    return Source(registry.model_name, str(mv.version), str(mv.run_id or ""), env)


def existing_copy(source: Source, target: Registry) -> str | None:
    """The version of ``target``'s model copied from ``source`` before (a refused copy
    promoted again with ``--force``, a retried run), or None: a version is copied once."""
    from mlflow.exceptions import MlflowException

    try:
        versions = target.client.search_model_versions(f"name='{target.model_name}'")
    except MlflowException as exc:
        raise RegistryError(f"listing versions of {target.model_name} failed: {exc}") from exc
    found = [
        int(mv.version)
        for mv in versions
        if (mv.tags or {}).get(SOURCE_MODEL) == source.model
        and (mv.tags or {}).get(SOURCE_VERSION) == source.version
    ]
    return str(min(found)) if found else None


def copy_version(source: Source, target: Registry) -> str:
    """Copy ``source`` into ``target``'s registered model with ``copy_model_version`` (same
    artifacts, no retraining); returns the new version. The copy keeps the source's tags but
    not its history (evaluations, alias moves and their notes on the card, promotion
    reasons) and gains the ``source_*`` tags."""
    from mlflow.exceptions import MlflowException

    try:
        with contextlib.redirect_stderr(io.StringIO()) as said:  # MLflow prints its progress
            copied = target.client.copy_model_version(
                src_model_uri=f"models:/{source.model}/{source.version}",
                dst_name=target.model_name,
            )
        log.info("%s", said.getvalue().strip())
        version = str(copied.version)
        for key in copied.tags or {}:
            if key.startswith(_SOURCE_HISTORY) or (
                key.startswith(TAG_PREFIX) and key.endswith("_since")
            ):
                target.client.delete_model_version_tag(target.model_name, version, key)
        gated = GATED_IN not in (copied.tags or {}) and any(
            key.startswith(f"{TAG_PREFIX}gate.") for key in copied.tags or {}
        )
        for key, value in {**source.tags(), **({GATED_IN: source.env} if gated else {})}.items():
            target.client.set_model_version_tag(target.model_name, version, key, value)
        card = target.client.get_model_version(target.model_name, version).description or ""
        trained = titled_as_copy(without_alias_notes(card), target.model_name, version)
        if trained != card:  # the source's alias moves and title
            target.describe_version(version, trained)
    except MlflowException as exc:
        raise RegistryError(f"copying {source} to {target.model_name} failed: {exc}") from exc
    return version


def evaluate_version(
    settings: Settings,
    registry: Registry,
    version: str,
    gold: tuple[datasets.GoldSet, list[Annotation]],
    *,
    role: str,
    tags: Mapping[str, str] | None = None,
) -> float:
    """Score ``version`` of ``registry``'s model on the gold set ``gold`` as train-ner does
    (:func:`ner.evaluation.score_model` with the settings' labels), log the evaluation as a
    run of the environment's experiment and record it on the version; returns its micro F1
    (0..1)."""
    from ner.models import load_model

    gold_set, annotations = gold
    loaded = load_model(
        f"models:/{registry.model_name}/{version}",
        labels=settings.labels,
        base_model=settings.base_model,
        label_map=settings.base_label_map,
        tracking_uri=settings.mlflow_tracking_uri,
    )
    report = evaluation.score_model(loaded.nlp, annotations, settings.labels)
    metrics = report.to_metrics()
    registry.log_evaluation(
        report,
        model_version=loaded.version,
        role=role,
        gold_hash=gold_set.hash,
        tags=run_tags(settings.env, tags),
    )
    registry.record_evaluation(version, gold_set.hash, metrics, note=role != "copy")
    return float(report.f1)


def cold_start_f1(
    settings: Settings, gold: tuple[datasets.GoldSet, list[Annotation]]
) -> tuple[str, float]:
    """``(name, micro F1)`` of the settings' cold start on ``gold`` (not logged): what a
    first promotion may not fall below, since apply predicts with it while no version is
    champion. Raises :class:`~ner.errors.ModelError` when it cannot be loaded."""
    from ner.parallel import ModelRef

    loaded = ModelRef.for_settings(settings.cold_start, settings).load()
    report = evaluation.score_model(loaded.nlp, gold[1], settings.labels)
    return loaded.version, float(report.f1)


def _champion_f1(
    settings: Settings, registry: Registry, gold: tuple[datasets.GoldSet, list[Annotation]]
) -> tuple[str | None, float | None]:
    """The target's champion and its F1 on ``gold`` (scored now if it never was)."""
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return None, None
    f1 = registry.evaluated_f1(champion, gold[0].hash)
    if f1 is None:
        f1 = evaluate_version(settings, registry, champion, gold, role="champion")
    return champion, f1


def _already_champion(
    settings: Settings,
    registry: Registry,
    gold: tuple[datasets.GoldSet, list[Annotation]],
    src: Source,
) -> CrossPromotion:
    """The outcome of promoting a copy that is ``settings``' champion already: nothing moves
    (scripts that promote again get the same answer, not an error)."""
    champion, f1 = _champion_f1(settings, registry, gold)
    assert champion is not None and f1 is not None  # the caller read the alias
    reason = f"{src} is already {settings.env}'s @champion ({registry.model_name}/{champion})"
    return CrossPromotion(
        src, registry.model_name, champion, gold[0].hash, f1, champion, f1,
        Decision(False, reason), settings.threshold, reused=True, already=True,
    )  # fmt: skip


def promote_across(
    source: Settings,
    target: Settings,
    version: str,
    *,
    reason: str,
    force: bool = False,
    actor: str | None = None,
) -> CrossPromotion:
    """Copy ``version`` of the source environment's registered model into the target's,
    evaluate the copy on the target's gold set and make it the target's ``@champion`` if the
    promotion rule (threshold, beat the target's champion by the margin; with no champion,
    not below its cold start) says so, or with
    ``force`` (audited with the rule's verdict). The source environment is never changed.

    Checks before anything is written: :class:`ConfigError` when the environments share a
    name or a registry is apart, :class:`NoGoldSetError` when the target has no gold set,
    :class:`ModelNotFoundError` when the source has no such version. A refused copy stays in the
    target as an evaluated version that is not champion (``promoted`` False); promoting the
    same source again reuses it (:func:`existing_copy`) and its evaluation on that gold set;
    when that copy is the target's champion already, nothing moves (``already``).
    """
    check_apart(source, target)
    gold = target_gold_set(target)
    src = source_version(open_registry(source), version, source.env)
    registry = open_registry(target)
    earlier = existing_copy(src, registry)
    copy = earlier or copy_version(src, registry)
    if registry.alias_version(CHAMPION) == copy:
        return _already_champion(target, registry, gold, src)
    f1 = registry.evaluated_f1(copy, gold[0].hash)
    if f1 is None:
        f1 = evaluate_version(target, registry, copy, gold, role="copy", tags=src.tags())
        copied_from = f"{src.model}/{src.version}"
        registry.note_copy(copy, source=copied_from, env=target.env, f1=f1, gold_hash=gold[0].hash)
    champion, champion_f1 = _champion_f1(target, registry, gold)
    cold = None if champion is not None else cold_start_f1(target, gold)
    rule = decide(
        f1, champion_f1, target.threshold, target.promotion_margin, cold_start=cold,
        subject=f"copy {registry.model_name}/{copy}",
    )  # fmt: skip
    rule = _with_gate_refusals(rule, registry.gate_refusals(copy), src)
    outcome = CrossPromotion(
        src, registry.model_name, copy, gold[0].hash, f1, champion, champion_f1, rule,
        target.threshold, cold_start_f1=None if cold is None else cold[1],
        reused=earlier is not None,
    )  # fmt: skip
    if not rule.promote and not force:
        return outcome
    why = reason if rule.promote else f"{reason} (forced; rule said: {rule.reason})"
    events = _promote_copy(registry, outcome, f"from {src} (run {src.run_id}): {why}", actor)
    return dataclasses.replace(outcome, promoted=True, events=events)


def _with_gate_refusals(
    rule: Decision, refusals: tuple[list[str], str | None], src: Source
) -> Decision:
    """``rule``, refused too when a train-ner gate refused the copied version by rules the
    rule does not check again (``refusals``: :meth:`Registry.gate_refusals` of the copy,
    which keeps the source's tags): a promotion by hand asks ``force`` for those, so a
    copy does too (trial AL took a version refused by confidence to prod without it)."""
    rules, gated_in = refusals
    unchecked = unchecked_refusals(rules)
    if not unchecked:
        return rule
    said = (
        f"{gated_in or src.env}'s train-ner gate refused {src.model}/{src.version} by "
        f"{', '.join(unchecked)}, which promote does not re-check"
    )
    return Decision(False, said if rule.promote else f"{rule.reason}; {said}")


def _promote_copy(
    registry: Registry, outcome: CrossPromotion, why: str, actor: str | None
) -> tuple[AuditEvent, ...]:
    """Make the copy champion through :meth:`Registry.promote` (audited, ``why`` as the
    reason); the audit runs of the moves to it carry the ``source_*`` tags."""
    events = registry.promote(
        outcome.version,
        gold_hash=outcome.gold_hash,
        decision=Decision(True, why),
        metrics={  # no champion, no champion_f1 (a 0.0 would read as a score)
            "challenger_f1": outcome.f1,
            **({} if outcome.champion_f1 is None else {"champion_f1": outcome.champion_f1}),
            **({} if outcome.cold_start_f1 is None else {"cold_start_f1": outcome.cold_start_f1}),
            "threshold": outcome.threshold,
        },
        actor=actor,
    )
    for event in events:
        if event.run_id and event.to_version == outcome.version:
            for key, value in outcome.source.tags().items():
                registry.client.set_tag(event.run_id, key, value)
    # the copy's card and tags say why it is champion here (they said the source's: AE)
    registry.note_manual_promotion(
        outcome.version, reason=why, actor=actor or default_actor(), events=events
    )
    return tuple(events)
