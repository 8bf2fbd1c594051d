"""What ``brandloop status`` shows: the aliases with their F1 on the current gold set, the
last evaluations, the alias history and the Label Studio counts.

Everything here only reads: MLflow (tracking + registry), the gold-set record in storage
and, when a key is configured, the Label Studio project (never created here).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ner.errors import LabelStudioAuthError, LabelStudioError, RegistryError

if TYPE_CHECKING:
    from ner.datasets import Retirement
    from ner.registry import AuditEvent, Registry
    from ner.settings import Settings

ALIASES = ("champion", "challenger", "previous")
#: Names a run's gold-set micro F1 goes by: ``gold.f1`` in training and evaluation runs alike
#: (:meth:`ner.registry.Registry.set_metrics`); ``f1``/``gold_f1`` in runs of older releases.
GOLD_F1_METRICS = ("gold.f1", "f1", "gold_f1")
#: MLflow HTTP retries for the command line's quick reads (the SDK's default is 7 with
#: back-off, minutes before a down server is reported).
QUICK_MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


@dataclass(frozen=True)
class AliasState:
    """``@alias`` -> ``version`` (None when unset) and its F1 on the current gold set;
    ``missing``: the files a load needs that its artifact store lacks
    (:meth:`~ner.registry.Registry.version_files`; empty: none, or no version), None when
    they could not be listed."""

    alias: str
    version: str | None
    f1: float | None
    missing: tuple[str, ...] | None = ()


@dataclass(frozen=True)
class EvaluationRow:
    """One scoring of a model on a gold set (an evaluation run or a training run)."""

    at: float  # seconds since the epoch: the run's end (its start while it runs)
    role: str
    model: str
    f1: float | None
    gold_hash: str


@dataclass(frozen=True)
class LabelStudioCounts:
    """The project's tasks, tasks with a label, and skipped annotations."""

    project_id: int
    title: str
    tasks: int
    labelled: int
    skipped: int


@dataclass(frozen=True)
class GoldSetInfo:
    name: str
    hash: str
    n_posts: int
    #: the canary set beside it (None: frozen without one) and its posts withdrawn since
    n_canary: int | None = None
    n_canary_dropped: int = 0


@dataclass(frozen=True)
class StatusReport:
    model_name: str
    tracking_uri: str
    gold: GoldSetInfo | None
    aliases: tuple[AliasState, ...]
    evaluations: tuple[EvaluationRow, ...]
    audit: tuple[AuditEvent, ...]
    label_studio: LabelStudioCounts | None
    label_studio_note: str
    #: with no gold set in force: the one ``brandloop gold-set retire`` took out of force
    retired: Retirement | None = None
    #: the SQLite file of the tracking URI when it does not exist (nothing read from MLflow)
    missing_store: Path | None = None
    #: why the model has no alias to show: it is not registered (the closest name, if any)
    not_registered: str | None = None
    #: how many evaluations (among the newest runs scanned) and alias moves are older
    #: than those shown
    older_evaluations: int = 0
    older_moves: int = 0
    #: posts the last pull held for review (annotators disagree) and the URI of its report
    held: tuple[int, str] | None = None


def quick_mlflow() -> None:
    """Make MLflow give up on an unreachable server within seconds (unless set already)."""
    for name, value in QUICK_MLFLOW_ENV.items():
        os.environ.setdefault(name, value)


def current_gold(settings: Settings) -> GoldSetInfo | None:
    """The gold set in force in the settings' storage, or None if none was frozen yet."""
    from ner.canary import load_canary_set
    from ner.datasets import load_gold_set
    from ner.storage import env_storage

    storage = env_storage(settings)
    found = load_gold_set(storage)  # storage only: opening MLflow could create its store
    if found is None:
        return None
    gold, _ = found
    beside = load_canary_set(storage, gold.name)
    if beside is None:
        return GoldSetInfo(gold.name, gold.hash, len(gold.post_ids))
    frozen = beside[0]
    return GoldSetInfo(
        gold.name, gold.hash, len(gold.post_ids), len(frozen.post_ids), len(frozen.dropped)
    )


def held_for_review(settings: Settings) -> tuple[int, str] | None:
    """How many posts the last pull held for review (``annotations/<stamp>.review.json``)
    and that report's URI; None when it held none, or nothing was pulled."""
    from ner import layout
    from ner.storage import env_storage

    storage = env_storage(settings)
    pulls = [k for k in storage.list(layout.ANNOTATIONS) if layout.is_pulled_annotations(k)]
    if not pulls:
        return None
    report = layout.review_report(max(pulls))
    if not storage.exists(report):
        return None
    held = storage.read_json(report)
    return (len(held), storage.uri(report)) if isinstance(held, list) and held else None


def retired_gold(settings: Settings) -> Retirement | None:
    """The gold set retired in the settings' storage while none is in force, else None."""
    from ner.datasets import retirement
    from ner.storage import env_storage

    storage = env_storage(settings)
    return retirement(storage)


def alias_states(registry: Registry, gold_hash: str | None) -> tuple[AliasState, ...]:
    """Champion, challenger and previous, each with its F1 on ``gold_hash`` (if evaluated)
    and the files it lacks (a trial's @previous had lost them: only doctor said so)."""
    states = []
    for alias in ALIASES:
        version = registry.alias_version(alias)
        f1 = None
        if version is not None and gold_hash is not None:
            f1 = registry.evaluated_f1(version, gold_hash)
        missing = () if version is None else _missing_files(registry, version)
        states.append(AliasState(alias, version, f1, missing))
    return tuple(states)


