"""A local HTTP server that answers like the X API v2 recent-search endpoint.

``GET /2/tweets/search/recent`` on 127.0.0.1, served by :class:`http.server.ThreadingHTTPServer`
on a thread of the test process. It keeps a list of tweet ids and answers the way X does:

* newest first; ``since_id`` and ``until_id`` are exclusive bounds;
* ``max_results`` must be 10..100 (else 400, as X answers);
* pages link with an opaque ``meta.next_token``; the last page has none;
* the bearer token is checked on every request (401 with X's problem JSON otherwise);
* every answer carries ``x-rate-limit-limit/-remaining/-reset`` headers;
* tweets are rendered as X renders them (:func:`render_tweet`): ``&``, ``<`` and ``>`` escaped in
  ``text``; a post over 280 characters has its ``text`` cut (an ellipsis and a t.co link) and
  its whole text in ``note_tweet.text`` only when ``tweet.fields`` asks for ``note_tweet``;
  ``created_at``, ``author_id`` and ``lang`` only when asked for too.

Faults are scripted by request number (:meth:`XApiServer.fail`): a 429 whose
``x-rate-limit-reset`` lies a few seconds ahead, a 500, a dropped connection (no answer at
all), or a malformed body. Every request is recorded (:attr:`XApiServer.calls`) with its
parameters, the Authorization header and the time it arrived.

Tweet objects copy the shape of ``tests/unit/fixtures/x_api/search_recent_page.json``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "x_api"
SEARCH_PATH = "/2/tweets/search/recent"
RATE_LIMIT = 450


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


#: Two posts as their authors wrote them (issue 11): X sends the first escaped, the second
#: (353 characters, the brand at its very end) cut at an ellipsis unless note_tweet is asked for.
ESCAPED_POST = "H&M & Sephora <3"
LONG_REVIEW = (
    "Three weeks into my winter skincare swap & here is my honest review: Glossier balm "
    "dotcom is still my everyday pick for dry lips <3 but it fades in an hour. The CeraVe "
    "cream kept my cheeks calm through the cold snap. The Fenty toner felt nice, not life "
    "changing. The one I reach for every night, the one I would rebuy today, is the lip "
    "mask from Laneige"
)

#: Posts longer than this come with a cut ``text`` (X counts weighted characters; this
#: server counts code points).
MAX_TEXT = 280
#: The optional tweet fields this server can send (id, text and edit history always go).
OPTIONAL_FIELDS = ("created_at", "author_id", "lang")


def escape_like_x(text: str) -> str:
    """X API v2 escapes ``&``, ``<`` and ``>`` in post text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_tweet(tweet_id: int, text: str, fields: set[str]) -> dict[str, Any]:
    """The tweet object X sends for a post written as ``text``, given the requested
    ``tweet.fields``; the other fields copy the recorded page's first tweet."""
    template = fixture("search_recent_page.json")["data"][0]
    rendered: dict[str, Any] = {
        "id": str(tweet_id),
        "edit_history_tweet_ids": [str(tweet_id)],
        "text": escape_like_x(text),
    }
    rendered.update({name: template[name] for name in OPTIONAL_FIELDS if name in fields})
    if len(text) > MAX_TEXT:
        link = f"https://t.co/{tweet_id % 10**10:010d}"
        rendered["text"] = escape_like_x(text[: MAX_TEXT - 30].rstrip()) + "… " + link
        if "note_tweet" in fields:
            rendered["note_tweet"] = {"text": escape_like_x(text), "entities": {}}
    return rendered


def tweet(tweet_id: int, text: str | None = None, fields: set[str] | None = None) -> dict[str, Any]:
    """A tweet shaped like the recorded page's first one, with its own id and text (every
    optional field unless ``fields`` narrows them)."""
    text = f"Rare Beauty blush again 😍 #{tweet_id}" if text is None else text
    return render_tweet(tweet_id, text, set(OPTIONAL_FIELDS) if fields is None else fields)


@dataclass(frozen=True)
class Call:
    """One request the server received."""

    number: int
    params: dict[str, str]
    authorization: str | None
    arrived: float  # time.time()


