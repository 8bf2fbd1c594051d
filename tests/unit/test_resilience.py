"""Retry policy of the flows' tasks, the X base-URL setting, unfinished apply batches.

Against real servers: tests/integration/test_reliability.py and test_x_api_server.py.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import requests
from prefect.states import Failed

from flows.apply_ner import predict_posts, unfinished_batches
from flows.context import RunContext, is_transient
from flows.train_ner import log_challenger, pull_annotations, train_challenger
from ner.errors import (
    ConfigError,
    DataError,
    InputNotFoundError,
    LabelStudioAuthError,
    LabelStudioError,
    ModelError,
    ModelNotFoundError,
    ObjectNotFoundError,
    PromotionError,
    RegistryError,
    SourceAuthError,
    SourceError,
    StorageError,
    StorageKeyError,
)
from ner.settings import load_settings
from ner.sources import TWEEPY_HOST, RebasedSession, make_x_client


def test_retry_policy_comes_from_the_run_context(clean_env: None, tmp_path: Path) -> None:
    # Given a run with short delays and two retries
    store = {"storage_uri": str(tmp_path), "mlflow_tracking_uri": f"sqlite:///{tmp_path}/m.db"}
    settings = load_settings(io_retries=2, io_retry_delay_s=0.25, **store)
    ctx = RunContext.open(settings)
    # When a task is called with the run's context
    pull = pull_annotations.for_call((ctx, "storage", None, "stamp"), {})
    # Then it retries twice, after 0.25 s then 0.5 s, with jitter, transient errors only
    assert pull.retries == 2
    assert pull.retry_delay_seconds == [0.25, 0.5]
    assert pull.retry_jitter_factor == 0.5
    assert pull.retry_condition_fn is is_transient
    # And a task with its own cap keeps it (training retries at most once)
    assert train_challenger.for_call((ctx,), {}).retries == 1
    no_retries = RunContext.open(load_settings(io_retries=0, **store))
    assert train_challenger.for_call((), {"ctx": no_retries}).retries == 0
    # And the predict step, whichever executor it uses, follows them too
    assert predict_posts.for_call((ctx, "gazetteer", "posts/a.jsonl", "s1"), {}).retries == 2
    # And without a context the decorator's defaults hold (3 retries, 2/4/8 s)
    assert (log_challenger.retries, log_challenger.retry_delay_seconds) == (3, [2, 4, 8])


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (StorageError("bucket down"), True),
        (RegistryError("MLflow down"), True),
        (LabelStudioError("Label Studio down"), True),
        (SourceError("X answered 503"), True),
        (OSError("connection reset"), True),
        (ModelError("MLflow answered 503"), True),
        (DataError("post-1", "unreadable"), False),
        (InputNotFoundError("posts.jsonl is neither a file nor a key"), False),
        (ModelNotFoundError("models:/nope@champion does not exist"), False),
        # a stored file moved away by hand (a trial's gold set file, retried 3 times)
        (ObjectNotFoundError("goldsets/g.annotations.jsonl does not exist"), False),
        # a key that can name nothing (a trial's --export-key "" was retried 3 times)
        (StorageKeyError("invalid storage key ''"), False),
        (ConfigError("NER_X is not set"), False),
        (PromotionError("never evaluated"), False),
        (SourceAuthError("401"), False),
        (LabelStudioAuthError("Label Studio refused the key"), False),
        # a bug fails the same way every time (a trial saw a TypeError retried 3 times)
        (TypeError("list indices must be integers or slices, not str"), False),
        (KeyError("hash"), False),
        (AttributeError("'NoneType' object has no attribute 'hash'"), False),
        (ConnectionError("reset by peer"), True),
        # a read-only storage folder (a trial's was retried 3 times over 18 s), permissions
        (OSError(errno.EROFS, "Read-only file system"), False),
        (PermissionError(errno.EACCES, "Permission denied"), False),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), False),
        (OSError(errno.ECONNRESET, "Connection reset by peer"), True),
        (OSError(errno.EIO, "Input/output error"), True),
    ],
)
def test_only_transient_errors_are_retried(error: Exception, retried: bool) -> None:
    assert is_transient(None, None, Failed(data=error)) is retried


def test_the_error_line_of_a_read_only_folder_says_it_was_not_retried() -> None:
    from apps.cli import describe

    line = describe(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/storage/dev/posts"))
    assert line == (
        "OSError: [Errno 30] Read-only file system: '/mnt/ro/storage/dev/posts'; not retried: "
        "another attempt fails the same way; check that path (for storage, NER_STORAGE_URI: "
        "brandloop doctor checks that it is writable)"
    )
    assert describe(OSError(errno.EIO, "Input/output error")) == (
        "OSError: [Errno 5] Input/output error"
    )


def test_a_missing_stored_object_is_a_permanent_error(tmp_path: Path) -> None:
    from ner.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    with pytest.raises(ObjectNotFoundError, match=r"/gone.json does not exist"):
        storage.read_bytes("gone.json")
    with pytest.raises(ObjectNotFoundError, match=r"/gone.jsonl does not exist"):
        list(storage.iter_lines("gone.jsonl"))


def test_x_api_url_setting_is_validated_and_normalised(clean_env: None) -> None:
    assert load_settings().x_api_url == "https://api.x.com"
    assert load_settings(x_api_url=" http://127.0.0.1:8089/ ").x_api_url == "http://127.0.0.1:8089"
    with pytest.raises(ConfigError, match=r"x_api_url='api\.x\.com': must be an http"):
        load_settings(x_api_url="api.x.com")
    with pytest.raises(ConfigError, match=r"x_api_url='https://api\.x\.com/\?a=1': must be"):
        load_settings(x_api_url="https://api.x.com/?a=1")


def test_the_client_session_rewrites_only_tweepys_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client pointed at another base URL, and requests that record their URL
    seen: list[str] = []

    def record(self: requests.Session, method: str, url: str, *a: Any, **k: Any) -> Any:
        seen.append(url)
        return "response"

    monkeypatch.setattr(requests.Session, "request", record)
    client = make_x_client("token", api_url="http://127.0.0.1:9/x-proxy/")
    assert isinstance(client.session, RebasedSession)
    # When tweepy's URLs and another URL go through its session
    client.session.request("GET", f"{TWEEPY_HOST}/2/tweets/search/recent?query=a")
    client.session.request("GET", "https://example.invalid/other")
    # Then only tweepy's host was replaced; path and query are kept
    assert seen == [
        "http://127.0.0.1:9/x-proxy/2/tweets/search/recent?query=a",
        "https://example.invalid/other",
    ]
    # And tweepy's own host needs no rewriting
    assert not isinstance(make_x_client("token", api_url=TWEEPY_HOST).session, RebasedSession)
    assert not isinstance(make_x_client("token").session, RebasedSession)


def test_unfinished_batches_are_posts_without_tasks_or_receipt(
    tmp_path: Path, clean_env: None
) -> None:
    # Given batches in every state
    store = f"sqlite:///{tmp_path}/m.db"
    settings = load_settings(storage_uri=str(tmp_path), mlflow_tracking_uri=store)
    root = tmp_path / "dev"
    for key, text in {
        "posts/20261101-a.jsonl": "{}",  # finished into an import file
        "tasks/20261101-a.json": "[]",
        "posts/20261102-b.jsonl": "{}",  # finished through the API
        "tasks/20261102-b.imported.json": "{}",
        "posts/20261103-c.jsonl": "{}",  # fetched, never delivered
        "posts/20261103-c.rejected.json": "[]",
        "posts/20261104-d.jsonl": "{}",  # also pending
        "posts/inbox/other.jsonl": "{}",  # not a batch
    }.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(text)
    # When the unfinished ones are listed, then they come oldest first
    assert unfinished_batches.fn(RunContext.open(settings)) == [
        "posts/20261103-c.jsonl",
        "posts/20261104-d.jsonl",
    ]


def test_a_request_prefect_s_api_did_not_answer_is_named_as_such() -> None:
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from apps.cli import describe

    # Given a request refused by a port nothing listens on (a trial's Prefect server stopped
    # during train, which ended on a bare "ConnectError: [Errno 111] Connection refused")
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.post("http://127.0.0.1:1/api/artifacts/", json={})
    # Then the line names the address, and when it is Prefect's API, what that means
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        line = describe(refused.value)
    assert line.startswith("ConnectError: ")
    assert line.endswith(
        "; Prefect's API at http://127.0.0.1:1/api did not answer "
        "(http://127.0.0.1:1/api/artifacts/): is its server running? A run that lost it keeps "
        "the steps it finished (MLflow, storage: brandloop status), not its end state in Prefect"
    )
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:2/api"}):
        other = describe(refused.value)
    assert other.endswith("; request to http://127.0.0.1:1/api/artifacts/")


def test_unsent_events_are_said_once_in_one_line() -> None:
    import logging

    from apps.cli import UNSENT, OneLineForUnsentEvents

    # Given Prefect's service logging each event it could not send, whole, with a traceback
    def record(n: int) -> logging.LogRecord:
        try:
            raise ConnectionError("refused")
        except ConnectionError as exc:
            info = (type(exc), exc, exc.__traceback__)
        args = ("EventsWorker", f"Event(... {n} ...)")
        return logging.LogRecord("prefect._internal.concurrency", 40, "", 0, UNSENT, args, info)

    shown = OneLineForUnsentEvents()
    first, second = record(1), record(2)
    # Then the first is one line without its traceback, the next is left out, others pass
    assert shown.filter(first) and not shown.filter(second)
    assert first.getMessage() == (
        "EventsWorker could not send this run's events to Prefect's API (no more are shown)"
    )
    assert first.exc_info is None
    other = logging.LogRecord("x", logging.ERROR, "", 0, "something else", (), None)
    assert shown.filter(other)


def test_a_request_prefect_s_api_did_not_answer_is_not_retried_by_the_task() -> None:
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Given a request its client sent to Prefect's API in vain (it retries those itself; a
    # trial's publish step was retried 3 times over minutes after its server stopped)
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.post("http://127.0.0.1:1/api/artifacts/", json={})
    # Then the task does not retry it; a request to another service is retried
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        assert not is_transient(None, None, Failed(data=refused.value))
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:2/api"}):
        assert is_transient(None, None, Failed(data=refused.value))


def test_the_events_client_s_unreachable_warning_is_said_once() -> None:
    import logging

    from apps.cli import OnceForUnreachableEvents

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("prefect.events.clients", 30, "", 0, msg, ("ws://x",), None)

    once = OnceForUnreachableEvents()
    assert once.filter(record("Unable to connect to %r. Please check your network settings"))
    assert not once.filter(record("Unable to connect to %r. Please check your network settings"))
    assert once.filter(record("Connected to %r"))
