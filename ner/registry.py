"""MLflow tracking and the model registry: log runs, register models, move aliases.

* Every training run logs params, metrics (micro and per label), the dataset hash as an
  MLflow dataset input, tags (environment, Prefect flow-run id, git commit) and plots.
* Models are logged with the spaCy flavor plus a pyfunc flavor (:mod:`ner.pyfunc`).
* Aliases, not stages: ``@champion``, ``@challenger``, ``@previous``.
* A model version can be promoted only after it was evaluated on the gold set named in the
  promotion (an ``eval.<gold-hash>.f1`` tag on the version); :func:`decide` holds the rule.
* Every alias move is audited as a run in the ``<experiment>-audit`` experiment: who, when,
  why, metrics and the gold-set hash. The audit run is the move's intent, written first and
  completed after the move; a move interrupted in between is completed or reverted by
  :meth:`Registry.repair_moves` (:mod:`ner.audit`). :meth:`Registry.rollback` moves
  ``@champion`` back.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import getpass
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ner.audit import (
    MOVE_STATE_TAG,
    OWNER_TAG,
    TAG_PREFIX,
    MoveState,
    PendingMove,
    Repair,
    RepairAction,
    decide_repair,
)
from ner.errors import PromotionError, RegistryError, mlflow_reason
from ner.evaluation import beats, below
from ner.report import quantity

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Tag of a training run: :func:`ner.training.training_fingerprint` of its inputs.
FINGERPRINT_TAG = f"{TAG_PREFIX}training_fingerprint"
#: The environment whose train-ner gate ran on the version a copy comes from, kept along a
#: chain of copies (dev -> staging -> prod: a trial's prod copy blamed staging's gate).
GATED_IN = f"{TAG_PREFIX}gated_in"
PREVIOUS = "previous"
#: Reason of the ``@previous`` move a rollback makes (``rollback from version 4``).
ROLLBACK_FROM = "rollback from version "


@dataclass(frozen=True)
class Decision:
    """Outcome of the promotion rule."""

    promote: bool
    reason: str


def needs_training(champion_f1: float | None, threshold: float) -> bool:
    """The gate: train a challenger unless the current model already meets the threshold."""
    return champion_f1 is None or champion_f1 < threshold


#: The gate rules a promotion by hand checks again on today's gold set (threshold and margin,
#: :func:`decide`); a version train-ner's gate refused by another rule (confidence,
#: label_regression, canary) needs ``force``.
HAND_RULES = ("threshold", "beats_champion")


def unchecked_refusals(rules: Iterable[str]) -> list[str]:
    """The gate's refusals (rule names, :meth:`Registry.gate_refusals`) a promotion by hand
    does not check again (not in :data:`HAND_RULES`)."""
    return [rule for rule in rules if rule not in HAND_RULES]


def closest_registered(client: MlflowClient, name: str) -> tuple[list[str], str | None]:
    """The registered models' names (the first 1,000) and the one closest to ``name`` (None
    when none is close). Raises MLflow's ``MlflowException`` when they cannot be listed."""
    names = [str(m.name) for m in client.search_registered_models(max_results=1000)]
    close = difflib.get_close_matches(name, names, n=1)
    return names, close[0] if close else None


def closest_hint(name: str, close: str | None, *, copyable: bool = True) -> str:
    """The advice on a missing registered model ``name`` whose closest registered name is
    ``close``: "did you mean …?", unless both are environments' own names
    (``brand-ner-staging`` missing, ``brand-ner-dev`` there), where it says how that
    environment gets its first version instead (a trial's staging status suggested dev's);
    the copy is offered only when ``close`` has a version (``copyable``)."""
    if close is None:
        return ""
    own, other = environment_named(name), environment_named(close)
    if own is None or other is None or own == other:
        return f"did you mean {close!r}? "
    first = f"{own} has no model yet: train-ner under NER_ENV={own} registers its first version"
    if not copyable:
        return f"{first} ({close!r} has no version to copy either); "
    copy = f"brandloop promote VERSION --from {other} --to {own} copies one of {close!r}"
    return f"{first}, or {copy}; "


def environment_named(model_name: str) -> str | None:
    """The environment whose default registered model is ``model_name`` (``brand-ner-prod``
    -> ``prod``), else None."""
    from ner.settings import ENVIRONMENTS, environment_defaults

    for env in ENVIRONMENTS:
        if environment_defaults(env)["registered_model_name"] == model_name:
            return env
    return None


def decide(
    challenger_f1: float | None,
    champion_f1: float | None,
    threshold: float,
    margin: float = 0.0,
    *,
    subject: str = "challenger",
    cold_start: tuple[str, float] | None = None,
) -> Decision:
    """Promote only if the challenger was evaluated, reaches ``threshold`` and beats the
    champion (both on the same gold set) by more than ``margin``; with no champion, is not
    below ``cold_start`` (spec, F1 on that gold set: what apply predicts with until then),
    when given. A refusal names every rule that failed, joined by "; " (threshold first).
    ``subject`` names the candidate in the reasons (``version 3`` for a promotion by hand)."""
    if challenger_f1 is None:
        return Decision(False, f"{subject} was not evaluated: no promotion")
    failed = []
    said = f"{subject} F1 {challenger_f1:.4f}"
    if challenger_f1 < threshold:
        failed.append(f"{said} < threshold {threshold:.4f}")
    if champion_f1 is not None and not beats(challenger_f1, champion_f1, margin):
        failed.append(f"{said} does not beat champion F1 {champion_f1:.4f} + margin {margin:.4f}")
    cold = None if champion_f1 is not None or cold_start is None else cold_start
    if cold is not None and below(challenger_f1, cold[1]):
        failed.append(f"{said} is below the cold start {cold[0]}'s F1 {cold[1]:.4f}")
    if failed:
        return Decision(False, "; ".join(failed))
    reached = f"{said} >= threshold {threshold:.4f}"
    if cold is not None:
        held = f"not below the cold start {cold[0]}'s F1 {cold[1]:.4f}"
        return Decision(True, f"{reached}, no champion yet and {held}")
    against = "no champion" if champion_f1 is None else f"champion F1 {champion_f1:.4f}"
    return Decision(True, f"{reached}, beats {against}")


def files_missing(uri: str, missing: Sequence[str]) -> str:
    """``its files are missing from <uri> (no MLmodel, …)``: how promote, rollback and doctor
    say what :meth:`Registry.version_files` found missing (``missing`` not empty)."""
    return f"its files are missing from {uri} (no {', '.join(missing)})"


@dataclass(frozen=True)
class AuditEvent:
    """One alias move."""

    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    gold_hash: str | None
    timestamp: float
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit, when the code runs from a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _now(at: float | None = None) -> str:
    """The time an alias note and its ``*_at`` tags give: ISO 8601, seconds, UTC (the
    format of ``champion_since``); ``at`` in seconds since the epoch, default now."""
    when = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def does_not_exist(exc: Exception) -> bool:
    """Whether MLflow's ``exc`` says the model, version or alias is not there (a local store
    gives RESOURCE_DOES_NOT_EXIST, a tracking server's message says "not found")."""
    text = f"{getattr(exc, 'error_code', '')} {exc}"
    return "RESOURCE_DOES_NOT_EXIST" in text or "not found" in text.lower()


