"""What ``brandloop evaluate`` measures: one model scored on one labelled set, as the
``train-ner`` gate scores it (same predictions, same exact-match rules, same bootstrap).

The set is the environment's frozen gold set, the canary set frozen beside it, or any Label
Studio JSON export (a file, or a key under storage): posts nobody here trained on, for the
question the gold set cannot answer (does the model hold up on other posts?). Nothing is
written: no MLflow run, no record on the version (``train`` and ``promote`` do that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ner.errors import ConfigError, GoldSetError

if TYPE_CHECKING:
    from ner.gate import Interval, SetScores
    from ner.settings import Settings
    from ner.storage import Storage
    from ner.types import Annotation, Rejected

#: ``--on`` values that name a frozen set of the environment (anything else is a file).
FROZEN_SETS = ("gold", "canary")


@dataclass(frozen=True)
class LabelledSet:
    """The posts a model is scored on: what they are (``name``), their hash
    (:func:`ner.datasets.dataset_hash`) and the records of a file left out, named."""

    name: str
    digest: str
    annotations: list[Annotation]
    rejected: tuple[Rejected, ...] = ()
    #: spans of a file whose label is not scored, per label (``{"PERSON": 40}``)
    ignored_spans: dict[str, int] = field(default_factory=dict)
    #: posts of a file left out because they were forgotten (``brandloop forget``)
    n_forgotten: int = 0
    #: spans of a file whose offsets were repaired, each ``"post <id>, task <n>: <how>"``
    repairs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evaluated:
    """A model (``model``: the version or pipeline loaded) scored on ``on``; ``interval`` is
    the micro F1's bootstrap interval over posts (None for a set without posts)."""

    model: str
    on: LabelledSet
    scores: SetScores
    interval: Interval | None


def pinned_spec(settings: Settings, spec: str) -> str:
    """``spec`` with an alias resolved to its version now (the version scored is the one
    printed). Raises :class:`~ner.errors.ModelNotFoundError` (``NotPromotedYetError`` for an
    alias not set yet) when it names nothing."""
    from ner.models import check_model_spec, pin_model_uri

    uri, own = settings.mlflow_tracking_uri, settings.registered_model_name
    pinned = pin_model_uri(spec, uri, own_model=own)  # "no champion yet", not MLflow's (AJ)
    check_model_spec(pinned, uri)
    return pinned


def labelled_set(settings: Settings, storage: Storage, on: str) -> LabelledSet:
    """The set ``on`` names: ``gold``, ``canary`` or a Label Studio JSON export (its
    forgotten posts left out, as every reader leaves them out). Raises
    :class:`GoldSetError` when no gold (or canary) set is frozen or it holds no post,
    :class:`~ner.errors.InputNotFoundError` for a file that is not there and
    :class:`ConfigError` for one that is not an export or has no labelled post."""
    from ner import canary, datasets

    if on not in FROZEN_SETS:
        return _export_set(settings, storage, on)
    loaded = datasets.load_gold_set(storage)
    if loaded is None:
        raise GoldSetError(f"{_none_in_force(storage, on)} (or score a labelled export: --on FILE)")
    gold, annotations = loaded
    if on == "gold" and not annotations:
        raise GoldSetError(
            f"gold set {gold.name} holds no post any more (forgotten, or labels deleted): "
            "nothing to score on; `brandloop gold-set retire --reason ...` lets the next "
            "train freeze a new one (or score a labelled export: --on FILE)"
        )
    if on == "gold":
        return LabelledSet(f"gold set {gold.name}", gold.hash, annotations)
    found = canary.load_canary_set(storage, gold.name)
    if found is None or not found[1]:
        note = "" if found is None else f": {found[0].note}" if found[0].note else ""
        raise GoldSetError(f"gold set {gold.name} has no canary set{note}")
    return LabelledSet(f"canary set of {gold.name}", found[0].hash, found[1])


