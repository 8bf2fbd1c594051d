"""Connecting an ML backend (``apps.ml_backend``) to a Label Studio project through the API.

Label Studio's *Connect model* stores the backend's URL and Basic-auth credentials, calls its
``/setup``, and registers a webhook to ``<url>/webhook`` for the project's events, without
credentials (Label Studio 1.23). :func:`connect_ml_backend` does both steps the UI leaves to
the user: it connects the backend with the credentials, and gives that webhook the same
``Authorization: Basic …`` header, so a backend with ``NER_ML_BACKEND_TRAIN=true`` hears the
annotations it counts.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ner.errors import LabelStudioAuthError, LabelStudioError
from ner.labelstudio.client import API_FAILURES, LabelStudioProject, api_error

log = logging.getLogger(__name__)

#: What to check when Label Studio refuses to connect a backend (it calls ``/setup`` first).
UNREACHABLE_HINT = "start `python -m apps.ml_backend` where Label Studio's host reaches that URL"
#: What to check when the backend itself refused Label Studio's call (HTTP 401).
CREDENTIALS_HINT = (
    "the backend refused Label Studio's credentials: set NER_ML_BACKEND_USER and "
    "NER_ML_BACKEND_PASSWORD here to the values the backend was started with"
)
#: Added to the hint for a loopback or private address, which Label Studio refuses unless
#: told otherwise (its ``ML_BLOCK_LOCAL_IP`` setting, Label Studio 1.23).
LOCAL_ADDRESS_HINT = "; a loopback or private address needs ML_BLOCK_LOCAL_IP=false there"
#: Longest refusal message: the command line shows one line of up to 400 characters.
REFUSAL_CHARS = 400
#: The path Label Studio posts project events to, under the backend's URL.
WEBHOOK_PATH = "/webhook"


@dataclass(frozen=True, slots=True)
class ConnectedBackend:
    """The project's ML backend after :func:`connect_ml_backend`. ``created``: it was not
    connected before; ``webhook_id``: its events webhook (None when Label Studio made none);
    ``state``: Label Studio's, as it words it (``Connected``, ``Error``, …; its code, ``CO``,
    from a server that does not word it)."""

    backend_id: int
    url: str
    created: bool
    webhook_id: int | None
    state: str | None
    #: Label Studio's last error with this backend, if any
    error: str | None = None
    #: the project's other ML backends, ``"<id> at <url>"`` (one that moved stays connected)
    others: tuple[str, ...] = ()


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    """``{"Authorization": "Basic <base64 user:password>"}`` (RFC 7617)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def connect_ml_backend(
    project: LabelStudioProject,
    url: str,
    *,
    user: str | None = None,
    password: str | None = None,
    title: str = "brandloop",
) -> ConnectedBackend:
    """Connect the ML backend at ``url`` to ``project``; idempotent.

    A backend of the project with that URL is updated (credentials, title), never added
    twice; backends at other URLs are left as they are and named in ``others``. With
    ``user`` and ``password`` Label Studio calls it with Basic auth, and the events webhook
    it registered for the backend gets the same header. Raises
    :class:`~ner.errors.LabelStudioError` when Label Studio refuses (it calls the backend's
    ``/setup`` first: a backend it cannot reach, or a loopback address without
    ``ML_BLOCK_LOCAL_IP=false`` on Label Studio's side, is refused with its reason); the
    password never appears in the message.
    """
    url = url.rstrip("/")
    auth: dict[str, Any] = (
        {"auth_method": "BASIC_AUTH", "basic_auth_user": user, "basic_auth_pass": password}
        if user and password
        else {"auth_method": "NONE"}
    )
    client, pid = project.client, project.project_id
    try:
        connected = client.ml.list(project=pid)
        existing = [b for b in connected if (b.url or "").rstrip("/") == url]
        others = tuple(f"{b.id} at {b.url}" for b in connected if b not in existing)
        if existing:
            backend = client.ml.update(
                int(existing[0].id or 0), project=pid, url=url, title=title, **auth
            )
        else:
            backend = client.ml.create(
                project=pid, url=url, is_interactive=False, title=title, **auth
            )
    except API_FAILURES as exc:
        error = api_error(f"connection of ML backend {url}", exc, password)  # password masked
        if isinstance(error, LabelStudioAuthError):
            raise error from exc
        said = str(error).partition(" failed: ")[2]
        raise LabelStudioError(refusal_message(url, said)) from exc
    headers = basic_auth_header(user, password) if user and password else {}
    hook = _authorise_webhook(project, url, headers)
    state = backend.readable_state or (str(backend.state) if backend.state is not None else None)
    log.info("ML backend %s connected to project %s (state %s)", url, pid, state)
    return ConnectedBackend(
        int(backend.id or 0),
        url,
        not existing,
        hook,
        state,
        backend.error_message or None,
        others,
    )


def refusal_message(url: str, said: str) -> str:
    """Label Studio's refusal to connect ``url``: its reason ``said``, cut with "…" to keep
    the message within :data:`REFUSAL_CHARS`, and what to check: the credentials when the
    backend answered 401, else where it runs, with the ``ML_BLOCK_LOCAL_IP`` advice only
    for a loopback or private host (``localhost`` included)."""
    hint = UNREACHABLE_HINT + (LOCAL_ADDRESS_HINT if is_local_address(url) else "")
    if "401" in said and "Unauthorized" in said:
        hint = CREDENTIALS_HINT
    frame = f"Label Studio did not connect the ML backend {url} (): {hint}"
    room = max(REFUSAL_CHARS - len(frame), 40)
    said = said if len(said) <= room else f"{said[: room - 1]}…"
    return f"Label Studio did not connect the ML backend {url} ({said}): {hint}"


def is_local_address(url: str) -> bool:
    """Whether ``url``'s host is ``localhost`` or a loopback, private or link-local IP
    address; a host name other than ``localhost`` is not resolved (False)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def _authorise_webhook(
    project: LabelStudioProject, url: str, headers: dict[str, str]
) -> int | None:
    """Give the webhook Label Studio registered for the backend ``headers``; its id, or None
    when the project has no webhook to ``<url>/webhook``."""
    target = f"{url}{WEBHOOK_PATH}"
    client, pid = project.client, project.project_id
    try:
        hooks = [h for h in client.webhooks.list(project=str(pid)) if h.url == target]
        if not hooks:
            return None
        hook = min(hooks, key=lambda h: h.id or 0)
        if dict(hook.headers or {}) != headers:
            client.webhooks.update(int(hook.id or 0), headers=headers)
    except API_FAILURES as exc:
        raise api_error(f"update of the webhook to {target}", exc) from exc
    return int(hook.id or 0)
