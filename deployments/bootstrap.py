"""Prepare a Prefect server for brandloop and deploy ``prefect.yaml``, for one or more
environments.

For each environment it:

1. checks that every ``{{ $VARIABLE }}`` the environment's deployments use is set, not
   empty (``prefect deploy`` would silently store an empty string) and not still one of
   ``deployments/.env.example``'s placeholders (``change-me``, a host under example.com),
   and that URLs, URIs and folders have their shape (``value_problem``);
2. creates the environment's process work pool if it is missing;
3. with ``--secrets-from-env``, saves the Prefect Secret blocks the flows read at run time
   (``x-bearer-token-<env>``, ``label-studio-api-key-<env>``) from
   ``BRANDLOOP_<ENV>_X_BEARER_TOKEN`` / ``BRANDLOOP_<ENV>_LABEL_STUDIO_API_KEY``; a block
   whose variable is unset is created empty if missing (the flows then fail with a clear
   message only when they need that secret), and left alone if it exists;
4. with ``--create-bucket``, creates the ``gs://`` bucket of the environment's storage
   when it does not exist (meant for the GCS emulator of the local stack);
5. runs ``prefect --no-prompt deploy --name <flow>/<env> ...`` in the project root.

Usage::

    python -m deployments.bootstrap --env dev --secrets-from-env --create-bucket
    python -m deployments.bootstrap --check      # only report unusable variables

``PREFECT_API_URL`` says which server. Secret values are never printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deployments.versioning import with_default_version
from flows import context

PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT_FILE = PROJECT_DIR / "prefect.yaml"
EXAMPLE_FILE = PROJECT_DIR / "deployments" / ".env.example"


def export_hint(envs: Sequence[str]) -> str:
    """How to set ``envs``' deploy-time variables from the example file: its lines of those
    environments only (exported, the compose lines would change brandloop's settings too,
    NER_MIN_NEW_LABELS..., and another environment's would point its commands at the
    example's hosts: a trial's dev ``status`` went to http://mlflow:5000)."""
    names = "|".join(["PROJECT_DIR", *(f"{env.upper()}_" for env in envs)])
    example = shlex.quote(str(PROJECT_DIR / "deployments" / ".env.example"))  # from anywhere
    return (
        "deployments/.env.example has an example of each: copy the lines of this "
        f"environment (grep -E '^BRANDLOOP_({names})' {example} > deploy.env), "
        "put in its real values, and export them: set -a; . ./deploy.env; set +a"
    )


ENVIRONMENTS = ("dev", "staging", "prod")
#: Settings field -> Secret block name prefix (the block is ``<prefix>-<env>``): the
#: secrets the flows read through ``flows.context.build_settings``.
SECRET_BLOCKS = {f: context.secret_block_name(f, "").rstrip("-") for f in context.FLOW_SECRETS}
_ENV_PLACEHOLDER = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

log = logging.getLogger("brandloop.bootstrap")


class BootstrapError(RuntimeError):
    """The environment cannot be deployed as asked (missing variable, failed deploy...)."""


# -- reading prefect.yaml ------------------------------------------------------------------
def load_prefect_file(path: Path = PREFECT_FILE) -> dict[str, Any]:
    """``prefect.yaml`` as a dict (anchors and merge keys resolved)."""
    import yaml

    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict) or not isinstance(data.get("deployments"), list):
        raise BootstrapError(f"{path} has no 'deployments' list")
    return data


def flow_name(deployment: Mapping[str, Any]) -> str:
    """The flow name ``prefect deploy`` matches a ``flow/deployment`` name against."""
    return str(deployment["entrypoint"]).split(":")[-1].replace("_", "-")


def deployments_for(config: Mapping[str, Any], env: str) -> list[dict[str, Any]]:
    """The deployments of one environment (the deployment name is the environment)."""
    found = [d for d in config["deployments"] if d.get("name") == env]
    if not found:
        raise BootstrapError(f"prefect.yaml has no deployment named {env!r}")
    return found


