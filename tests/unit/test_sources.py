"""Sources: JSONL parsing and the X API v2 recent-search client (``responses`` mocks
shaped like real API payloads; the real-HTTP-server tests live in tests/integration)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import responses

from ner.errors import ConfigError, SourceAuthError, SourceError
from ner.sources import (
    XSource,
    build_query,
    fetch_jsonl_to_storage,
    iter_jsonl,
    make_x_client,
)
from ner.storage import LocalStorage
from ner.types import Post, Rejected

SEARCH = re.compile(r"https://api\.twitter\.com/2/tweets/search/recent.*")
TOKEN = "AAAA-test-bearer-token-value"


def tweet(tweet_id: int, text: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(tweet_id),
        "edit_history_tweet_ids": [str(tweet_id)],
        "text": text if text is not None else f"loving my new Glossier balm #{tweet_id} 💄",
        "created_at": "2026-11-20T10:00:00.000Z",
        "author_id": "4242",
        "lang": "en",
    }
    return data


def page(ids: list[int], next_token: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"result_count": len(ids)}
    if ids:
        meta.update(newest_id=str(max(ids)), oldest_id=str(min(ids)))
    if next_token:
        meta["next_token"] = next_token
    body: dict[str, Any] = {"meta": meta}
    if ids:
        body["data"] = [tweet(i) for i in ids]
    return body


def params(call: Any) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlparse

    return dict(parse_qsl(urlparse(call.request.url).query))


# --------------------------------------------------------------------------- JSONL
def test_jsonl_keeps_good_records_and_names_bad_lines() -> None:
    lines = [
        json.dumps({"id": "1", "text": "Fenty 💄 gloss"}),
        "{not json",
        json.dumps({"text": "no id"}),
        json.dumps({"id": "3", "text": "   "}),
        "",
        json.dumps({"id": "1", "text": "dup"}),
        json.dumps({"id": "4", "text": 5}),
        json.dumps([1, 2]),
        json.dumps({"id": 5, "text": "numeric id is fine"}),
    ]
    out = list(iter_jsonl(lines))
    posts = [item for _, item in out if isinstance(item, Post)]
    rejected = {n: item.reason for n, item in out if isinstance(item, Rejected)}
    assert [p.id for p in posts] == ["1", "5"]
    assert posts[0].text == "Fenty 💄 gloss"
    assert rejected[2].startswith("invalid JSON")
    assert rejected[3] == "missing 'id'"
    assert rejected[4] == "empty text"
    assert rejected[6] == "duplicate post id"
    assert "non-string 'text'" in rejected[7]
    assert rejected[8] == "not a JSON object"


def test_jsonl_fetch_walks_a_file_in_batches_without_repeats_or_gaps(tmp_path: Path) -> None:
    # Given a file of 25 posts with one broken line in the middle
    src = tmp_path / "posts.jsonl"
    rows = [json.dumps({"id": str(i), "text": f"post {i}"}) for i in range(25)]
    rows.insert(12, "{broken")
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    storage = LocalStorage(tmp_path / "store")
    # When it is fetched 10 posts at a time
    fetched: list[str] = []
    results = []
    for run in range(4):
        result = fetch_jsonl_to_storage(storage, str(src), f"posts/{run}.jsonl", 10)
        results.append(result)
        fetched += [json.loads(x)["id"] for x in storage.iter_lines(f"posts/{run}.jsonl")]
    # Then every post arrives exactly once, in order, and the bad line is reported once
    assert fetched == [str(i) for i in range(25)]
    assert [r["n_posts"] for r in results] == [10, 10, 5, 0]
    assert sum(r["n_rejected"] for r in results) == 1
    assert storage.read_json("posts/1.rejected.json")[0].startswith("line 13")


def test_jsonl_fetch_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="neither a local file nor a storage key"):
        fetch_jsonl_to_storage(LocalStorage(tmp_path), "nope.jsonl", "posts/x.jsonl", 5)


# --------------------------------------------------------------------------- query
def test_query_from_keywords() -> None:
    assert (
        build_query(["makeup", "lip gloss", "#beauty"])
        == '(makeup OR "lip gloss" OR #beauty) lang:en -is:retweet'
    )
    with pytest.raises(ConfigError, match="NER_KEYWORDS"):
        build_query(["  "])
    with pytest.raises(ConfigError, match="512"):
        build_query([f"keyword{i}" for i in range(100)])


# --------------------------------------------------------------------------- X API
@responses.activate
def test_pagination_checkpoint_and_resume(tmp_path: Path) -> None:
    # Given two pages linked by next_token
    responses.add(responses.GET, SEARCH, json=page([105, 104, 103], next_token="t2"))
    responses.add(responses.GET, SEARCH, json=page([102, 101]))
    storage = LocalStorage(tmp_path)
    source = XSource(make_x_client(TOKEN), storage)
    # When we fetch and commit
    posts = list(source.fetch(["makeup"], max_posts=100))
    source.commit()
    # Then both pages were read, the token followed, and since_id moved to the newest
    assert [p.id for p in posts] == ["105", "104", "103", "102", "101"]
    assert params(responses.calls[1])["next_token"] == "t2"
    assert "since_id" not in params(responses.calls[0])
    assert storage.read_json("checkpoints/x_since_id.json")["since_id"] == "105"
    assert posts[0].source == "x" and posts[0].query and "makeup" in posts[0].query
    # And the next run asks only for newer posts
    responses.add(responses.GET, SEARCH, json=page([107, 106]))
    source2 = XSource(make_x_client(TOKEN), storage)
    assert [p.id for p in source2.fetch(["makeup"], max_posts=100)] == ["107", "106"]
    assert params(responses.calls[2])["since_id"] == "105"


@responses.activate
def test_budget_stop_keeps_a_window_so_nothing_is_missed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_json("checkpoints/x_since_id.json", {"since_id": "100"})
    # Given 4 new posts but a budget of 2
    responses.add(responses.GET, SEARCH, json=page([104, 103], next_token="n"))
    source = XSource(make_x_client(TOKEN), storage, page_size=10)
    first = [p.id for p in source.fetch(["makeup"], max_posts=2)]
    source.commit()
    # When the next run continues the window, then a third run starts a new one
    responses.add(responses.GET, SEARCH, json=page([102, 101]))
    second_source = XSource(make_x_client(TOKEN), storage)
    second = [p.id for p in second_source.fetch(["makeup"], max_posts=10)]
    second_source.commit()
    responses.add(responses.GET, SEARCH, json=page([]))
    third_source = XSource(make_x_client(TOKEN), storage)
    assert list(third_source.fetch(["makeup"], max_posts=10)) == []
    # Then the older half came in the second run, bounded by until_id and since_id
    assert first == ["104", "103"] and second == ["102", "101"]
    assert params(responses.calls[1])["until_id"] == "103"
    assert params(responses.calls[1])["since_id"] == "100"
    assert params(responses.calls[2])["since_id"] == "104"


@responses.activate
def test_crash_before_commit_refetches_the_same_posts(tmp_path: Path) -> None:
    # Given a run whose second page fails
    storage = LocalStorage(tmp_path)
    responses.add(responses.GET, SEARCH, json=page([203, 202], next_token="t"))
    responses.add(responses.GET, SEARCH, body="upstream exploded", status=500)
    source = XSource(make_x_client(TOKEN), storage)
    got: list[str] = []
    with pytest.raises(SourceError):
        for post in source.fetch(["makeup"], max_posts=100):
            got.append(post.id)
    assert got == ["203", "202"]
    assert not storage.exists("checkpoints/x_since_id.json")
    # When the run is repeated
    responses.add(responses.GET, SEARCH, json=page([203, 202], next_token="t"))
    responses.add(responses.GET, SEARCH, json=page([201]))
    again = XSource(make_x_client(TOKEN), storage)
    ids = [p.id for p in again.fetch(["makeup"], max_posts=100)]
    again.commit()
    # Then all posts arrive, each once
    assert ids == ["203", "202", "201"]


@responses.activate
def test_unauthorized_is_a_clear_error_without_the_token(tmp_path: Path) -> None:
    responses.add(
        responses.GET,
        SEARCH,
        status=401,
        json={
            "title": "Unauthorized",
            "type": "about:blank",
            "status": 401,
            "detail": "Unauthorized",
        },
    )
    source = XSource(make_x_client(TOKEN), LocalStorage(tmp_path))
    with pytest.raises(SourceAuthError, match="NER_X_BEARER_TOKEN") as info:
        list(source.fetch(["makeup"], max_posts=10))
    assert TOKEN not in str(info.value)


@responses.activate
def test_rate_limit_is_waited_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a 429 whose reset is 30 s away, then a good page
    import time as time_module

    slept: list[float] = []
    monkeypatch.setattr(time_module, "sleep", lambda s: slept.append(s))
    reset = int(time_module.time()) + 30
    responses.add(
        responses.GET,
        SEARCH,
        status=429,
        json={"title": "Too Many Requests"},
        headers={"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"},
    )
    responses.add(responses.GET, SEARCH, json=page([301]))
    source = XSource(make_x_client(TOKEN), LocalStorage(tmp_path))
    # When fetching with wait_on_rate_limit
    ids = [p.id for p in source.fetch(["makeup"], max_posts=10)]
    # Then the client slept until the reset and the retry succeeded
    assert ids == ["301"]
    assert slept and 20 <= max(slept) <= 32


@responses.activate
def test_malformed_tweets_are_skipped_and_named(tmp_path: Path) -> None:
    body = page([403, 402])
    body["data"].insert(1, {"id": "notanumber", "text": "x"})
    body["data"].append({"id": "401", "edit_history_tweet_ids": ["401"]})
    body["data"].append({"id": "400", "text": ""})
    responses.add(responses.GET, SEARCH, json=body)
    source = XSource(make_x_client(TOKEN), LocalStorage(tmp_path))
    ids = [p.id for p in source.fetch(["makeup"], max_posts=10)]
    assert ids == ["403", "402"]
    reasons = {r.record_id: r.reason for r in source.rejected}
    assert reasons == {
        "notanumber": "missing or non-numeric id",
        "401": "missing or non-string 'text'",
        "400": "empty text",
    }


@responses.activate
def test_malformed_page_is_a_source_error(tmp_path: Path) -> None:
    responses.add(responses.GET, SEARCH, json={"data": {"id": "1"}, "meta": {}})
    source = XSource(make_x_client(TOKEN), LocalStorage(tmp_path))
    with pytest.raises(SourceError, match="'data' is not a list"):
        list(source.fetch(["makeup"], max_posts=10))
    responses.replace(responses.GET, SEARCH, body="<html>gateway</html>", status=200)
    with pytest.raises(SourceError):
        list(XSource(make_x_client(TOKEN), LocalStorage(tmp_path)).fetch(["m"], max_posts=1))