def _artifact_exists(uri: str, path: str) -> bool:
    """Whether the file or folder ``path`` (relative, ``/``-separated) is under the artifact
    ``uri``."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return name in _artifact_names(f"{uri.rstrip('/')}/{parent}" if parent else uri)


def _artifact_names(uri: str) -> set[str]:
    """The names of the files and folders directly under the artifact ``uri`` (empty when
    it does not exist)."""
    import mlflow.artifacts

    return {
        item.path.rsplit("/", 1)[-1] for item in mlflow.artifacts.list_artifacts(artifact_uri=uri)
    }


def _wrap(action: str, exc: Exception) -> RegistryError:
    return RegistryError(f"MLflow {action} failed: {mlflow_reason(exc)}")


def _dataset_source(uri: str) -> Any:
    """The MLflow dataset source of ``uri``, with its type named from the URI's scheme
    (``local`` for a path or ``file:``): resolving the raw string instead matches two
    registered local sources and warns that the source is ambiguous. A scheme MLflow has no
    source for is recorded as a plain URL."""
    from urllib.parse import urlparse

    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.exceptions import MlflowException

    scheme = urlparse(uri).scheme
    source_type = "local" if scheme in ("", "file") or len(scheme) == 1 else scheme
    try:
        return get_dataset_source_from_json(json.dumps({"uri": uri}), source_type=source_type)
    except MlflowException:
        return HTTPDatasetSource(uri)


class Registry:
    """Tracking and registry operations for one registered model."""

    def __init__(
        self,
        tracking_uri: str,
        model_name: str = "brand-ner",
        experiment_name: str = "brand-ner",
        artifact_location: str | None = None,
    ) -> None:
        import mlflow

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)

    @functools.cached_property
    def client(self) -> MlflowClient:
        """The store's client, made on first use: making one creates a SQLite store's file,
        which a run that never reaches MLflow (the export watcher) must not leave behind."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # ------------------------------------------------------------------ experiments
    def experiment_id(self, name: str | None = None) -> str:
        """Id of the experiment, created with the configured artifact location if new."""
        from mlflow.exceptions import MlflowException

        name = name or self.experiment_name
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return str(exp.experiment_id)
            return str(self.client.create_experiment(name, artifact_location=self._artifacts(name)))
        except MlflowException as exc:
            if "already exists" in str(exc):  # created concurrently
                exp = self.client.get_experiment_by_name(name)
                if exp is not None:
                    return str(exp.experiment_id)
            raise _wrap(f"experiment {name!r}", exc) from exc

    def _artifacts(self, name: str) -> str | None:
        if not self.artifact_location:
            return None
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        return f"{self.artifact_location.rstrip('/')}/{safe}"

    @contextmanager
    def start_run(self, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """Start an MLflow run in the experiment; yields the run id."""
        import mlflow

        experiment_id = self.experiment_id()
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {})
        ) as run:
            yield str(run.info.run_id)

    def log_dataset(
        self, run_id: str, name: str, digest: str, source_uri: str, context: str
    ) -> None:
        """Record a dataset (by hash) as an input of the run."""
        import mlflow
        from mlflow.data.meta_dataset import MetaDataset

        source = _dataset_source(source_uri)
        dataset = MetaDataset(source=source, name=name, digest=digest[:36])  # type: ignore[abstract]
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.log_input(dataset, context=context)
        else:
            from mlflow.entities import DatasetInput, InputTag

            ds_input = DatasetInput(
                dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]
            )
            self.client.log_inputs(run_id, datasets=[ds_input])

    # ------------------------------------------------------------------ models
    def log_model(
        self, model_dir: Path, run_id: str, *, register: bool = True
    ) -> tuple[str, str | None]:
        """Log a saved spaCy pipeline (spaCy + pyfunc flavors); return (model URI, version)."""
        import mlflow
        import spacy
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import ColSpec, Schema

        import ner.pyfunc as flavor
        from ner import transformer

        nlp = spacy.load(model_dir)
        # ``id`` optional: MLflow drops input columns the signature does not declare
        text, post_id = ColSpec("string", "text"), ColSpec("string", "id", required=False)
        signature = ModelSignature(inputs=Schema([text, post_id]))
        requirements = [
            f"spacy=={spacy.__version__}",
            f"mlflow=={mlflow.__version__}",
            "pandas",
            "brandloop",
            *transformer.pip_requirements(nlp),  # torch, transformers: accurate recipe only
        ]
        try:
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=flavor,
                spacy_model=nlp,
                run_id=run_id,
                model_id=self._new_logged_model(run_id),
                signature=signature,
                pip_requirements=requirements,
            )
            version = self._register(str(info.model_id), run_id) if register else None
        except MlflowException as exc:
            raise _wrap("log_model", exc) from exc
        return str(info.model_uri), version

    def _new_logged_model(self, run_id: str) -> str:
        """A logged model (MLflow 3) for ``run_id``, in the run's own experiment: left to
        ``Model.log``, it goes to the process's active experiment, by default ``0``, whose
        artifacts a local store puts in ``./mlruns`` of the working directory."""
        run = self.client.get_run(run_id)
        model = self.client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name="model",
            source_run_id=run_id,
            params={key: str(value) for key, value in run.data.params.items()},
        )
        return str(model.model_id)

    def _register(self, model_id: str, run_id: str) -> str:
        """Register logged model ``model_id`` as a new version; return the version.

        Through ``MlflowClient`` rather than ``log_model(registered_model_name=...)``, whose
        fluent path prints "Successfully registered model" and "Created version" to stderr
        on every run (no setting silences them); the logged model gets the same link to its
        versions (the ``mlflow.modelVersions`` tag the MLflow UI reads).
        """
        from mlflow.exceptions import MlflowException
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

        try:
            self.client.create_registered_model(
                self.model_name, description=model_description(f"{self.experiment_name}-audit")
            )
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        mv = self.client.create_model_version(
            self.model_name,
            source=f"models:/{model_id}",
            run_id=run_id,
            model_id=model_id,
            await_creation_for=60,
        )
        links = self.client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
        entry = {"name": mv.name, "version": mv.version}
        self.client.set_logged_model_tags(
            model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*json.loads(links or "[]"), entry])}
        )
        return str(mv.version)

    def version_for_run(self, run_id: str) -> str | None:
        """The registered version logged by ``run_id``, if any."""
        versions = self.client.search_model_versions(
            f"name='{self.model_name}' and run_id='{run_id}'"
        )
        return str(versions[0].version) if versions else None

    def trained_with(self, fingerprint: str) -> tuple[str, str] | None:
        """``(version, run id)`` of the newest registered version whose training run
        FINISHED with ``fingerprint`` (tag :data:`FINGERPRINT_TAG`); None when there is
        none. Raises :class:`RegistryError` when MLflow fails."""
        from mlflow.exceptions import MlflowException

        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                return None
            runs = self.client.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}' "
                "and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=20,
            )
            for run in runs:
                version = self.version_for_run(run.info.run_id)
                if version is not None:
                    return version, str(run.info.run_id)
        except MlflowException as exc:
            raise _wrap("looking for a version trained on the same inputs", exc) from exc
        return None

    def alias_version(self, alias: str) -> str | None:
        """Version behind ``@alias``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            if does_not_exist(exc):
                return None
            raise _wrap(f"alias lookup @{alias}", exc) from exc
        return str(mv.version)

    def version_files(self, version: str) -> tuple[str, list[str]]:
        """Where ``version``'s files are (MLflow's download URI of it) and which of the files
        a load needs are missing there (empty: none): ``MLmodel``, each data folder its
        flavors name (``model.spacy``) and the spaCy ``config.cfg`` in it. A deleted or moved
        artifact store, or a folder deleted by hand, leaves the version registered without
        them. Raises :class:`RegistryError` when MLflow cannot be asked."""
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException
        from mlflow.models import Model

        try:
            uri = str(self.client.get_model_version_download_uri(self.model_name, version))
            if "MLmodel" not in _artifact_names(uri):
                return uri, ["MLmodel"]
            with tempfile.TemporaryDirectory(prefix="brandloop-mlmodel-") as folder:
                got = mlflow.artifacts.download_artifacts(f"{uri}/MLmodel", dst_path=folder)
                flavors = Model.load(got).flavors
            needed = {str(f["data"]) for f in flavors.values() if f.get("data")}
            if spacy_data := flavors.get("spacy", {}).get("data"):  # spaCy loads its config
                needed = needed - {spacy_data} | {f"{spacy_data}/config.cfg"}
            missing = [path for path in sorted(needed) if not _artifact_exists(uri, path)]
        except (MlflowException, OSError) as exc:
            raise _wrap(f"listing the files of version {version}", exc) from exc
        return uri, missing

    def model_uri(self, alias: str = CHAMPION) -> str:
        return f"models:/{self.model_name}@{alias}"

    def versions(self) -> list[str]:
        """The registered model's version numbers, oldest first (empty for no such model)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.model_name}'")
        except MlflowException as exc:
            raise _wrap(f"listing the versions of {self.model_name}", exc) from exc
        return [str(v) for v in sorted(int(mv.version) for mv in found)]

    def training_pool_uri(self, version: str) -> str | None:
        """Where the training pool of ``version`` was stored: the URI of its training run's
        ``train-pool`` dataset input (:meth:`log_training_run`); None for a version without
        one (registered by hand). Raises :class:`RegistryError` when MLflow fails."""
        from mlflow.exceptions import MlflowException

        try:
            run_id = self.client.get_model_version(self.model_name, version).run_id
            run_inputs = self.client.get_run(run_id).inputs if run_id else None
            inputs = run_inputs.dataset_inputs if run_inputs else []
        except MlflowException as exc:
            raise _wrap(f"reading the training run of version {version}", exc) from exc
        for item in inputs:
            if item.dataset.name == "train-pool":
                found = json.loads(item.dataset.source or "{}").get("uri")
                return str(found) if found else None
        return None

    def missing_model(self) -> PromotionError | None:
        """A :class:`PromotionError` when :attr:`model_name` is not a registered model (a
        misspelled ``NER_REGISTERED_MODEL_NAME``), naming the closest one; else None."""
        from mlflow.exceptions import MlflowException

        from ner.settings import redact_uri

        try:
            self.client.get_registered_model(self.model_name)
            return None
        except MlflowException as exc:
            if not does_not_exist(exc):
                raise _wrap(f"reading model {self.model_name}", exc) from exc
        try:
            names, close = closest_registered(self.client, self.model_name)
            empty = close is not None and not self.client.search_model_versions(
                f"name='{close}'", max_results=1
            )
        except MlflowException as exc:
            raise _wrap("listing the registered models", exc) from exc
        hint = closest_hint(self.model_name, close, copyable=not empty)
        return PromotionError(
            f"no registered model {self.model_name!r} in {redact_uri(self.tracking_uri)} ({hint}"
            f"{quantity(len(names), 'registered model')} in this store; "
            "NER_REGISTERED_MODEL_NAME sets the name)"
        )

    def download_model(self, alias_or_version: str, dst: Path) -> Path:
        """Download a version's saved spaCy pipeline (for fine-tuning the champion)."""
        import mlflow.artifacts

        uri = (
            f"models:/{self.model_name}/{alias_or_version}"
            if alias_or_version.isdigit()
            else self.model_uri(alias_or_version)
        )
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
        data = local / "model.spacy"
        return data if data.exists() else local

    def log_training_run(
        self,
        *,
        run_name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        curve: Sequence[Mapping[str, Any]],
        dataset_hash: str,
        dataset_uri: str,
        gold_hash: str,
        gold_uri: str,
        tags: Mapping[str, str],
        start_time_ms: int | None = None,
    ) -> str:
        """Create a (still open) training run with params, metrics, datasets and curve.

        ``start_time_ms`` (epoch milliseconds) is when training began, so the run's duration
        covers the training and not only its logging. The caller closes it
        (:meth:`close_run`) once the run's outcome is known. If logging
        fails half-way, the run is closed as FAILED (when MLflow still answers) and
        :class:`RegistryError` raised.
        """
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        run_id: str | None = None
        try:
            run = self.client.create_run(
                self.experiment_id(),
                start_time=start_time_ms,
                run_name=run_name,
                tags={
                    **tags,
                    f"{TAG_PREFIX}kind": "training",
                    f"{TAG_PREFIX}gold_hash": gold_hash,
                    f"{TAG_PREFIX}dataset_hash": dataset_hash,
                },
            )
            run_id = str(run.info.run_id)
            stamp = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
            )
            self.log_dataset(run_id, "train-pool", dataset_hash, dataset_uri, "training")
            self.log_dataset(run_id, "gold", gold_hash, gold_uri, "evaluation")
            _log_curve_and_plots(self.client, run_id, curve)
        except MlflowException as exc:
            if run_id is not None:
                self.close_run(run_id, "FAILED", reason=f"logging failed: {exc}", best_effort=True)
            raise _wrap("logging the training run", exc) from exc
        return run_id

    def close_run(
        self, run_id: str, status: str, *, reason: str | None = None, best_effort: bool = False
    ) -> bool:
        """End ``run_id`` with ``status`` (FINISHED, FAILED, KILLED), noting ``reason``.

        With ``best_effort`` a failure is logged and False returned instead of raised (for
        clean-up paths, where MLflow may be the thing that is down).
        """
        from mlflow.exceptions import MlflowException

        try:
            if reason:
                self.client.set_tag(run_id, f"{TAG_PREFIX}end_reason", reason[:4900])
            self.client.set_terminated(run_id, status)
        except (MlflowException, OSError) as exc:
            if not best_effort:
                raise _wrap(f"closing run {run_id}", exc) from exc
            log.warning("could not mark MLflow run %s %s: %s", run_id, status, exc)
            return False
        return True

    def open_runs(self) -> list[tuple[str, dict[str, str]]]:
        """``(run id, tags)`` of the experiment's brandloop runs that are still RUNNING."""
        from mlflow.exceptions import MlflowException

        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                return []
            runs = self.client.search_runs(
                [exp.experiment_id],
                filter_string="attributes.status = 'RUNNING'",
                max_results=1000,
            )
        except MlflowException as exc:
            raise _wrap("searching open runs", exc) from exc
        return [
            (str(run.info.run_id), dict(run.data.tags))
            for run in runs
            if f"{TAG_PREFIX}kind" in run.data.tags
        ]

    def log_evaluation(
        self,
        report: Any,
        *,
        model_version: str,
        role: str,
        gold_hash: str,
        tags: Mapping[str, str],
        run_id: str | None = None,
        set_name: str = "gold",
        model_id: str | None = None,
    ) -> str:
        """Log an evaluation on set ``set_name`` (``gold``, ``canary``): into ``run_id`` or a
        new run, under the same names either way (:func:`set_metrics`: ``gold.f1``,
        ``gold.BRAND.f1``), so training and evaluation runs compare side by side.

        Logs the metrics (linked to the logged model ``model_id`` when given), a per-label
        F1 plot and the list of errors as artifacts. A new run is ended here; ``run_id``
        stays open for its owner to close.
        """
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        own_run = run_id is None
        try:
            if run_id is None:
                run = self.client.create_run(
                    self.experiment_id(),
                    run_name=f"evaluate {role} {model_version} on {set_name}",
                    tags={
                        **tags,
                        f"{TAG_PREFIX}kind": "evaluation",
                        f"{TAG_PREFIX}role": role,
                        f"{TAG_PREFIX}model_version": model_version,
                        f"{TAG_PREFIX}gold_hash": gold_hash,
                    },
                )
                run_id = str(run.info.run_id)
            prefix = f"{set_name}_"
            stamp = int(time.time() * 1000)
            metrics = [
                Metric(k, float(v), stamp, 0, model_id=model_id)
                for k, v in set_metrics(report, set_name).items()
            ]
            self.client.log_batch(run_id, metrics=metrics)
            self.client.set_tag(run_id, f"{TAG_PREFIX}{set_name}_hash", gold_hash)
            title = f"{role} {model_version} on {set_name} {gold_hash[:8]}"
            self._log_evaluation_artifacts(run_id, report, prefix, title)
            if own_run:
                self.client.set_terminated(run_id, "FINISHED")
        except MlflowException as exc:
            if own_run and run_id is not None:
                self.close_run(run_id, "FAILED", reason=f"logging failed: {exc}", best_effort=True)
            raise _wrap("logging an evaluation", exc) from exc
        return run_id

    def _log_evaluation_artifacts(self, run_id: str, report: Any, prefix: str, title: str) -> None:
        """The per-label F1 plot, the errors and the report table of an evaluation."""
        from ner import plots

        with tempfile.TemporaryDirectory() as tmp:
            plot = plots.per_label_f1(
                report.per_label_dict(), Path(tmp) / f"{prefix}per_label_f1.png", title=title
            )
            self.client.log_artifact(run_id, str(plot), "plots")
            errors = Path(tmp) / f"{prefix}errors.json"
            errors.write_text(json.dumps(report.errors_list(), indent=1, ensure_ascii=False))
            self.client.log_artifact(run_id, str(errors), "evaluation")
            table = Path(tmp) / f"{prefix}report.md"
            table.write_text(
                f"{report.format_table()}\n\n## Confusion\n\n{report.format_confusion()}\n"
            )
            self.client.log_artifact(run_id, str(table), "evaluation")

    def forget_in_error_lists(
        self, post_ids: Collection[str], held: set[str] | None = None
    ) -> tuple[dict[str, int], list[str]]:
        """Rewrite every evaluation error list (``evaluation/*_errors.json``, which names posts
        and their spans) of the experiment's runs, deleted runs included, without the items of
        ``post_ids``; lists without them are not rewritten. Returns ``({"mlflow:<run id>/<path>":
        items removed}, [lists that are not a JSON list, named the same way])`` and adds the
        ids it removed to ``held``. Raises :class:`RegistryError` when MLflow fails (the
        rewrite is idempotent: run it again)."""
        from mlflow.entities import ViewType
        from mlflow.exceptions import MlflowException

        rewritten: dict[str, int] = {}
        unreadable: list[str] = []
        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                return rewritten, unreadable
            token = None
            while True:
                page = self.client.search_runs(
                    [exp.experiment_id], run_view_type=ViewType.ALL, max_results=500,
                    page_token=token,
                )  # fmt: skip
                for run in page:
                    found = self._forget_in_run(
                        str(run.info.run_id), post_ids, rewritten, unreadable
                    )
                    if held is not None:
                        held.update(found)
                token = page.token
                if not token:
                    return rewritten, unreadable
        except MlflowException as exc:
            raise _wrap("rewriting evaluation error lists", exc) from exc

    def forget_in_cards(
        self, post_ids: Collection[str], held: set[str] | None = None
    ) -> dict[str, int]:
        """Rewrite the model card (description) of every version of the model without the
        lines that name ``post_ids`` (:func:`ner.modelcard.without_posts`); returns
        ``{"mlflow:models/<name>/<version>": lines removed}`` and adds the ids a card named
        to ``held``. Raises :class:`RegistryError` when MLflow fails."""
        from mlflow.exceptions import MlflowException

        from ner.modelcard import named_posts, without_posts

        rewritten: dict[str, int] = {}
        try:
            versions = self.client.search_model_versions(f"name='{self.model_name}'")
            for mv in versions:
                card = mv.description or ""
                kept = without_posts(card, post_ids)
                if kept != card:
                    if held is not None:
                        held.update(named_posts(card, post_ids))
                    self.describe_version(str(mv.version), kept)
                    removed = card.count("\n") - kept.count("\n")
                    rewritten[f"mlflow:models/{self.model_name}/{mv.version}"] = removed
        except MlflowException as exc:
            raise _wrap("rewriting model cards", exc) from exc
        return rewritten

    def _forget_in_run(
        self, run_id: str, post_ids: Collection[str], rewritten: dict[str, int], bad: list[str]
    ) -> set[str]:
        """Rewrite run ``run_id``'s error lists without ``post_ids`` (counts to ``rewritten``,
        lists that are not a JSON list to ``bad``); returns the ids it removed."""
        found: set[str] = set()
        lists = [
            f.path
            for f in self.client.list_artifacts(run_id, "evaluation")
            if not f.is_dir and f.path.endswith("_errors.json")
        ]
        with tempfile.TemporaryDirectory() as tmp:
            for path in lists:
                name = f"mlflow:{run_id}/{path}"
                local = Path(self.client.download_artifacts(run_id, path, tmp))
                try:
                    items = json.loads(local.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError):
                    items = None
                if not isinstance(items, list):
                    bad.append(name)
                    continue
                named = [isinstance(i, dict) and i.get("post_id") in post_ids for i in items]
                if not any(named):
                    continue
                kept = [i for i, gone in zip(items, named, strict=True) if not gone]
                found.update(
                    str(i["post_id"]) for i, gone in zip(items, named, strict=True) if gone
                )
                local.write_text(json.dumps(kept, indent=1, ensure_ascii=False), encoding="utf-8")
                self.client.log_artifact(run_id, str(local), path.rpartition("/")[0] or None)
                rewritten[name] = len(items) - len(kept)
        return found

    # ------------------------------------------------------------------ evaluations
    @staticmethod
    def _eval_tag(gold_hash: str) -> str:
        return f"{TAG_PREFIX}eval.{gold_hash[:16]}.f1"

    def record_evaluation(
        self, version: str, gold_hash: str, metrics: Mapping[str, float], *, note: bool = True
    ) -> None:
        """Mark ``version`` as evaluated on gold set ``gold_hash`` (a promotion precondition);
        with ``note``, a card written on another gold set says the new score
        (:meth:`_note_rescore`; a copy's "Copied" line says it instead)."""
        f1 = metrics.get("f1")
        if f1 is None:
            raise RegistryError("evaluation metrics have no 'f1'")
        self.client.set_model_version_tag(
            self.model_name, version, self._eval_tag(gold_hash), repr(float(f1))
        )
        self.client.set_model_version_tag(
            self.model_name,
            version,
            f"{TAG_PREFIX}eval.{gold_hash[:16]}.metrics",
            json.dumps({k: round(float(v), 6) for k, v in metrics.items()})[:4900],
        )
        if note:
            self._note_rescore(version, gold_hash, float(f1))

    def _note_rescore(self, version: str, gold_hash: str, f1: float) -> None:
        """A line on ``version``'s card (:func:`ner.modelcard.rescored_note`) when
        ``gold_hash`` is not the gold set its training run's card was written on, so the
        MLflow UI does not show only the stale table. Best effort, as :meth:`_note_on_card`."""
        from mlflow.exceptions import MlflowException

        from ner.modelcard import rescored_note

        try:
            mv = self.client.get_model_version(self.model_name, version)
            if not mv.description or not mv.run_id:
                return  # no card yet: the one written next is on this gold set
            tags = self.client.get_run(mv.run_id).data.tags
        except MlflowException as exc:
            log.warning("version %s's card was not told of its new score: %s", version, exc)
            return
        card_gold = tags.get(f"{TAG_PREFIX}gold_hash")
        if card_gold and card_gold != gold_hash:
            note = rescored_note(when=_now(), f1=f1, gold_hash=gold_hash, card_gold_hash=card_gold)
            self._note_on_card(version, note, {}, done="scored")

    def evaluated_f1(self, version: str, gold_hash: str) -> float | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.model_name, version)
        except MlflowException as exc:
            raise _wrap(f"reading version {version}", exc) from exc
        value = (mv.tags or {}).get(self._eval_tag(gold_hash))
        return None if value is None else float(value)

    def gate_refusals(self, version: str) -> tuple[list[str], str | None]:
        """The rules train-ner's gate refused ``version`` by (tag ``brandloop.gate.refused_by``,
        rule names of :class:`ner.gate.Rule`; empty when it passed or was never gated), and
        the environment that gate ran in when ``version`` is a copy of another environment's
        version (tag ``brandloop.gated_in``, kept along a chain of copies, else
        ``brandloop.source_env``), else None."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.model_name, version)
        except MlflowException as exc:
            raise _wrap(f"reading version {version}", exc) from exc
        tags = mv.tags or {}
        value = tags.get(f"{TAG_PREFIX}gate.refused_by", "")
        gated_in = tags.get(GATED_IN) or tags.get(f"{TAG_PREFIX}source_env")
        return [rule for rule in value.split(",") if rule], gated_in

    # ------------------------------------------------------------------ gate and model card
    def record_gate(
        self,
        version: str,
        run_id: str,
        *,
        tags: Mapping[str, str],
        metrics: Mapping[str, float],
        model_id: str | None = None,
    ) -> None:
        """Put the gate's decision on the challenger: ``tags`` on its model version and its
        training run, ``metrics`` (the rules' numbers) on the run, linked to ``model_id``."""
        from mlflow.entities import Metric, RunTag
        from mlflow.exceptions import MlflowException

        stamp = int(time.time() * 1000)
        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(self.model_name, version, key, value)
            self.client.log_batch(
                run_id,
                metrics=[
                    Metric(k, float(v), stamp, 0, model_id=model_id) for k, v in metrics.items()
                ],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
        except MlflowException as exc:
            raise _wrap(f"recording the gate of version {version}", exc) from exc

    def describe_version(self, version: str, description: str) -> None:
        """Set the model version's description (the model card MLflow shows)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.update_model_version(self.model_name, version, description=description)
        except MlflowException as exc:
            raise _wrap(f"describing version {version}", exc) from exc

    def note_manual_promotion(
        self, version: str, *, reason: str, actor: str, events: Sequence[AuditEvent] = ()
    ) -> None:
        """Record on ``version`` that it was made champion by hand: its model card gets a line
        saying so (:func:`ner.modelcard.manual_promotion_note`) and its
        ``brandloop.promotion_reason`` tag ``manual: <reason>`` (the gate's own verdict stays
        in ``brandloop.gate.*``). The line's time is that of the ``@champion`` move among
        ``events`` (so it equals ``champion_since``), else now. Best effort, as
        :meth:`_note_on_card`."""
        from ner.modelcard import manual_promotion_note

        moved = [e.timestamp for e in events if e.alias == CHAMPION and e.to_version == version]
        when = _now(moved[-1] if moved else None)
        note = manual_promotion_note(reason=reason, actor=actor, when=when)
        tags = {"promotion_reason": f"manual: {reason}", "promoted_by": actor}
        self._note_on_card(version, note, tags, done="promoted")

    def note_copy(self, version: str, *, source: str, env: str, f1: float, gold_hash: str) -> None:
        """Record on ``version`` that it is a copy of ``source`` (another environment's
        version) scored ``f1`` on ``env``'s gold set ``gold_hash``: a line
        (:func:`ner.modelcard.copied_note`) above the source's card. Best effort, as
        :meth:`_note_on_card`."""
        from ner.modelcard import copied_note

        note = copied_note(source=source, env=env, when=_now(), f1=f1, gold_hash=gold_hash)
        self._note_on_card(version, note, {}, done="copied")

    def _note_on_card(self, version: str, note: str, tags: Mapping[str, str], *, done: str) -> None:
        """``note`` under the title of ``version``'s model card; ``tags`` on the version.
        Best effort: the alias moves it describes (``done``) are made and audited already, so
        an MLflow refusal is logged as a warning, not raised (an error would invite a retry
        of the move itself)."""
        from mlflow.exceptions import MlflowException

        from ner.modelcard import with_alias_note

        try:
            card = self.client.get_model_version(self.model_name, version).description or ""
            text = with_alias_note(card, note)
            self.client.update_model_version(self.model_name, version, description=text)
            for key, value in tags.items():
                self.client.set_model_version_tag(
                    self.model_name, version, f"{TAG_PREFIX}{key}", value[:5000]
                )
        except MlflowException as exc:
            log.warning("%s, but version %s's card was not updated: %s", done, version, exc)

    # ------------------------------------------------------------------ aliases + audit
    def set_alias(
        self,
        alias: str,
        version: str | None,
        *,
        actor: str,
        reason: str,
        gold_hash: str | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> AuditEvent:
        """Point ``@alias`` at ``version`` (or delete it with None) and audit the move.

        Three steps (:mod:`ner.audit`): the intent (an audit run, RUNNING, ``move_state``
        pending, carrying ``tags`` too), the move, the completion (FINISHED). A move that
        fails ends its intent FAILED (reverted) when MLflow still answers. If the completion
        fails the move stands and :class:`RegistryError` is raised; the intent stays pending
        until :meth:`repair_moves` (a retry of the promotion, or the next train-ner run)
        completes it.
        """
        from mlflow.exceptions import MlflowException

        before = self.alias_version(alias)
        event = AuditEvent(
            alias=alias,
            from_version=before,
            to_version=version,
            actor=actor,
            reason=reason,
            gold_hash=gold_hash,
            timestamp=time.time(),
            metrics=dict(metrics or {}),
        )
        try:
            audit_run = self._begin_audit(event, tags or {})
        except MlflowException as exc:
            raise _wrap(f"auditing the move of @{alias} to {version}", exc) from exc
        try:
            self._move_alias(alias, version, before)
        except MlflowException as exc:
            self._end_intent(audit_run, f"move failed: {exc}", best_effort=True)
            raise _wrap(f"alias move @{alias} -> {version}", exc) from exc
        try:
            self._end_audit(audit_run, event)
        except MlflowException as exc:
            raise _wrap(
                f"completing the audit of @{alias} -> {version} (the alias moved; the next "
                "repair completes the audit)",
                exc,
            ) from exc
        if alias == CHAMPION and version is not None:
            self._drop_rolled_back(version)
        return AuditEvent(**{**event.__dict__, "run_id": audit_run})

    def _drop_rolled_back(self, version: str) -> None:
        """Remove the ``brandloop.rolled_back*`` tags from ``version``, champion again: they
        say it is out of service (trial AP found a champion tagged so); its card and the
        audit log keep the rollback. Best effort, as :meth:`_note_on_card`."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_model_version(self.model_name, version).tags or {}
            for key in [k for k in tags if k.startswith(f"{TAG_PREFIX}rolled_back")]:
                self.client.delete_model_version_tag(self.model_name, version, key)
        except MlflowException as exc:
            log.warning(
                "version %s is @%s, but its rolled_back tags stay: %s", version, CHAMPION, exc
            )

    def _move_alias(self, alias: str, version: str | None, before: str | None) -> None:
        """The move itself: point ``@alias`` at ``version``, or delete it (None)."""
        if version is None:
            if before is not None:
                self.client.delete_registered_model_alias(self.model_name, alias)
        else:
            self.client.set_registered_model_alias(self.model_name, alias, version)

    def _begin_audit(self, event: AuditEvent, tags: Mapping[str, str]) -> str:
        """Write the intent of an alias move: its audit run (who, why, metrics, gold hash),
        RUNNING with ``move_state`` pending."""
        from mlflow.entities import Metric

        experiment_id = self.experiment_id(f"{self.experiment_name}-audit")
        run_tags = {
            **tags,
            f"{TAG_PREFIX}event": "alias_move",
            f"{TAG_PREFIX}model": self.model_name,
            f"{TAG_PREFIX}alias": event.alias,
            f"{TAG_PREFIX}from_version": event.from_version or "",
            f"{TAG_PREFIX}to_version": event.to_version or "",
            f"{TAG_PREFIX}actor": event.actor,
            f"{TAG_PREFIX}reason": event.reason[:4900],
            f"{TAG_PREFIX}gold_hash": event.gold_hash or "",
            MOVE_STATE_TAG: MoveState.PENDING.value,
            "mlflow.runName": (
                f"@{event.alias}: {event.from_version or '-'} -> {event.to_version or '-'}"
            ),
        }
        stamp = int(event.timestamp * 1000)
        run = self.client.create_run(experiment_id, start_time=stamp, tags=run_tags)
        if event.metrics:
            self.client.log_batch(
                run.info.run_id,
                metrics=[Metric(k, float(v), stamp, 0) for k, v in event.metrics.items()],
            )
        return str(run.info.run_id)

    def _end_audit(self, run_id: str, event: AuditEvent) -> None:
        """Complete the audit of a move that happened; FINISHED is written last. The
        ``brandloop.<alias>_since`` tag moves with the alias: on the version that holds it
        now, off the one that held it (a stale tag read as still holding it in the UI)."""
        since = f"{TAG_PREFIX}{event.alias}_since"
        if event.from_version and event.from_version != event.to_version:
            self._drop_version_tag(event.from_version, since)
        if event.to_version:
            self.client.set_model_version_tag(
                self.model_name,
                event.to_version,
                since,
                _now(event.timestamp),
            )
        self.client.set_tag(run_id, MOVE_STATE_TAG, MoveState.DONE.value)
        self.client.set_terminated(run_id, "FINISHED")
        log.info(
            "audit: @%s %s -> %s by %s (%s)",
            event.alias,
            event.from_version,
            event.to_version,
            event.actor,
            event.reason,
        )

    def _drop_version_tag(self, version: str, key: str) -> None:
        """Delete tag ``key`` of ``version`` if it has it (a deleted version is left alone)."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_model_version(self.model_name, version).tags or {}
            if key in tags:
                self.client.delete_model_version_tag(self.model_name, version, key)
        except MlflowException as exc:  # the version was deleted meanwhile: nothing to drop
            log.debug("left tag %s of version %s: %s", key, version, exc)

    def _end_intent(self, run_id: str, reason: str, *, best_effort: bool = False) -> bool:
        """End the intent of a move that did not happen: FAILED, ``move_state`` reverted."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_tag(run_id, MOVE_STATE_TAG, MoveState.REVERTED.value)
        except (MlflowException, OSError) as exc:
            if not best_effort:
                raise _wrap(f"reverting the intent {run_id}", exc) from exc
            log.warning("could not mark the intent %s reverted: %s", run_id, exc)
            return False
        return self.close_run(run_id, "FAILED", reason=reason, best_effort=best_effort)

    def _audit_runs(self, status: str) -> list[Any]:
        """This model's audit runs with MLflow ``status``, oldest first."""
        exp = self.client.get_experiment_by_name(f"{self.experiment_name}-audit")
        if exp is None:
            return []
        return list(
            self.client.search_runs(
                [exp.experiment_id],
                filter_string=(
                    f"tags.`{TAG_PREFIX}model` = '{self.model_name}' "
                    f"and attributes.status = '{status}'"
                ),
                order_by=["attributes.start_time ASC"],
                max_results=5000,
            )
        )

    def audit_log(self) -> list[AuditEvent]:
        """Every alias move of this model, oldest first (moves that failed, and moves whose
        audit is still pending, are left out)."""
        return [_audit_event(run) for run in self._audit_runs("FINISHED")]

    def pending_moves(self, actor: str | None = None) -> list[PendingMove]:
        """Alias moves of this model whose audit run is still open (of ``actor`` only, if
        given), oldest first. Raises :class:`RegistryError` if MLflow fails."""
        from mlflow.exceptions import MlflowException

        try:
            runs = self._audit_runs("RUNNING")
        except MlflowException as exc:
            raise _wrap("searching pending alias moves", exc) from exc
        moves = [_pending_move(run) for run in runs]
        return [m for m in moves if actor is None or m.actor == actor]

    def repair_moves(self, moves: Sequence[PendingMove], *, actor: str) -> list[Repair]:
        """Complete or revert each pending move by where its alias points now
        (:func:`ner.audit.decide_repair`). A completed ``@champion`` move also clears
        ``@challenger`` if it still points at the new champion (by ``actor``), as the
        promotion would have. Raises :class:`RegistryError` if MLflow fails."""
        from mlflow.exceptions import MlflowException

        repairs = []
        for move in moves:
            decision = decide_repair(move, self.alias_version(move.alias))
            try:
                if decision.action is RepairAction.COMPLETED:
                    self._end_audit(move.run_id, self._intent_event(move))
                else:
                    self._end_intent(move.run_id, f"reverted: {decision.reason}")
            except MlflowException as exc:
                raise _wrap(f"repairing the alias move {move.name}", exc) from exc
            repair = Repair(move=move, action=decision.action, reason=decision.reason)
            log.warning("repaired %s (audit run %s): %s", repair.name, move.run_id, repair.reason)
            repairs.append(repair)
            if decision.action is RepairAction.COMPLETED and move.alias == CHAMPION:
                self._clear_challenger(move.to_version, actor=actor, gold_hash=None)
        return repairs

    def _intent_event(self, move: PendingMove) -> AuditEvent:
        """The :class:`AuditEvent` recorded by a pending move's audit run."""
        return _audit_event(self.client.get_run(move.run_id))

    def _clear_challenger(
        self,
        version: str | None,
        *,
        actor: str,
        gold_hash: str | None,
        tags: Mapping[str, str] | None = None,
    ) -> list[AuditEvent]:
        """Delete ``@challenger`` if it points at ``version`` (just promoted)."""
        if version is None or self.alias_version(CHALLENGER) != version:
            return []
        return [
            self.set_alias(
                CHALLENGER,
                None,
                actor=actor,
                gold_hash=gold_hash,
                reason=f"version {version} promoted to champion",
                tags=tags,
            )
        ]

    def promote(
        self,
        version: str,
        *,
        gold_hash: str,
        decision: Decision,
        metrics: Mapping[str, float],
        actor: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[AuditEvent]:
        """Make ``version`` the champion; the old champion becomes ``@previous``;
        ``@challenger`` is cleared if it pointed at ``version``. Returns the audited moves.

        Refuses (``PromotionError``) unless ``decision.promote`` and the version carries an
        evaluation on ``gold_hash``. Safe to retry: the pending moves of ``actor`` (an
        interrupted earlier attempt) are repaired first, and a move already made is not
        made again. ``tags`` go on every audit run (e.g. the Prefect flow-run id).
        """
        if not decision.promote:
            raise PromotionError(f"version {version} not promoted: {decision.reason}")
        if self.evaluated_f1(version, gold_hash) is None:
            raise PromotionError(
                f"version {version} was never evaluated on gold set {gold_hash[:12]}: "
                "no promotion without evaluation"
            )
        actor = actor or default_actor()
        self.repair_moves(self.pending_moves(actor), actor=actor)
        healed = self.repair_previous(actor=actor)
        events = [] if healed is None else [healed]
        current = self.alias_version(CHAMPION)
        if current != version:
            if current is not None and self.alias_version(PREVIOUS) != current:
                events.append(
                    self.set_alias(
                        PREVIOUS,
                        current,
                        actor=actor,
                        gold_hash=gold_hash,
                        reason=f"replaced by version {version}",
                        tags=tags,
                    )
                )
            events.append(
                self._move_champion(
                    version, current, actor, decision.reason, gold_hash, metrics, tags
                )
            )
            if current is not None:
                self._note_replaced(current, version, decision.reason)
        events += self._clear_challenger(version, actor=actor, gold_hash=gold_hash, tags=tags)
        return events

    def _move_champion(
        self,
        version: str,
        current: str | None,
        actor: str,
        reason: str,
        gold_hash: str,
        metrics: Mapping[str, float],
        tags: Mapping[str, str] | None,
    ) -> AuditEvent:
        """The audited move of ``@champion`` from ``current`` to ``version``; when it fails and
        ``@champion`` did not move, ``@previous`` is put back too (:meth:`repair_previous`;
        best effort, MLflow may be gone: the next promotion or rollback repairs it then)."""
        try:
            return self.set_alias(
                CHAMPION,
                version,
                actor=actor,
                reason=reason,
                gold_hash=gold_hash,
                metrics=metrics,
                tags=tags,
            )
        except RegistryError:
            with contextlib.suppress(RegistryError):
                if self.alias_version(CHAMPION) == current:
                    self.repair_previous(actor=actor)
            raise

    def repair_previous(self, *, actor: str) -> AuditEvent | None:
        """Undo what a promotion that failed half-way left: ``@previous`` moved to the
        champion, whose own move then failed (a trial's MLflow died between the two; its
        audit said the champion was "replaced by version 2", and rollback refused). When
        ``@previous`` is the champion outside a rollback, it goes back, audited, to where that
        move found it; returns that move, or None when there was nothing to undo. Raises
        :class:`RegistryError` if MLflow fails."""
        from mlflow.exceptions import MlflowException

        champion = self.alias_version(CHAMPION)
        if champion is None or self.alias_version(PREVIOUS) != champion:
            return None
        try:
            log = self.audit_log()
        except MlflowException as exc:
            raise _wrap("reading the alias moves", exc) from exc
        last = next((e for e in reversed(log) if e.alias in (CHAMPION, PREVIOUS)), None)
        if last is None or last.alias != PREVIOUS or last.to_version != champion:
            return None  # an interrupted rollback (its champion move came last): it finishes
        return self.set_alias(
            PREVIOUS,
            last.from_version,
            actor=actor,
            reason=f"undone: version {champion} was not replaced ({last.reason}: the champion "
            "move failed)",
        )

    def _note_replaced(self, version: str, by_version: str, reason: str) -> None:
        """Top ``version``'s card (the champion a promotion moved away from) with a
        "Replaced" line, so an earlier "Promoted by hand" or "Restored" line is no longer the
        first thing it says. Best effort, as :meth:`_note_on_card`."""
        from ner.modelcard import replaced_note

        note = replaced_note(by_version=by_version, reason=reason, when=_now())
        self._note_on_card(version, note, {}, done=f"version {by_version} promoted")

    def rollback(
        self,
        *,
        actor: str | None = None,
        reason: str = "manual rollback",
        gold_hash: str | None = None,
    ) -> AuditEvent:
        """Move ``@champion`` back to ``@previous`` (the champion before the last promotion);
        ``@previous`` moves to the champion before that, if any. Returns the champion move.
        With ``gold_hash`` (the gold set in force) the champion move's audit run carries it,
        and the two versions' F1 on it where they were scored (``restored_f1``,
        ``rolled_back_f1``).

        Safe to retry: ``actor``'s pending moves are repaired first, and a rollback whose
        champion move was made but not its ``@previous`` move is finished. Raises
        :class:`PromotionError` if there is nothing to roll back to.
        """
        actor = actor or default_actor()
        self.repair_moves(self.pending_moves(actor), actor=actor)
        self.repair_previous(actor=actor)
        previous, current = self.alias_version(PREVIOUS), self.alias_version(CHAMPION)
        if previous is None:
            if current is None:
                raise self.missing_model() or PromotionError(
                    f"nothing to roll back to: no version of {self.model_name} was made "
                    f"@{CHAMPION} yet"
                )
            raise PromotionError(f"no @{PREVIOUS} version of {self.model_name} to roll back to")
        if current == previous:  # an interrupted rollback: @champion moved, @previous not yet
            event = self._interrupted_rollback(previous)
            current = event.from_version
        else:
            scores = self._scores_on(gold_hash, restored_f1=previous, rolled_back_f1=current)
            event = self.set_alias(
                CHAMPION,
                previous,
                actor=actor,
                reason=f"rollback: {reason}",
                gold_hash=gold_hash,
                metrics=scores,
            )
        self.set_alias(
            PREVIOUS,
            self._previous_before(previous, current),
            actor=actor,
            reason=f"{ROLLBACK_FROM}{current}",
        )
        if current is not None:
            from ner.modelcard import restored_note, rollback_note

            when = _now()
            note = rollback_note(reason=reason, actor=actor, when=when)
            moved = {"_by": actor, "_at": when}
            tags = {"rolled_back": reason, **{f"rolled_back{k}": v for k, v in moved.items()}}
            self._note_on_card(current, note, tags, done="rolled back")
            back = restored_note(reason=reason, actor=actor, when=when, from_version=current)
            tags = {"restored": reason, **{f"restored{k}": v for k, v in moved.items()}}
            self._note_on_card(previous, back, tags, done="rolled back")
        return event

    def _scores_on(self, gold_hash: str | None, **versions: str | None) -> dict[str, float]:
        """``{name: F1 of version on gold_hash}`` for the versions scored on it."""
        scores = {}
        for name, version in versions.items():
            f1 = self.evaluated_f1(version, gold_hash) if version and gold_hash else None
            if f1 is not None:
                scores[name] = f1
        return scores

    def _previous_before(self, restored: str, current: str | None) -> str | None:
        """What ``@previous`` was while ``restored`` was the champion: the version the last
        promotion that displaced it moved ``@previous`` from (the aliases are a stack; moves a
        rollback made are skipped, so a version rolled back never comes back by one)."""
        displaced = [
            e
            for e in self.audit_log()
            if e.alias == PREVIOUS
            and e.to_version == restored
            and not e.reason.startswith(ROLLBACK_FROM)
        ]
        before = displaced[-1].from_version if displaced else None
        return None if before in (restored, current) else before

    def _interrupted_rollback(self, champion: str) -> AuditEvent:
        """The audited rollback that made ``champion`` the champion while ``@previous``
        still points at it; :class:`PromotionError` if the last champion move was none."""
        moves = [e for e in self.audit_log() if e.alias == CHAMPION]
        last = moves[-1] if moves else None
        if last is None or last.to_version != champion or not last.reason.startswith("rollback:"):
            raise PromotionError(
                f"@{PREVIOUS} is the champion ({champion}) and no rollback is under way: "
                "nothing to roll back to"
            )
        return last


def _audit_event(run: Any) -> AuditEvent:
    """The alias move an audit run records."""
    t = run.data.tags
    return AuditEvent(
        alias=t[f"{TAG_PREFIX}alias"],
        from_version=t.get(f"{TAG_PREFIX}from_version") or None,
        to_version=t.get(f"{TAG_PREFIX}to_version") or None,
        actor=t.get(f"{TAG_PREFIX}actor", ""),
        reason=t.get(f"{TAG_PREFIX}reason", ""),
        gold_hash=t.get(f"{TAG_PREFIX}gold_hash") or None,
        timestamp=run.info.start_time / 1000.0,
        metrics=dict(run.data.metrics),
        run_id=run.info.run_id,
    )


def _pending_move(run: Any) -> PendingMove:
    """The pending move an open audit run records."""
    event = _audit_event(run)
    return PendingMove(
        run_id=str(run.info.run_id),
        alias=event.alias,
        from_version=event.from_version,
        to_version=event.to_version,
        actor=event.actor,
        started=event.timestamp,
        owner=run.data.tags.get(OWNER_TAG) or None,
    )


_LABEL_STATS = ("precision", "recall", "f1", "support")


def set_metrics(report: Any, set_name: str) -> dict[str, float]:
    """``report``'s metrics (:meth:`ner.evaluation.EvalReport.to_metrics`) named for MLflow by
    evaluation set: ``{set}.{metric}`` and ``{set}.{LABEL}.{stat}`` (``gold.f1``,
    ``gold.BRAND.f1``, ``canary.recall``); the one scheme of training and evaluation runs."""
    per_label = {
        f"{label}_{stat}": f"{label}.{stat}" for label in report.labels for stat in _LABEL_STATS
    }
    return {
        f"{set_name}.{per_label.get(name, name)}": float(value)
        for name, value in report.to_metrics().items()
    }


def model_description(audit_experiment: str) -> str:
    """The registered model's description (the MLflow UI's model page), set when brandloop
    creates it; ``audit_experiment`` is where its alias moves are audited."""
    return (
        "Brand NER (spaCy) trained by brandloop's train-ner flow on human labels. `@champion` "
        "is the version in service (promoted by the gate or by hand; every alias move is a run "
        f"of the `{audit_experiment}` experiment), `@previous` the one a rollback returns to, "
        "`@challenger` the latest trained. Each version's description is its model card: "
        "training data, recipe, scores on the gold and canary sets, the gate's verdict and "
        "known limits."
    )


def run_tags(env: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags every brandloop run carries (callers add the Prefect flow-run id)."""
    tags = {f"{TAG_PREFIX}env": env}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tags.update(extra or {})
    return tags


def write_json_artifact(run_id: str, name: str, payload: Any, client: Any) -> None:
    """Log a JSON document as an artifact of ``run_id``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
        client.log_artifact(run_id, str(path))


def _dev_f1(row: Mapping[str, Any]) -> float:
    """The held-back slice's F1 of a training curve row (``dev_f1``, set by
    :func:`ner.training.curve_f1`; the checkpoint score in curves without it)."""
    return float(row.get("dev_f1", row.get("score", 0.0)))


def _log_curve_and_plots(
    client: Any,
    run_id: str,
    curve: Sequence[Mapping[str, Any]],
) -> None:
    from mlflow.entities import Metric

    from ner import plots

    stamp = int(time.time() * 1000)
    metrics = [
        Metric("curve_dev_f1", _dev_f1(row), stamp, int(row.get("step", i)))
        for i, row in enumerate(curve)
    ] + [
        Metric("curve_loss_ner", float(row.get("loss_ner", 0.0)), stamp, int(row.get("step", i)))
        for i, row in enumerate(curve)
    ]
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start : start + 900])
    if curve:
        with tempfile.TemporaryDirectory() as tmp:
            path = plots.learning_curve(
                [(float(r.get("step", 0)), _dev_f1(r)) for r in curve],
                Path(tmp) / "learning_curve.png",
                title="dev F1 during training",
                xlabel="step",
            )
            client.log_artifact(run_id, str(path), "plots")
