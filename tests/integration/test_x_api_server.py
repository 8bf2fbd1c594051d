"""The X source (tweepy 4.17, real requests over TCP) against a local server that answers like
X API v2 recent search (tests/support/x_api.py), reached through ``NER_X_API_URL``.

The unit tests (tests/unit/test_sources.py) replace ``requests`` itself; here tweepy, requests
and urllib3 run unchanged, so real sockets, headers, status codes, rate-limit sleeps and
dropped connections are what the code sees.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import tweepy

from ner.errors import SourceAuthError, SourceError
from ner.settings import Settings, load_settings
from ner.sources import X_CHECKPOINT, XSource, fetch_x_to_storage, make_x_client
from ner.storage import LocalStorage
from tests.support.servers import PrefectService
from tests.support.x_api import (
    ESCAPED_POST,
    LONG_REVIEW,
    Fault,
    XApiServer,
    x_api_server,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "AAAAAAAAAAAAAAAAAAAAAlocal%2Fserver%3Dtoken9876543210"
KEYWORDS = ["makeup", "lip gloss"]


@pytest.fixture
def x_api() -> Iterator[XApiServer]:
    with x_api_server(TOKEN) as server:
        yield server


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store" / "dev")


def settings_for(server: XApiServer, tmp_path: Path, token: str = TOKEN) -> Settings:
    return load_settings(
        storage_uri=str(tmp_path / "store"), x_bearer_token=token, x_api_url=server.url
    )


def fetch(server: XApiServer, storage: LocalStorage, key: str, max_posts: int = 1000) -> Any:
    settings = settings_for(server, storage.root.parent.parent)
    return fetch_x_to_storage(settings, storage, key, KEYWORDS, max_posts)


def stored_ids(storage: LocalStorage) -> list[str]:
    """Every post id stored under posts/, in storage order (repeats kept)."""
    return [
        json.loads(line)["id"]
        for key in storage.list("posts")
        if key.endswith(".jsonl")
        for line in storage.iter_lines(key)
    ]


# --------------------------------------------------------------------------- paging
def test_pages_follow_next_token_and_the_next_run_resumes_from_since_id(
    x_api: XApiServer, storage: LocalStorage
) -> None:
    # Given 250 posts on the server, served 100 a page
    x_api.ids = list(range(1_000, 1_250))
    # When the fetch step runs with NER_X_API_URL pointing at it
    first = fetch(x_api, storage, "posts/run1.jsonl")
    # Then three pages were requested over HTTP, each with the token the last page gave
    assert [c.params.get("next_token") is None for c in x_api.calls] == [True, False, False]
    assert {c.authorization for c in x_api.calls} == {f"Bearer {TOKEN}"}
    assert x_api.calls[0].params["query"] == '(makeup OR "lip gloss") lang:en -is:retweet'
    assert x_api.calls[0].params["max_results"] == "100"
    assert x_api.calls[0].params["tweet.fields"] == "created_at,author_id,lang,note_tweet"
    # And every post was stored once, newest first, with the checkpoint at the newest id
    assert first["n_posts"] == 250
    assert stored_ids(storage) == [str(i) for i in range(1_249, 999, -1)]
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "1249"

    # When five posts arrive and the step runs again
    x_api.ids += list(range(1_250, 1_255))
    second = fetch(x_api, storage, "posts/run2.jsonl")
    # Then it asked only for posts newer than the checkpoint, and got exactly those
    assert x_api.calls[-1].params["since_id"] == "1249"
    assert second["n_posts"] == 5
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/run2.jsonl")] == [
        "1254",
        "1253",
        "1252",
        "1251",
        "1250",
    ]
    # And a run with nothing new stores nothing and keeps the checkpoint
    assert fetch(x_api, storage, "posts/run3.jsonl")["n_posts"] == 0
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "1254"


def test_the_default_client_host_is_not_contacted(x_api: XApiServer) -> None:
    # Given a client built with the local base URL, when it searches
    client = make_x_client(TOKEN, api_url=x_api.url + "/")
    x_api.ids = [7_001, 7_002]
    page: Any = client.search_recent_tweets("makeup", max_results=10)
    # Then the local server answered (the path and query were kept, only the host changed)
    assert [t["id"] for t in page["data"]] == ["7002", "7001"]
    assert len(x_api.calls) == 1 and x_api.calls[0].params["query"] == "makeup"


# --------------------------------------------------------------------------- 429
def test_rate_limit_is_waited_out_until_the_reset_time(
    x_api: XApiServer, storage: LocalStorage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 150 posts and a 429 on the second page whose reset is ~2 s ahead
    x_api.ids = list(range(3_000, 3_150))
    x_api.fail(2, Fault("rate_limit", reset_in=2.0))
    # When the fetch step runs (tweepy's wait_on_rate_limit is on)
    with caplog.at_level(logging.WARNING, logger="tweepy.client"):
        result = fetch(x_api, storage, "posts/rl.jsonl")
    # Then the same page was asked again, not before the announced reset, and the run
    # completed with every post once
    assert len(x_api.calls) == 3
    assert x_api.calls[2].params == x_api.calls[1].params
    assert "Rate limit exceeded" in caplog.text
    reset = x_api.calls[1].arrived + 2.0
    assert x_api.calls[2].arrived >= int(reset)
    assert result["n_posts"] == 150
    assert sorted(stored_ids(storage)) == [str(i) for i in range(3_000, 3_150)]


# --------------------------------------------------------------------------- 401
def test_a_rejected_token_is_a_clear_auth_error_that_never_shows_the_token(
    x_api: XApiServer, storage: LocalStorage, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Given a server that knows another token
    x_api.ids = [11, 12]
    wrong = "AAAAAAAAAAAAAAAAAAAAAwrong%2Ftoken%3Dvalue000000000000"
    settings = settings_for(x_api, tmp_path, token=wrong)
    # When the fetch step runs, with tweepy logging its requests at DEBUG
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(SourceAuthError, match="NER_X_BEARER_TOKEN") as info,
    ):
        fetch_x_to_storage(settings, storage, "posts/denied.jsonl", KEYWORDS, 10)
    # Then the server saw the token, but neither the error, its cause chain nor the logs
    # carry it, and nothing was stored
    assert x_api.calls[0].authorization == f"Bearer {wrong}"
    assert isinstance(info.value.__cause__, tweepy.Unauthorized)
    assert "401" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value.__cause__)
    assert "Bearer ***" in caplog.text and wrong not in caplog.text
    assert storage.list() == []


# --------------------------------------------------------------------------- bad pages
@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "page 2: the body is not JSON"),
        (b'{"data": {"id": "1", "text": "x"}, "meta": {}}', "page 2: 'data' is not a list"),
        (b'{"data": [{"id": "9", "text": "cut', "page 2: the body is not JSON"),
        (b"[1, 2, 3]", "malformed X API page 2"),
    ],
)
def test_a_malformed_page_fails_the_run_and_stores_nothing(
    x_api: XApiServer, storage: LocalStorage, body: bytes, match: str
) -> None:
    # Given a committed checkpoint and a malformed second page
    storage.write_json(X_CHECKPOINT, {"since_id": "99"})
    x_api.ids = list(range(100, 250))
    x_api.fail(2, Fault("body", body=body))
    # When the fetch step runs, then it fails naming the page
    with pytest.raises(SourceError, match=match):
        fetch(x_api, storage, "posts/bad.jsonl")
    # And neither posts nor a moved checkpoint were written
    assert storage.list("posts") == []
    assert storage.read_json(X_CHECKPOINT) == {"since_id": "99"}
    # And once the server is fixed, the next run gets every post once
    assert fetch(x_api, storage, "posts/good.jsonl")["n_posts"] == 150
    assert sorted(stored_ids(storage)) == [str(i) for i in range(100, 250)]


# --------------------------------------------------------------------------- crashes
@pytest.mark.parametrize(
    "fault",
    [Fault("drop"), Fault("status", status=500), Fault("status", status=503)],
    ids=["connection-dropped", "500", "503"],
)
def test_a_crash_mid_pagination_then_a_rerun_fetches_each_post_once(
    x_api: XApiServer, storage: LocalStorage, fault: Fault
) -> None:
    # Given 320 posts (four pages) and a server that fails on the third page
    x_api.ids = list(range(5_000, 5_320))
    x_api.fail(3, fault)
    # When the run fails there
    with pytest.raises(SourceError, match="X API recent search failed"):
        fetch(x_api, storage, "posts/crashed.jsonl")
    # Then nothing was stored and the checkpoint did not move
    assert storage.list() == []
    # And when new posts arrive and the step runs again, every post is stored exactly once
    x_api.ids += [5_320, 5_321]
    rerun = fetch(x_api, storage, "posts/rerun.jsonl")
    ids = stored_ids(storage)
    assert rerun["n_posts"] == 322
    assert len(ids) == len(set(ids))
    assert sorted(ids, key=int) == [str(i) for i in range(5_000, 5_322)]
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "5321"


def test_a_crash_after_partial_commits_resumes_the_window_without_gaps(
    x_api: XApiServer, storage: LocalStorage
) -> None:
    # Given a consumer that stores each page and commits it (the crash-safe XSource protocol)
    x_api.ids = list(range(8_000, 8_330))

    def consume(run: int) -> list[str]:
        source = XSource(make_x_client(TOKEN, api_url=x_api.url), storage)
        stored: list[str] = []
        batch: list[str] = []
        for number, post in enumerate(source.fetch(KEYWORDS, max_posts=1000), start=1):
            batch.append(post.id)
            if number % 100 == 0:
                storage.write_json(f"posts/{run}-{number}.json", batch)
                source.commit()
                stored, batch = stored + batch, []
        if batch:
            storage.write_json(f"posts/{run}-end.json", batch)
        source.commit()
        return stored + batch

    # When the first run dies (connection dropped) on the fourth page, after committing 300
    x_api.fail(4, Fault("drop"))
    with pytest.raises(SourceError):
        consume(1)
    committed = [i for key in storage.list("posts") for i in storage.read_json(key)]
    assert len(committed) == 300
    # And posts arrive before the rerun
    x_api.ids += [8_330, 8_331, 8_332]
    resumed = consume(2)
    new = consume(3)
    # Then the rerun finished the old window first (until_id), and the next run the new posts
    assert x_api.calls[4].params.get("until_id") == "8030"
    assert "since_id" not in x_api.calls[4].params
    assert sorted(resumed, key=int) == [str(i) for i in range(8_000, 8_030)]
    assert new == ["8332", "8331", "8330"]
    assert x_api.calls[-1].params["since_id"] == "8329"
    # And over the three runs every post was stored exactly once
    everything = committed + resumed + new
    assert sorted(everything, key=int) == [str(i) for i in range(8_000, 8_333)]
    assert len(everything) == len(set(everything))


# --------------------------------------------------------------------------- flow
if TYPE_CHECKING:
    from flows.apply_ner import ApplyResult, Delivered


def _delivered(result: ApplyResult) -> Delivered:
    assert result.delivered is not None
    return result.delivered


def _posts_key(result: ApplyResult) -> str:
    assert result.fetched.posts_key is not None
    return result.fetched.posts_key


ApplyX = Callable[..., "ApplyResult"]


@pytest.fixture
def apply_x(
    prefect_server: PrefectService,
    x_api: XApiServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> ApplyX:
    """Runs apply-ner with source x on the Prefect server, storage in ``tmp_path/flow-store``
    and the token in the environment (never a flow parameter)."""
    from flows.apply_ner import apply_ner
    from tests.support.flows import prefect_api

    monkeypatch.setenv("NER_X_BEARER_TOKEN", TOKEN)
    settings = {
        "storage_uri": str(tmp_path / "flow-store"),
        "x_api_url": x_api.url,
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }

    def run(**params: Any) -> ApplyResult:
        with prefect_api(prefect_server):
            return apply_ner(source="x", overrides=settings, **params)

    return run


def test_apply_ner_flow_reads_x_through_the_setting(
    x_api: XApiServer, apply_x: ApplyX, tmp_path: Path
) -> None:
    # Given 30 posts on the server
    x_api.ids = list(range(9_000, 9_030))
    # When apply-ner runs with source x, on a real Prefect server
    result = apply_x(keywords=["makeup"], max_posts=50)
    # Then the posts went all the way into Label Studio import tasks, once each
    assert result.n_posts == 30 and result.fetched.source == "x"
    assert result.delivered is not None and result.delivered.tasks_key is not None
    tasks = LocalStorage(tmp_path / "flow-store" / "dev").read_json(result.delivered.tasks_key)
    assert sorted(t["data"]["post_id"] for t in tasks) == [str(i) for i in range(9_000, 9_030)]
    assert x_api.calls[0].params["query"] == "(makeup) lang:en -is:retweet"


# --------------------------------------------------------------------------- text
ESCAPED_ID, LONG_ID = 9_101, 9_100


def test_apply_ner_flow_stores_and_predicts_x_posts_whole_and_unescaped(
    apply_x: ApplyX, x_api: XApiServer, tmp_path: Path
) -> None:
    import spacy

    from ner.models import add_gazetteer

    # Given two posts as their authors wrote them, which X sends escaped, the 353-character
    # review cut at an ellipsis with a t.co link (whole only in note_tweet)
    x_api.ids = [LONG_ID, ESCAPED_ID]
    x_api.texts = {ESCAPED_ID: ESCAPED_POST, LONG_ID: LONG_REVIEW}
    assert len(LONG_REVIEW) == 353
    # And a gazetteer pipeline on disk that knows the three brands
    nlp = spacy.blank("en")
    add_gazetteer(nlp, ["H&M", "Sephora", "Laneige"], exact_case=[])
    nlp.to_disk(tmp_path / "gazetteer")
    # When apply-ner runs with source x on a real Prefect server
    model = str(tmp_path / "gazetteer")
    result = apply_x(keywords=["sephora"], model=model, max_posts=10)
    # Then the server was asked for note_tweet and really sent the cut, escaped text
    assert "note_tweet" in x_api.calls[0].params["tweet.fields"].split(",")
    # And storage holds both posts whole and unescaped
    storage = LocalStorage(tmp_path / "flow-store" / "dev")
    posts = {p["id"]: p["text"] for p in map(json.loads, storage.iter_lines(_posts_key(result)))}
    assert posts == {str(ESCAPED_ID): ESCAPED_POST, str(LONG_ID): LONG_REVIEW}
    # And the predictions' spans point at the brands as written, Laneige at the very end
    spans = {
        (p["post_id"], s["start"], s["end"], s["text"])
        for p in map(json.loads, storage.iter_lines(_delivered(result).predicted.predictions_key))
        for s in p["spans"]
    }
    assert spans == {
        (str(ESCAPED_ID), 0, 3, "H&M"),
        (str(ESCAPED_ID), 6, 13, "Sephora"),
        (str(LONG_ID), 346, 353, "Laneige"),
    }
    # And annotators get the same text and offsets in the Label Studio tasks
    tasks = {t["data"]["post_id"]: t for t in storage.read_json(str(_delivered(result).tasks_key))}
    assert tasks[str(LONG_ID)]["data"]["text"] == LONG_REVIEW
    assert tasks[str(ESCAPED_ID)]["data"]["text"] == ESCAPED_POST
    marked = [
        r["value"]["text"] for t in tasks.values() for p in t["predictions"] for r in p["result"]
    ]
    assert sorted(marked) == ["H&M", "Laneige", "Sephora"]


def test_without_note_tweet_in_the_fields_the_server_cuts_like_x(x_api: XApiServer) -> None:
    # The fake's own behaviour, which the flow test relies on: asked without note_tweet,
    # the long post comes cut and escaped, as X sends it
    x_api.ids, x_api.texts = [LONG_ID], {LONG_ID: LONG_REVIEW}
    client = make_x_client(TOKEN, api_url=x_api.url)
    page: Any = client.search_recent_tweets("sephora", tweet_fields=["lang"])
    (sent,) = page["data"]
    assert "note_tweet" not in sent and "created_at" not in sent and sent["lang"] == "en"
    assert sent["text"].endswith(f"… https://t.co/{LONG_ID:010d}")
    assert "&amp; here is" in sent["text"] and "Laneige" not in sent["text"]