def _missing_files(registry: Registry, version: str) -> tuple[str, ...] | None:
    """What ``version`` lacks to load, None when its files could not be listed."""
    try:
        return tuple(registry.version_files(version)[1])
    except RegistryError:
        return None


#: The newest runs ``status`` reads its evaluations from.
SCANNED_RUNS = 200


def last_evaluations(registry: Registry, limit: int = 5) -> tuple[EvaluationRow, ...]:
    """The ``limit`` newest gold-set scorings, newest first: evaluation runs (champion or
    challenger) and training runs (their challenger's gold F1)."""
    experiment = registry.client.get_experiment_by_name(registry.experiment_name)
    if experiment is None:
        return ()
    runs = registry.client.search_runs(
        [experiment.experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=SCANNED_RUNS,
    )
    rows: list[EvaluationRow] = []
    for run in runs:
        row = _evaluation_row(registry, run)
        if row is not None:
            rows.append(row)
        if len(rows) == limit:
            break
    return tuple(rows)


def _evaluation_row(registry: Registry, run: Any) -> EvaluationRow | None:
    tags, metrics = run.data.tags, run.data.metrics
    kind = tags.get("brandloop.kind")
    gold_hash = tags.get("brandloop.gold_hash", "")
    f1 = next((metrics[name] for name in GOLD_F1_METRICS if name in metrics), None)
    if kind == "evaluation":
        role = tags.get("brandloop.role", "?")
        model = tags.get("brandloop.model_version", "?")
    elif kind == "training" and f1 is not None:
        role = "challenger (training run)"
        version = registry.version_for_run(run.info.run_id)
        model = f"{registry.model_name}/{version}" if version else run.info.run_name
    else:
        return None
    at = (run.info.end_time or run.info.start_time) / 1000.0  # scored as the run ended
    return EvaluationRow(at, role, model, f1, gold_hash)


def label_studio_counts(settings: Settings) -> LabelStudioCounts | None:
    """Counts of the settings' project, or None if no project has that title.

    Raises :class:`~ner.errors.ConfigError` without a key and
    :class:`~ner.errors.LabelStudioError` when the server cannot be reached or refuses (no
    retry: a status is a one-shot read).
    """
    from label_studio_sdk import LabelStudio

    from ner.labelstudio.client import API_FAILURES, NO_RETRY, api_error, projects_titled

    key = settings.require_secret("label_studio_api_key")
    title = settings.project_title
    try:
        client = LabelStudio(
            base_url=settings.label_studio_url.rstrip("/"), api_key=key, timeout=15.0
        )
        matches = projects_titled(client, title, request_options=NO_RETRY)
        if not matches:
            return None
        project = client.projects.get(id=int(matches[0].id or 0), request_options=NO_RETRY)
    except API_FAILURES as exc:
        what = f"read of project {title!r} at {settings.label_studio_url}"
        error = api_error(what, exc, key)
        if isinstance(exc, httpx.TransportError):  # nothing answered: not a refusal
            hint = "is Label Studio running there? NER_LABEL_STUDIO_URL names it"
            raise LabelStudioError(f"{error} ({hint})") from exc
        raise error from exc
    return LabelStudioCounts(
        project_id=int(project.id or 0),
        title=title,
        tasks=int(project.task_number or 0),
        labelled=int(project.num_tasks_with_annotations or 0),
        skipped=int(project.skipped_annotations_number or 0),
    )


def label_studio_configured(settings: Settings) -> bool:
    key = settings.label_studio_api_key
    return bool(key is not None and key.get_secret_value())


def _label_studio_part(settings: Settings) -> tuple[LabelStudioCounts | None, str]:
    if (problem := settings.secret_block_problem("label_studio_api_key")) is not None:
        return None, problem
    if not label_studio_configured(settings):
        from flows.context import conventional_block_hint

        block = conventional_block_hint("label_studio_api_key", settings.env)
        return None, f"not configured (set NER_LABEL_STUDIO_API_KEY, or {block})"
    try:
        counts = label_studio_counts(settings)
    except LabelStudioAuthError as exc:
        return None, f"key refused: {exc}"
    except LabelStudioError as exc:
        return None, f"unreachable: {exc}"
    if counts is None:
        return None, f"no project titled {settings.project_title!r} (brandloop labelstudio setup)"
    return counts, ""


def gather(
    settings: Settings, open_registry: Callable[[], Registry], *, limit: int = 5
) -> StatusReport:
    """Read everything ``brandloop status`` shows. MLflow is opened with ``open_registry``
    only when its store exists: a SQLite file that does not is reported as missing, not
    created (MLflow would create an empty one)."""
    gold = current_gold(settings)
    counts, note = _label_studio_part(settings)
    report = StatusReport(
        model_name=settings.registered_model_name,
        tracking_uri=settings.mlflow_tracking_uri,
        gold=gold,
        aliases=(),
        evaluations=(),
        audit=(),
        label_studio=counts,
        label_studio_note=note,
        missing_store=db if (db := settings.tracking_db) and not db.exists() else None,
        retired=retired_gold(settings) if gold is None else None,
        held=held_for_review(settings),
    )
    if report.missing_store is not None:
        return report
    registry = open_registry()
    missing = registry.missing_model()  # a table of dashes said nothing (trial V)
    evaluations, moves = last_evaluations(registry, SCANNED_RUNS), registry.audit_log()
    return replace(
        report,
        aliases=() if missing else alias_states(registry, gold.hash if gold else None),
        not_registered=None if missing is None else str(missing),
        evaluations=evaluations[:limit],
        audit=tuple(reversed(moves[-limit:])),  # newest first, as evaluations
        older_evaluations=max(len(evaluations) - limit, 0),
        older_moves=max(len(moves) - limit, 0),
    )
