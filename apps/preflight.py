"""Checks a command makes before it starts work it could not finish: the MLflow store it
reads exists (or its server answers), and the server can load its model and listen. Shared by
``brandloop`` and ``python -m apps.serving``; each refusal is one :class:`ConfigError`
line that says what to do."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ner.errors import ConfigError

if TYPE_CHECKING:
    from ner.settings import Settings


def missing_store(path: Path, flags: bool = True) -> str:
    """Why a command found no SQLite store at ``path``, and what to set instead: the demo's
    store when ``path`` is another (as ``brandloop``'s ``--set`` flags, or with ``flags``
    False as the variables, for a command without them), ``brandloop demo`` when it is the
    demo's own."""
    from apps.doctor import DEMO_STORE, demo_settings

    where = f"no MLflow store at {path.resolve()}: nothing was trained or registered"
    if path.resolve().parts[-3:] == DEMO_STORE.parts:
        return f"{where} by a demo here yet (brandloop demo makes it, in {DEMO_STORE.parent}/)"
    demo = demo_settings(flags)
    return (
        f"{where} with these settings (set NER_MLFLOW_TRACKING_URI and NER_STORAGE_URI, or "
        "the environment's BRANDLOOP_<ENV>_MLFLOW_TRACKING_URI and _STORAGE_URI, to those of "
        f"your runs; the demo's, from the project folder: {demo})"
    )


def require_store(cfg: Settings, flags: bool = True) -> None:
    """Raise :class:`~ner.errors.ConfigError` when the settings' SQLite MLflow store does
    not exist (MLflow would create an empty one and the command would fail on an empty
    registry) or their tracking server does not answer (MLflow would retry for minutes,
    then fail with a urllib error): one probe, as ``brandloop doctor`` makes it. ``flags``:
    as :func:`missing_store`."""
    from apps.doctor import CheckStatus, check_mlflow

    if (db := cfg.tracking_db) is not None and not db.exists():
        raise ConfigError(missing_store(db, flags))
    if cfg.mlflow_tracking_uri.startswith(("http://", "https://")):
        check = check_mlflow(cfg)
        if check.status is CheckStatus.FAIL:
            raise ConfigError(f"MLflow {check.detail}: {check.fix}")


def check_servable(cfg: Settings, flags: bool = True) -> None:
    """Refuse, in one line, what would stop the server after the model loaded: no MLflow
    store, a model, version or alias that does not exist, an address it cannot listen on.
    An alias not set yet is not refused while the server follows it: it says so and waits.
    ``flags``: as :func:`missing_store`."""
    from ner.errors import NotPromotedYetError
    from ner.models import check_model_spec

    if cfg.serve_model.startswith("models:/"):
        require_store(cfg, flags)
    try:
        check_model_spec(
            cfg.serve_model, cfg.mlflow_tracking_uri, own_model=cfg.registered_model_name
        )
    except NotPromotedYetError as exc:
        if cfg.serve_refresh_seconds <= 0:  # a trial could not tell why it did not wait
            raise NotPromotedYetError(
                f"{exc} (NER_SERVE_REFRESH_SECONDS={cfg.serve_refresh_seconds:g}: the server "
                "does not follow the alias, so it cannot wait for one)"
            ) from exc
        # not said here: the server says it once as it starts (apps.serving.model_lifespan)
    check_address(
        cfg.serve_host, cfg.serve_port, "--port (NER_SERVE_PORT)", "--host (NER_SERVE_HOST)"
    )


def check_address(host: str, port: int, port_option: str, host_option: str) -> None:
    """Refuse an address a server cannot listen on: the port in use (choose another
    ``port_option``), or ``host`` not an address of this machine (``host_option``), as a
    :class:`ConfigError` naming it; uvicorn would print a traceback."""
    import errno
    import socket

    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        fix = f"choose another {port_option}"
        # a name that does not resolve comes as errno < 0 (getaddrinfo's EAI_* codes)
        if exc.errno == errno.EADDRNOTAVAIL or (exc.errno or 0) < 0:
            fix = f"{host_option} is not an address of this machine"
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port} ({reason}): {fix}") from exc