def _none_in_force(storage: Storage, on: str) -> str:
    """Why no ``on`` set (gold or canary) is in force: none frozen yet, or retired."""
    from ner import datasets

    retired, where = datasets.retirement(storage), storage.uri("")
    if retired is None and on == "gold":
        return f"no gold set frozen in {where}: the next train run freezes one"
    if retired is None:
        return f"no canary set frozen in {where}: the next train run freezes it with the gold set"
    name = retired.gold_name
    undo = "brandloop gold-set reinstate --reason ... undoes it until then"
    if on == "gold":
        return (
            f"gold set {name} was retired in {where}: the next train run freezes a new one; {undo}"
        )
    return (
        f"gold set {name} and its canary set were retired in {where}: the next train run "
        f"freezes new ones; {undo}"
    )


def _export_set(settings: Settings, storage: Storage, uri: str) -> LabelledSet:
    from ner import forget
    from ner.datasets import dataset_hash
    from ner.labelstudio.export import labelled_export

    where = f"labelled set {uri} (--on)"
    n_tasks, parsed = labelled_export(
        storage, uri, settings.labels, what="labelled set", where=where
    )
    if not parsed.records:
        first = parsed.rejected[0] if parsed.rejected else None  # a trial got counts alone
        why = f"; the first rejected: {first}" if first else ""
        raise ConfigError(
            f"{where} has no labelled post to score ({n_tasks} tasks, "
            f"{len(parsed.unlabelled)} unlabelled, {len(parsed.rejected)} rejected{why})"
        )
    records = list(forget.honour(storage, parsed.records, lambda a: a.post_id))
    rejected = tuple(parsed.rejected)
    digest = dataset_hash(records)
    n_forgotten = len(parsed.records) - len(records)
    kept = {a.post_id for a in records}
    repairs = tuple(
        f"post {post_id}, {note}"
        for post_id, notes in parsed.repairs.items()
        if post_id in kept
        for note in notes
    )
    return LabelledSet(
        f"file {uri}", digest, records, rejected, parsed.ignored_spans, n_forgotten, repairs
    )


def evaluate(settings: Settings, spec: str, on: LabelledSet) -> Evaluated:
    """Load ``spec`` (as :func:`pinned_spec` gives it) and score it on ``on`` with the
    settings' labels; the interval at the gate's level, resamples and seed
    (``gate_bootstrap_level``, ``gate_bootstrap_resamples``, ``seed``). Raises
    :class:`~ner.errors.ModelError` when the model cannot be loaded."""
    from ner import evaluation
    from ner.gate import bootstrap_f1, score_spans
    from ner.parallel import ModelRef

    loaded = ModelRef.for_settings(spec, settings).load()
    labels: Sequence[str] = settings.labels
    predicted = evaluation.predict_spans(loaded.nlp, on.annotations, labels)
    scores = score_spans(evaluation.spans_by_post(on.annotations), predicted, labels)
    level, resamples = settings.gate_bootstrap_level, settings.gate_bootstrap_resamples
    interval = (  # the gate's and the model card's seed: the same interval they record
        bootstrap_f1(scores.posts, level=level, resamples=resamples, seed=settings.seed)
        if scores.posts
        else None
    )
    return Evaluated(loaded.version, on, scores, interval)


def trained_on(settings: Settings, storage: Storage, spec: str, on: LabelledSet) -> str | None:
    """A warning when ``spec`` (pinned: ``models:/<name>/<version>``) is a version whose
    training pool (stored under ``storage``) holds posts of ``on``, a file: its figures
    then are not those of unseen posts. None otherwise (the gold and canary sets are never
    trained on; a pool outside ``storage`` is not read). Raises
    :class:`~ner.errors.RegistryError` when MLflow fails."""
    import re

    from ner.records import read_annotations
    from ner.registry import Registry

    found = re.fullmatch(r"models:/([^/@]+)/(\d+)", spec)
    if found is None or on.name.startswith(("gold set", "canary set")):
        return None
    uri = Registry(settings.mlflow_tracking_uri, found[1]).training_pool_uri(found[2])
    root = storage.uri("").rstrip("/") + "/"
    if not uri or not uri.startswith(root) or not storage.exists(uri.removeprefix(root)):
        return None
    pool = {a.post_id for a in read_annotations(storage, uri.removeprefix(root))}
    shared = sum(1 for a in on.annotations if a.post_id in pool)
    if not shared:
        return None
    return (
        f"{shared} of the {len(on.annotations)} posts of {on.name} are in the training pool "
        f"of version {found[2]} ({uri}): on them it is not tested on unseen posts"
    )