def env_placeholders(value: Any) -> set[str]:
    """Names of the ``{{ $VARIABLE }}`` placeholders anywhere in ``value``."""
    if isinstance(value, str):
        return set(_ENV_PLACEHOLDER.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(env_placeholders(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(env_placeholders(v) for v in value))
    return set()


def required_variables(config: Mapping[str, Any], envs: Sequence[str]) -> list[str]:
    """Every deploy-time variable the deployments of ``envs`` need, sorted."""
    names: set[str] = set()
    for env in envs:
        for deployment in deployments_for(config, env):
            names |= env_placeholders(deployment)
    return sorted(names)


def example_values(path: Path = EXAMPLE_FILE) -> dict[str, str]:
    """``NAME -> example value`` of the example file's non-empty lines."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v}


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is one the example file says to replace: ``change-me``, or a URL
    whose host is example.com or under it (reserved for examples, RFC 2606)."""
    host = urlsplit(value.strip()).hostname or ""
    return value.strip() == "change-me" or host == "example.com" or host.endswith(".example.com")


#: What a variable named ``*<suffix>`` must look like (URL schemes or "absolute path").
_SHAPES = {
    "_MLFLOW_TRACKING_URI": (("http", "https", "sqlite", "postgresql", "mysql", "file"), False),
    "_LABEL_STUDIO_URL": (("http", "https"), False),
    "_STORAGE_URI": (("gs", "file"), True),
    "_PROJECT_DIR": ((), True),
}


def value_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be variable ``name``'s, or None: spaces around it, or, for a
    tracking URI, Label Studio URL, storage URI or project folder, not that kind of value
    (a bare ``mlflow.db`` is no tracking URI: the worker would read it as a path of its
    own folder, silently)."""
    if value != value.strip():
        return "spaces around the value"
    for suffix, (schemes, path_ok) in _SHAPES.items():
        if not name.endswith(suffix):
            continue
        parts = urlsplit(value)
        if parts.scheme in schemes and (parts.netloc or parts.scheme in ("sqlite", "file")):
            return None
        if path_ok and value.startswith("/"):
            return None
        kinds = [f"{s}://…" for s in schemes] + (["an absolute path"] if path_ok else [])
        return f"not {' or '.join(kinds)}"
    return None


def unusable_variables(
    config: Mapping[str, Any], envs: Sequence[str], environ: Mapping[str, str]
) -> list[str]:
    """Required variables that cannot be deployed with, sorted: unset, empty, still a
    placeholder (:func:`is_placeholder`) or of the wrong shape (:func:`value_problem`)."""
    return [
        n
        for n in required_variables(config, envs)
        if not environ.get(n, "").strip()
        or is_placeholder(environ[n])
        or value_problem(n, environ[n])
    ]


def check_lines(
    names: Sequence[str], environ: Mapping[str, str], examples: Mapping[str, str]
) -> list[str]:
    """One line per unusable variable, saying why and, when unset, the example's value:
    ``missing: NAME (example: VALUE)``, ``placeholder: NAME=VALUE (the example's ...)`` or
    ``invalid: NAME='VALUE' (why)``; with none, the line that says so."""
    lines = []
    for name in names:
        raw = environ.get(name, "")
        value = raw.strip()
        problem = value_problem(name, raw) if value else None
        if value and not is_placeholder(raw) and problem:
            lines.append(f"invalid: {name}={raw!r} ({problem})")
        elif value:
            lines.append(f"placeholder: {name}={value} (the example's; put in the real value)")
        elif name in examples:
            lines.append(f"missing: {name} (example: {examples[name]})")
        else:
            lines.append(f"missing: {name}")
    return lines or ["every deploy-time variable is set"]


def example_value_notes(
    config: Mapping[str, Any], envs: Sequence[str], environ: Mapping[str, str]
) -> list[str]:
    """Notes on usable values that may still be wrong (not errors: the workers may run on
    another machine): a value left as ``deployments/.env.example`` has it (dev's are the
    compose stack's host names and image folder), and a project folder this machine does
    not have."""
    examples = example_values()
    notes = []
    for name in required_variables(config, envs):
        value = environ.get(name, "")
        if value and value == examples.get(name) and not is_placeholder(value):
            notes.append(
                f"note: {name}={value} is the example file's value (the compose stack's); "
                "keep it only if it is yours"
            )
    folder = environ.get("BRANDLOOP_PROJECT_DIR", "")
    if folder.startswith("/") and not Path(folder).is_dir():
        notes.append(
            f"note: BRANDLOOP_PROJECT_DIR={folder} is not a folder here; the workers must "
            "have this checkout there"
        )
    return notes


def unusable_error(names: Sequence[str], envs: Sequence[str], environ: Mapping[str, str]) -> str:
    """The one-line error for unusable variables ``names`` (not empty) of ``envs``, with
    the way out: the example file when one is unset or a placeholder, else (values set
    but invalid) to fix them as the lines above say."""
    if all(environ.get(n, "").strip() and not is_placeholder(environ[n]) for n in names):
        way_out = "fix each value as the line above it says, and export it again"
    else:
        way_out = export_hint(envs)
    return (
        f"{len(names)} deploy-time variable(s) unset, placeholders or invalid, first {names[0]} "
        f"({way_out})"
    )


def work_pool_names(config: Mapping[str, Any], env: str) -> list[str]:
    """The work pools the environment's deployments run on."""
    return sorted({str(d["work_pool"]["name"]) for d in deployments_for(config, env)})


def deployment_names(config: Mapping[str, Any], env: str) -> list[str]:
    """``flow/env`` names of the environment's deployments, as ``prefect deploy`` takes."""
    return [f"{flow_name(d)}/{env}" for d in deployments_for(config, env)]


def secret_block_name(field: str, env: str) -> str:
    """Name of the Secret block holding ``field`` (a Settings secret) for ``env``."""
    if field not in SECRET_BLOCKS:
        raise BootstrapError(f"{field!r} is not a secret the flows read")
    return context.secret_block_name(field, env)


def secret_variable(field: str, env: str) -> str:
    """The variable ``--secrets-from-env`` reads ``field`` from for ``env``."""
    return f"BRANDLOOP_{env.upper()}_{field.upper()}"


# -- talking to Prefect ---------------------------------------------------------------------
def ensure_work_pool(name: str) -> bool:
    """Create the process work pool ``name`` (with Prefect's default process job template)
    unless it exists; returns whether it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            pass
        else:
            if pool.type != "process":
                raise BootstrapError(f"work pool {name!r} exists with type {pool.type!r}")
            return False
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:  # created meanwhile by someone else
            return False
    return True


def ensure_secret_blocks(env: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Save the environment's Secret blocks from ``environ``; returns block -> action
    (``saved``, ``created empty`` or ``kept``). Values are never logged."""
    from prefect.blocks.system import Secret

    actions: dict[str, str] = {}
    for field in SECRET_BLOCKS:
        block = secret_block_name(field, env)
        value = environ.get(secret_variable(field, env), "")
        if value:
            Secret(value=value).save(block, overwrite=True)
            actions[block] = "saved"
            continue
        try:
            Secret.load(block)
        except ValueError:  # Prefect's "Unable to find block document named ..."
            Secret(value="").save(block, overwrite=False)
            actions[block] = "created empty"
        else:
            actions[block] = "kept"
    return actions


def empty_secret_notes(envs: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """What ``--secrets-from-env`` will do with each unset secret variable of ``envs``: one
    ``note:`` line per variable (the block is kept if it exists, else created empty)."""
    return [
        f"note: {secret_variable(field, env)} is unset or empty: --secrets-from-env keeps "
        f"Secret block {secret_block_name(field, env)} if it exists, else creates it empty (a "
        "flow that needs it then fails, naming it)"
        for env in envs
        for field in SECRET_BLOCKS
        if not environ.get(secret_variable(field, env), "").strip()
    ]


def empty_block_notes(
    env: str, done: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> list[str]:
    """One ``note:`` line per Secret block :func:`bootstrap` created empty for ``env``, naming
    the deployments of ``config`` (``prefect.yaml``) whose active schedule needs it: a
    trial's prod deploy left ``apply-ner/prod`` scheduled every 6 h on an empty X token."""
    fields = {secret_block_name(f, env): f for f in SECRET_BLOCKS}
    empty = [b for b, action in done.get("secret_blocks", {}).items() if action == "created empty"]
    if config is None and empty:
        config = load_prefect_file()
    notes = []
    for block in (b for b in empty if b in fields):
        variable = secret_variable(fields[block], env)
        note = (
            f"note: Secret block {block} was created empty ({variable} unset or empty): a flow "
            f"that needs it fails until you set {variable} and run with --secrets-from-env again"
        )
        if config is not None and (users := scheduled_users(config, env, fields[block])):
            note += (
                f"; {', '.join(users)} {'runs' if len(users) == 1 else 'run'} on an active "
                "schedule that fails until then (or pause it: `prefect deployment schedule "
                "ls` and `pause`)"
            )
        notes.append(note)
    return notes


def scheduled_users(config: Mapping[str, Any], env: str, field: str) -> list[str]:
    """``flow/env`` of each deployment of ``env`` with an active schedule whose parameters
    read the secret ``field`` (the X token for ``source: x``, the Label Studio key for
    ``label_studio`` as source or destination)."""
    wanted = "x" if field == "x_bearer_token" else "label_studio"
    return [
        f"{flow_name(d)}/{env}"
        for d in deployments_for(config, env)
        if any(s.get("active", True) for s in d.get("schedules") or [])
        and wanted in {(d.get("parameters") or {}).get(k) for k in ("source", "destination")}
    ]


def ensure_bucket(storage_uri: str, variable: str) -> str:
    """Create the bucket of a ``gs://`` storage URI unless it exists; returns what was done
    (``created gs://b``, ``gs://b exists``, or why there is no bucket to create: ``variable``,
    the one the URI came from, is unset or not ``gs://``)."""
    if not storage_uri.startswith("gs://"):
        given = repr(storage_uri) if storage_uri else "unset"
        return f"none ({variable} is {given}, not a gs:// URI)"
    from ner.storage import make_gcs_client

    bucket = storage_uri.removeprefix("gs://").split("/", 1)[0]
    client = make_gcs_client()
    if client.lookup_bucket(bucket) is not None:
        return f"gs://{bucket} exists"
    client.create_bucket(bucket)
    return f"created gs://{bucket}"


def run_deploy(
    names: Sequence[str], environ: Mapping[str, str], cwd: Path = PROJECT_DIR
) -> subprocess.CompletedProcess[str]:
    """``prefect --no-prompt deploy --name N ...`` in ``cwd``; raises on failure."""
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
    for name in names:
        argv += ["--name", name]
    done = subprocess.run(
        argv, cwd=cwd, env=dict(environ), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BootstrapError(
            f"prefect deploy failed with code {done.returncode}:\n"
            f"{(done.stdout + done.stderr)[-4000:]}"
        )
    return done


def bootstrap(
    envs: Sequence[str],
    environ: Mapping[str, str],
    *,
    secrets_from_env: bool = False,
    create_bucket: bool = False,
    deploy: bool = True,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Do every step for ``envs``; returns what was done (no secret values)."""
    config = config or load_prefect_file()
    unusable = unusable_variables(config, envs, environ) if deploy else []
    if unusable:  # only the deployments read them: pools, blocks and a bucket do not
        raise BootstrapError(f"{unusable_error(unusable, envs, environ)}: {', '.join(unusable)}")
    report: dict[str, Any] = {}
    for env in envs:
        done: dict[str, Any] = {
            # each pool's fate: a trial read "created: none" as nothing set up
            "work_pools": {
                p: "created" if ensure_work_pool(p) else "exists"
                for p in work_pool_names(config, env)
            }
        }
        if secrets_from_env:
            done["secret_blocks"] = ensure_secret_blocks(env, environ)
        if create_bucket:
            variable = f"BRANDLOOP_{env.upper()}_STORAGE_URI"
            done["bucket"] = ensure_bucket(environ.get(variable, ""), variable)
        if deploy:
            names = deployment_names(config, env)
            run_deploy(names, environ)
            done["deployed"] = names
        report[env] = done
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.bootstrap", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--env",
        action="append",
        choices=ENVIRONMENTS,
        help="environment to prepare (repeatable; default: all three)",
    )
    parser.add_argument(
        "--secrets-from-env",
        action="store_true",
        help="save the Secret blocks from BRANDLOOP_<ENV>_* secret variables",
    )
    parser.add_argument(
        "--create-bucket",
        action="store_true",
        help="create the gs:// bucket of BRANDLOOP_<ENV>_STORAGE_URI if it is missing",
    )
    parser.add_argument("--no-deploy", action="store_true", help="prepare only")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check: unset, placeholder or invalid deploy-time variables, and the Prefect API",
    )
    return parser


def _checked(envs: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Print why each deploy-time variable of ``envs`` is unusable; returns the unusable
    ones, after logging the one-line error."""
    unusable = unusable_variables(load_prefect_file(), envs, environ)
    if unusable:
        print("\n".join(check_lines(unusable, environ, example_values())))
        log.error("%s", unusable_error(unusable, envs, environ))
    return unusable


def check_report(
    envs: Sequence[str], environ: Mapping[str, str], *, secrets_from_env: bool
) -> tuple[list[str], str | None, list[str]]:
    """What ``--check`` says, for this module and ``brandloop deploy --check`` alike:
    ``(lines, error, api)``. ``lines``: the unusable variables (or that every one is set),
    the example-value notes and, with ``secrets_from_env``, the empty secrets; ``error``:
    the one-line error of unusable variables, else None; ``api``: why the deploy would be
    refused by the Prefect API (:func:`prefect_api`: not set, or not answering), else empty,
    and ``lines`` then name the API. The check fails when ``error`` or ``api`` is not empty,
    as the deploy would."""
    config = load_prefect_file()
    unusable = unusable_variables(config, envs, environ)
    lines = check_lines(unusable, environ, example_values())
    lines += example_value_notes(config, envs, environ)
    if secrets_from_env:
        lines += empty_secret_notes(envs, environ)
    error = unusable_error(unusable, envs, environ) if unusable else None
    refused: list[str] = []
    try:  # pools, blocks and deployments all go to that API
        lines.append(f"the Prefect API answers at {prefect_api()}: the deploy would go there")
    except BootstrapError as exc:
        refused.append(f"{exc}: a deploy would be refused")
    return lines, error, refused


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # force: importing flows.context has let Prefect configure the root logger already
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    envs = args.env or list(ENVIRONMENTS)
    environ = with_default_version(os.environ)  # BRANDLOOP_VERSION: given, or local-<time>
    if args.check:
        lines, error, refused = check_report(envs, environ, secrets_from_env=args.secrets_from_env)
        print("\n".join(lines + refused))
        if error:
            log.error("%s", error)
        return 1 if error or refused else 0
    if not args.no_deploy and _checked(envs, environ):
        return 1  # only the deployments read them: pools, blocks and a bucket do not
    try:
        api = prefect_api()
        report = bootstrap(
            envs,
            environ,
            secrets_from_env=args.secrets_from_env,
            create_bucket=args.create_bucket,
            deploy=not args.no_deploy,
        )
    except BootstrapError as exc:
        log.error("%s", exc)
        return 1
    for env, done in report.items():
        log.info("%s (Prefect API %s): %s", env, api, report_line(done))
        for note in empty_block_notes(env, done):
            log.warning("%s", note)
    return 0


def prefect_api() -> str:
    """The Prefect API the pools, blocks and deployments go to (``PREFECT_API_URL``).
    Raises :class:`BootstrapError` when none is set (Prefect would start a temporary local
    server whose database no worker reads) or when nothing answers there."""
    from apps.doctor import CheckStatus, check_prefect
    from deployments.label_trigger import prefect_api_url
    from ner.errors import ConfigError

    try:
        url = prefect_api_url(sends="the work pools, Secret blocks and deployments")
    except ConfigError as exc:
        raise BootstrapError(str(exc)) from None
    check = check_prefect(url)
    if check.status is CheckStatus.FAIL:
        raise BootstrapError(
            f"no Prefect API answers at PREFECT_API_URL={url} ({check.detail}): start the "
            "server (prefect server start) or fix PREFECT_API_URL"
        )
    return url


def report_line(done: Mapping[str, Any]) -> str:
    """One environment's :func:`bootstrap` report as one line:
    ``{"work_pools": {"p": "exists"}, "secret_blocks": {"b": "saved"}}`` ->
    ``work pools: p exists; secret blocks: b saved``."""
    parts = []
    for key, value in done.items():
        if isinstance(value, Mapping):
            text = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value) or "none"
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        parts.append(f"{key.replace('_', ' ')}: {text}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