@dataclass
class Fault:
    """What to do instead of answering normally."""

    kind: str  # "rate_limit" | "status" | "drop" | "body"
    status: int = 200
    body: bytes = b""
    reset_in: float = 2.0


@dataclass
class XApiServer:
    """State of the fake endpoint; :func:`x_api_server` runs it."""

    token: str
    ids: list[int] = field(default_factory=list)
    #: Post text as its author wrote it, by id (others get a generated text).
    texts: dict[int, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: dict[int, Fault] = field(default_factory=dict)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- scripting ------------------------------------------------------------------------
    def fail(self, call: int, fault: Fault) -> None:
        """Answer the ``call``-th request (1-based, counted over the server's life) with
        ``fault``."""
        self.faults[call] = fault

    def fail_next(self, fault: Fault, after: int = 0) -> int:
        """Script ``fault`` for the request ``after + 1`` requests from now; returns its
        number."""
        number = len(self.calls) + after + 1
        self.fail(number, fault)
        return number

    @property
    def served_ids(self) -> list[str]:
        return [str(i) for i in self.ids]

    # -- answering --------------------------------------------------------------------------
    def answer(self, params: dict[str, str], authorization: str | None) -> tuple[Call, Any]:
        with self.lock:
            call = Call(len(self.calls) + 1, params, authorization, time.time())
            self.calls.append(call)
            fault = self.faults.get(call.number)
            ids = list(self.ids)
            texts = dict(self.texts)
        if authorization != f"Bearer {self.token}":
            return call, (401, fixture("unauthorized.json"), {})
        if fault is not None:
            return call, fault
        try:
            size = int(params.get("max_results", "10"))
        except ValueError:
            size = 0
        if not 10 <= size <= 100 or not params.get("query"):
            problem = {
                "errors": [{"parameters": {"max_results": [params.get("max_results")]}}],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": "https://api.twitter.com/2/problems/invalid-request",
            }
            return call, (400, problem, {})
        since = int(params.get("since_id", -1))
        until = int(params.get("until_id", 10**30))
        matching = sorted((i for i in ids if since < i < until), reverse=True)
        token = params.get("next_token")
        offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        chunk = matching[offset : offset + size]
        meta: dict[str, Any] = {"result_count": len(chunk)}
        if chunk:
            meta.update(newest_id=str(chunk[0]), oldest_id=str(chunk[-1]))
        if offset + size < len(matching):
            meta["next_token"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        body: dict[str, Any] = {"meta": meta}
        fields = set(params.get("tweet.fields", "").split(","))
        if chunk:
            body["data"] = [tweet(i, texts.get(i), fields) for i in chunk]
        return call, (200, body, {})


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads :attr:`XApiServer.calls` instead."""

    def do_GET(self) -> None:
        parsed = urlparse(self.path)
        if parsed.path != SEARCH_PATH:
            self._send(404, {"title": "Not Found Error", "status": 404}, {})
            return
        state = self.server.state
        _, outcome = state.answer(dict(parse_qsl(parsed.query)), self.headers.get("Authorization"))
        if isinstance(outcome, Fault):
            self._fault(outcome)
        else:
            self._send(*outcome)

    def _fault(self, fault: Fault) -> None:
        if fault.kind == "drop":  # the connection dies before any answer
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault.kind == "rate_limit":
            reset = int(time.time() + fault.reset_in) + 1
            headers = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
            self._send(429, fixture("too_many_requests.json"), headers)
            return
        if fault.kind == "status":
            self._send(fault.status, {"title": "Internal Error", "status": fault.status}, {})
            return
        self._raw(fault.status, fault.body, {})

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self._raw(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), headers)

    def _raw(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(payload)))
        limits = {
            "x-rate-limit-limit": str(RATE_LIMIT),
            "x-rate-limit-remaining": str(RATE_LIMIT - 1),
            "x-rate-limit-reset": str(int(time.time()) + 900),
        }
        for name, value in {**limits, **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: XApiServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def x_api_server(token: str, ids: list[int] | None = None) -> Iterator[XApiServer]:
    """Run the fake recent-search endpoint on 127.0.0.1 (a free port) while in the block."""
    state = XApiServer(token=token, ids=list(ids or []))
    server = _Server(state)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="x-api-server",
        daemon=True,
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
