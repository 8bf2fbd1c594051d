"""Sources: JSONL parsing and the X API v2 recent-search client.

X is replaced by ``responses``: tweepy's requests to https://api.twitter.com (or to
NER_X_API_URL, https://api.x.com by default) never leave the process. ``FakeRecentSearch``
answers like recent search (newest first, ``since_id`` and ``until_id`` exclusive,
``next_token`` paging), so resume tests check what the code asked for, not a script of
canned pages. Payload shapes: tests/unit/fixtures/x_api/. The same client against a real
local HTTP server: tests/integration/test_x_api_server.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

import pytest
import requests
import responses
import tweepy

from ner import layout
from ner.errors import ConfigError, InputNotFoundError, SourceAuthError, SourceError
from ner.settings import load_settings
from ner.sources import (
    X_CHECKPOINT,
    XSource,
    build_query,
    fetch_jsonl_to_storage,
    fetch_x_to_storage,
    iter_jsonl,
    jsonl_checkpoint_key,
    jsonl_lines,
    make_x_client,
    unescape_x_text,
    x_post_text,
)
from ner.storage import LocalStorage
from ner.types import Post, Rejected
from tests.support.x_api import LONG_REVIEW

SEARCH = re.compile(r"https://api\.(twitter|x)\.com/2/tweets/search/recent.*")
TOKEN = "AAAAAAAAAAAAAAAAAAAAAtest%2Fbearer%3Dtoken0123456789"
FIXTURES = Path(__file__).parent / "fixtures" / "x_api"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def tweet(tweet_id: int, text: str | None = None) -> dict[str, Any]:
    """A tweet object shaped like the ones in search_recent_page.json."""
    template = dict(fixture("search_recent_page.json")["data"][0])
    template.update(
        id=str(tweet_id),
        edit_history_tweet_ids=[str(tweet_id)],
        text=text if text is not None else f"Glossier balm again 💄 #{tweet_id}",
    )
    return template


def page(tweets: list[dict[str, Any]], next_token: str | None = None) -> dict[str, Any]:
    """A recent-search page: ``data`` (absent when empty) and ``meta``."""
    meta: dict[str, Any] = {"result_count": len(tweets)}
    ids = [int(t["id"]) for t in tweets if str(t.get("id", "")).isdigit()]
    if ids:
        meta.update(newest_id=str(max(ids)), oldest_id=str(min(ids)))
    if next_token:
        meta["next_token"] = next_token
    return {"data": tweets, "meta": meta} if tweets else {"meta": meta}


def params_of(request: Any) -> dict[str, str]:
    return dict(parse_qsl(urlparse(request.url).query))


class FakeRecentSearch:
    """A responses callback that answers like GET /2/tweets/search/recent."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = list(ids)
        self.calls: list[dict[str, str]] = []
        self.failures: dict[int, tuple[int, dict[str, str], str]] = {}

    def fail(self, call: int, status: int = 503, body: str = '{"title": "Unavailable"}') -> None:
        """Make the ``call``-th request (1-based) fail."""
        self.failures[call] = (status, {"content-type": "application/json"}, body)

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        params = params_of(request)
        self.calls.append(params)
        if len(self.calls) in self.failures:
            return self.failures[len(self.calls)]
        since = int(params.get("since_id", -1))
        until = int(params.get("until_id", 10**30))
        matching = sorted((i for i in self.ids if since < i < until), reverse=True)
        size = int(params["max_results"])
        offset = int(params.get("next_token", "t0")[1:])
        chunk = matching[offset : offset + size]
        more = f"t{offset + size}" if offset + size < len(matching) else None
        return (
            200,
            {"content-type": "application/json"},
            json.dumps(page([tweet(i) for i in chunk], more)),
        )


@pytest.fixture
def fake_x() -> Iterator[FakeRecentSearch]:
    fake = FakeRecentSearch([])
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, SEARCH, callback=fake)
        yield fake


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def x_source(storage: LocalStorage, **kwargs: Any) -> XSource:
    return XSource(make_x_client(TOKEN, **kwargs), storage)


def ids_of(posts: list[Post]) -> list[str]:
    return [p.id for p in posts]


# --------------------------------------------------------------------------- JSONL
def test_jsonl_keeps_good_records_and_reports_bad_lines_by_number() -> None:
    # Given a file with one good post per kind of trouble around it
    lines = [
        "\ufeff" + json.dumps({"id": "1", "text": "Fenty 💄 gloss 👩🏽‍🎤"}, ensure_ascii=False),
        "{not json",
        json.dumps({"text": "no id"}),
        json.dumps({"id": "3", "text": "   "}),
        "",
        json.dumps({"id": "1", "text": "dup"}),
        json.dumps({"id": "4", "text": 5}),
        json.dumps([1, 2]),
        json.dumps({"id": 5, "text": "numeric id is fine"}),
        json.dumps({"id": True, "text": "a boolean is no id"}),
        '{"id": "6", "text": "half an emoji \\ud83d"}',
        json.dumps({"id": 5, "text": "numeric id is fine"}),
        json.dumps({"id": " ", "text": "a blank id is no id"}),
        "7",
        json.dumps({"id": " 8 ", "text": "an id forget could not name (trial AX)"}),
        json.dumps({"id": "9", "text": "Dior\u0000 no PostgreSQL stores"}),
        json.dumps({"id": "nul\u0000id", "text": "an id a terminal cannot show"}),
        # ids nobody could type to brandloop forget (trial BA)
        json.dumps({"id": "10\u000103", "text": "a control character inside"}),
        json.dumps({"id": "a\tb", "text": "a tab"}),
        json.dumps({"id": "12\u200b34", "text": "a zero-width space"}),
        json.dumps({"id": "12\u202834", "text": "a line separator"}),
        json.dumps({"id": "two words", "text": "a plain space inside is kept"}),
    ]
    # When it is parsed
    out = list(iter_jsonl(lines, query="file"))
    # Then the good posts are kept, emoji intact, and every bad line is named with its reason
    posts = [item for _, item in out if isinstance(item, Post)]
    rejected = {n: item for n, item in out if isinstance(item, Rejected)}
    assert ids_of(posts) == ["1", "5", "two words"]
    assert posts[0].text == "Fenty 💄 gloss 👩🏽‍🎤"
    assert posts[0].source == "jsonl" and posts[0].query == "file"
    assert sorted(rejected) == [2, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
    # (its control characters escaped: a trial's raw NUL made grep read the log as binary)
    assert str(rejected[17]).startswith("line 17 (nul\\x00id): 'id' holds a NUL")
    # (a zero-width space too: a trial's was printed raw, out of sight)
    assert str(rejected[20]).startswith("line 20 (12\\u200b34): ")
    # (while the report keeps the id itself, which JSON escapes: what jq users want)
    assert rejected[17].entry()["post_id"] == "nul\x00id"
    assert [rejected[n].reason for n in (18, 19, 20, 21)] == [
        f"'id' {bad!r} holds an invisible or control character (U+{code}) as character {at}: "
        "remove it (ids are matched exactly, so nobody could type this one to brandloop forget)"
        for bad, code, at in (
            ("10\x0103", "0001", 3),
            ("a\tb", "0009", 2),
            ("12\u200b34", "200B", 3),
            ("12\u202834", "2028", 3),
        )
    ]
    assert rejected[16].reason == (
        "'text' holds a NUL character (U+0000) at offset 4, which Label Studio's PostgreSQL cannot "
        "store: remove it"
    )
    assert str(rejected[15]) == (
        "line 15 ( 8 ): 'id' ' 8 ' starts or ends with white space: remove it (ids are "
        "matched exactly, and brandloop forget strips the ids it is given)"
    )
    assert rejected[13].reason == "blank 'id' (' ')"  # a trial's "" read as missing
    assert rejected[2].reason.startswith("invalid JSON")
    assert rejected[3].reason == "missing 'id'"
    assert rejected[4].reason == "empty text"
    # (a repeated id says whether its text differs: an edit, or a source reusing ids)
    assert rejected[6].reason == "duplicate post id (first on line 1; its text differs)"
    assert rejected[12].reason == "duplicate post id (first on line 9)"
    assert "non-string 'text'" in rejected[7].reason
    # (a JSON array, the shape a trial's .json file had, is named as one)
    assert rejected[8].reason == "a JSON array: JSONL holds one post object per line"
    assert rejected[14].reason == "not a JSON object: JSONL holds one post object per line"
    assert "'id' must be a string or an integer" in rejected[10].reason
    assert "not valid Unicode: it holds a lone surrogate (U+" in rejected[11].reason
    assert all(r.line == n and str(r).startswith(f"line {n}") for n, r in rejected.items())
    assert (rejected[4].record_id, str(rejected[4])) == ("3", "line 4 (3): empty text")
    assert rejected[2].record_id is None and rejected[2].entry()["line"] == 2


def test_a_utf16_file_is_refused_whole_and_its_lines_named_as_such(
    tmp_path: Path, storage: LocalStorage
) -> None:
    # Given a JSONL file saved as UTF-16 (a trial read "invalid JSON: Expecting value" once
    # per line, and exit 0)
    src = tmp_path / "posts.jsonl"
    src.write_bytes('{"id": "1", "text": "Dior"}\n{"id": "2", "text": "Fenty"}\n'.encode("utf-16"))
    # When it is read, it is refused at once, whole, saying what to do
    with pytest.raises(ConfigError, match=r"posts.jsonl is UTF-16 \(a UTF-16 byte-order mark, or"):
        list(jsonl_lines(storage, str(src)))
    # and so is one without its mark (a trial's one-post file gave two rejected lines, exit 0)
    src.write_bytes('{"id": "1", "text": "Dior"}\n'.encode("utf-16-le"))
    with pytest.raises(ConfigError, match=r"every other byte NUL\): save it as UTF-8"):
        list(jsonl_lines(storage, str(src)))
    # And lines of UTF-16 without its mark are each named so
    raw = '{"id": "1", "text": "Dior"}'.encode("utf-16-le")
    (out,) = [item for _, item in iter_jsonl([raw.decode("utf-8", errors="surrogateescape")])]
    assert isinstance(out, Rejected) and out.reason == (
        "not UTF-8: the file looks UTF-16 (every other byte is NUL); save it as UTF-8"
    )
    # while a stray NUL in a UTF-8 line is that line's own JSON error
    (stray,) = [item for _, item in iter_jsonl(['{"id": "1", "text": "Di\x00or"}'])]
    assert isinstance(stray, Rejected) and stray.reason.startswith("invalid JSON: Invalid control")


def test_jsonl_parsing_streams() -> None:
    # Given an endless source of lines
    consumed = 0

    def endless() -> Iterator[str]:
        nonlocal consumed
        while True:
            consumed += 1
            yield json.dumps({"id": str(consumed), "text": f"post {consumed}"})

    # When the first three posts are taken
    first = [item for _, (_, item) in zip(range(3), iter_jsonl(endless()), strict=False)]
    # Then only those lines were read
    assert [p.id for p in first if isinstance(p, Post)] == ["1", "2", "3"]
    assert consumed == 3


def write_jsonl(path: Path, rows: list[str]) -> None:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_jsonl_fetch_walks_a_file_in_batches_without_repeats_or_gaps(
    tmp_path: Path, storage: LocalStorage
) -> None:
    # Given 25 posts with a broken line in the middle and a repeat of post 3 near the end
    src = tmp_path / "posts.jsonl"
    rows = [json.dumps({"id": str(i), "text": f"post {i}"}) for i in range(25)]
    rows.insert(12, "{broken")
    rows.insert(22, json.dumps({"id": "3", "text": "post 3 again"}))
    write_jsonl(src, rows)
    # When it is fetched 10 posts at a time
    fetched: list[str] = []
    results = []
    for run in range(4):
        results.append(fetch_jsonl_to_storage(storage, str(src), f"posts/{run}.jsonl", 10))
        fetched += [json.loads(x)["id"] for x in storage.iter_lines(f"posts/{run}.jsonl")]
    # Then every post arrives exactly once and in order, even the repeat in a later batch
    assert fetched == [str(i) for i in range(25)]
    assert [r["n_posts"] for r in results] == [10, 10, 5, 0]
    assert sum(r["n_rejected"] for r in results) == 2
    # and each rejection is an entry with its line, the post id and the reason
    assert storage.read_json("posts/1.rejected.json")[0]["line"] == 13
    repeat = storage.read_json("posts/2.rejected.json")[0]
    assert repeat["post_id"] == "3" and "first on line 4" in repeat["reason"]


def test_jsonl_fetch_continues_a_growing_file(tmp_path: Path, storage: LocalStorage) -> None:
    # Given a file that was read to its end
    src = tmp_path / "posts.jsonl"
    write_jsonl(src, [json.dumps({"id": str(i), "text": f"post {i}"}) for i in range(3)])
    fetch_jsonl_to_storage(storage, str(src), "posts/a.jsonl", 10)
    # When lines are appended and it is fetched again
    with src.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "9", "text": "appended"}) + "\n")
        handle.write(json.dumps({"id": "1", "text": "old id again"}) + "\n")
    result = fetch_jsonl_to_storage(storage, str(src), "posts/b.jsonl", 10)
    # Then only the new post comes, and the old id is reported as a repeat
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/b.jsonl")] == ["9"]
    assert result["n_rejected"] == 1


def test_a_reread_reads_the_file_again_and_never_moves_its_checkpoint_back(
    tmp_path: Path, storage: LocalStorage
) -> None:
    # Given a file of 5 posts read to its end (a trial's rerun with another model fetched 0)
    src = tmp_path / "posts.jsonl"
    write_jsonl(src, [json.dumps({"id": str(i), "text": f"post {i}"}) for i in range(5)])
    fetch_jsonl_to_storage(storage, str(src), "posts/a.jsonl", 10)
    assert fetch_jsonl_to_storage(storage, str(src), "posts/b.jsonl", 10)["n_posts"] == 0
    # When it is read again from its first line, all of it and then 2 posts
    again = fetch_jsonl_to_storage(storage, str(src), "posts/c.jsonl", 10, from_start=True)
    two = fetch_jsonl_to_storage(storage, str(src), "posts/d.jsonl", 2, from_start=True)
    # Then each reread gets the posts from the start
    assert again["n_posts"] == 5 and two["n_posts"] == 2
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/d.jsonl")] == ["0", "1"]
    # And the checkpoint stays at the end: lines appended later are the next normal fetch's,
    # and nothing read before comes again
    with src.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "9", "text": "appended"}) + "\n")
    fetch_jsonl_to_storage(storage, str(src), "posts/e.jsonl", 10)
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/e.jsonl")] == ["9"]


def test_jsonl_fetch_starts_over_when_the_file_was_replaced(
    tmp_path: Path, storage: LocalStorage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a file read to line 2
    src = tmp_path / "posts.jsonl"
    write_jsonl(src, [json.dumps({"id": f"a{i}", "text": "old"}) for i in range(2)])
    fetch_jsonl_to_storage(storage, str(src), "posts/a.jsonl", 10)
    # When another file takes its name
    write_jsonl(src, [json.dumps({"id": f"b{i}", "text": "new"}) for i in range(3)])
    with caplog.at_level(logging.WARNING, logger="ner.sources"):
        fetch_jsonl_to_storage(storage, str(src), "posts/b.jsonl", 10)
    # Then it is read from line 1, with a warning
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/b.jsonl")] == [
        "b0",
        "b1",
        "b2",
    ]
    assert "reading it again from line 1" in caplog.text


def test_a_fixed_line_of_a_file_read_before_sends_only_what_is_new_or_changed(
    tmp_path: Path, storage: LocalStorage
) -> None:
    # Given a file read once, its line 2 rejected (a trial fixed such a line and got every
    # post of the file in a second import file, so twice in Label Studio)
    src = tmp_path / "posts.jsonl"
    lines = [json.dumps({"id": f"t{i}", "text": f"post {i} about Fenty"}) for i in range(4)]
    write_jsonl(src, [lines[0], '{"id": "t1"}', *lines[2:]])
    first = fetch_jsonl_to_storage(storage, str(src), "posts/a.jsonl", 10)
    assert (first["n_posts"], first["n_rejected"], first["n_fetched_before"]) == (3, 1, 0)
    # When the line is fixed in place, and another post's text is edited
    edited = json.dumps({"id": "t3", "text": "post 3 about Fenty, edited"})
    write_jsonl(src, [*lines[:3], edited])
    again = fetch_jsonl_to_storage(storage, str(src), "posts/b.jsonl", 10)
    # Then only the fixed post and the edited one come; the others are counted, not sent
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/b.jsonl")] == ["t1", "t3"]
    assert (again["n_posts"], again["n_rejected"], again["n_fetched_before"]) == (2, 0, 2)
    # And the checkpoint is at the end of the new file: nothing comes a third time
    third = fetch_jsonl_to_storage(storage, str(src), "posts/c.jsonl", 10)
    assert (third["n_posts"], third["n_fetched_before"]) == (0, 0)


def test_jsonl_fetch_rejects_only_the_line_with_undecodable_bytes(
    tmp_path: Path, storage: LocalStorage
) -> None:
    # Given a file whose second line holds a byte that is not UTF-8
    src = tmp_path / "posts.jsonl"
    src.write_bytes(
        b'{"id": "1", "text": "ok \xf0\x9f\x92\x84"}\r\n'
        b'{"id": "2", "text": "bad \xff byte"}\r\n'
        b'{"id": "3", "text": "ok too"}\r\n'
    )
    # When it is fetched
    result = fetch_jsonl_to_storage(storage, str(src), "posts/x.jsonl", 10)
    # Then the other lines are stored and the bad one is named
    posts = [json.loads(x) for x in storage.iter_lines("posts/x.jsonl")]
    assert [p["id"] for p in posts] == ["1", "3"]
    assert posts[0]["text"] == "ok 💄"
    assert result["n_rejected"] == 1
    (entry,) = storage.read_json("posts/x.rejected.json")
    assert (entry["line"], entry["post_id"]) == (2, "2")
    reason = entry["reason"]
    # as a byte that is not UTF-8, not as a "surrogate" (a trial's Latin-1 file)
    assert "holds the byte 0xFF, which is not UTF-8" in reason and "surrogate" not in reason


def test_jsonl_fetch_keeps_a_post_with_a_bad_date_and_says_so_at_once(
    tmp_path: Path, storage: LocalStorage, caplog: pytest.LogCaptureFixture
) -> None:
    # a trial's "not a date" was stored silently and named only by a later train run
    src = tmp_path / "posts.jsonl"
    lines = [
        {"id": "1", "text": "Glossier balm", "created_at": "2026-11-02T10:00:00Z"},
        {"id": "l2", "text": "Dior lipstick", "created_at": "not a date"},
    ]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with caplog.at_level(logging.WARNING, logger="ner.sources"):
        result = fetch_jsonl_to_storage(storage, str(src), "posts/x.jsonl", 10)
    # Then both posts are kept, the value as given, and the bad one is named by line and id
    posts = [json.loads(x) for x in storage.iter_lines("posts/x.jsonl")]
    assert result["n_posts"] == 2 and posts[1]["created_at"] == "not a date"
    (said,) = [r.getMessage() for r in caplog.records]
    assert "kept 1 post of" in said and "line 2 (l2): 'not a date'" in said
    assert said.endswith("the canary set reads them as undated")


def test_jsonl_fetch_rejects_a_post_longer_than_the_limit_by_line_and_id(
    tmp_path: Path, storage: LocalStorage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a file whose second post is longer than the limit, and a later post of its id
    src = tmp_path / "posts.jsonl"
    lines = [
        {"id": "1", "text": "Glossier balm"},
        {"id": "2", "text": "Sephora " * 10},
        {"id": "3", "text": "Dior"},
        {"id": "2", "text": "Sephora haul"},
    ]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    # When it is fetched with a limit of 40 characters, 2 posts at a time
    with caplog.at_level("WARNING", logger="ner.sources"):
        first = fetch_jsonl_to_storage(storage, str(src), "posts/a.jsonl", 2, max_chars=40)
        # (the log says how to take a rejected line: a trial was told only what was wrong)
        said = [r.getMessage() for r in caplog.records]
        assert said[-1].startswith(f"to take the rejected lines: fix them in {src} and run apply")
        second = fetch_jsonl_to_storage(storage, str(src), "posts/b.jsonl", 2, max_chars=40)
    # (and the next run, reading past it, says it still waits for a fix)
    assert caplog.records[-1].getMessage().startswith(f"1 line of {src} rejected by earlier runs")
    # Then the long post is named with its line, id, length and the limit; the others are kept
    assert first["n_rejected"] == 1
    assert storage.read_json("posts/a.rejected.json") == [
        {
            "line": 2,
            "post_id": "2",
            "reason": "text of 80 characters; the limit is 40 (NER_MAX_POST_CHARS)",
        }
    ]
    # and the id it did not take is free for the later post (also after the checkpoint)
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/a.jsonl")] == ["1", "3"]
    assert [json.loads(x)["text"] for x in storage.iter_lines("posts/b.jsonl")] == ["Sephora haul"]
    assert second["n_rejected"] == 0


def test_jsonl_fetch_reads_a_storage_key_or_uri_as_one_input(storage: LocalStorage) -> None:
    # Given posts stored as an object
    storage.write_lines("inbox/p.jsonl", [json.dumps({"id": "7", "text": "Dior"})])
    # When fetched by key, then by its URI
    by_key = fetch_jsonl_to_storage(storage, "inbox/p.jsonl", "posts/k.jsonl", 5)
    by_uri = fetch_jsonl_to_storage(storage, storage.uri("inbox/p.jsonl"), "posts/u.jsonl", 5)
    # Then the first read it, and the second knew it was the same object: one checkpoint
    assert (by_key["n_posts"], by_uri["n_posts"]) == (1, 0)
    key = jsonl_checkpoint_key(storage, "inbox/p.jsonl")
    assert key == jsonl_checkpoint_key(storage, storage.uri("inbox/p.jsonl"))
    assert storage.read_json(key)["input"] == storage.uri("inbox/p.jsonl")


def test_a_local_file_is_one_input_however_its_path_is_written(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file read once by its absolute path (a trial's deployment run did so), then
    # by a relative path (the README's command line): the second run read it again
    src = tmp_path / "in" / "posts.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps({"id": str(i), "text": "Dior"}) + "\n" for i in range(3)))
    monkeypatch.chdir(tmp_path)
    first = fetch_jsonl_to_storage(storage, str(src), "posts/a.jsonl", 2)
    # When the same file is named relatively, with ./ and through a file:// URI
    again = [
        fetch_jsonl_to_storage(storage, name, f"posts/{n}.jsonl", 2)["n_posts"]
        for n, name in enumerate(["in/posts.jsonl", "./in/../in/posts.jsonl", src.as_uri()])
    ]
    # Then they continue where the first stopped: the third post once, then nothing
    assert first["n_posts"] == 2 and again == [1, 0, 0]
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/0.jsonl")] == ["2"]


def test_a_file_uri_input_is_read_as_rfc_8089_says(storage: LocalStorage, tmp_path: Path) -> None:
    # Given a file in a folder whose name holds a space (its file: URI escapes it as %20)
    src = tmp_path / "my posts" / "in.jsonl"
    src.parent.mkdir()
    src.write_text("".join(json.dumps({"id": str(i), "text": "Dior"}) + "\n" for i in range(3)))
    uri = src.as_uri()
    assert "%20" in uri
    # When it is fetched by that URI, then by file://localhost/ and by its path
    first = fetch_jsonl_to_storage(storage, uri, "posts/a.jsonl", 1)["n_posts"]
    by_host = uri.replace("file://", "file://localhost", 1)
    second = fetch_jsonl_to_storage(storage, by_host, "posts/b.jsonl", 1)["n_posts"]
    third = fetch_jsonl_to_storage(storage, str(src), "posts/c.jsonl", 5)["n_posts"]
    # Then it is one input, read once (it was read as a folder "my%20posts" before)
    assert (first, second, third) == (1, 1, 1)


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("file://tmp/posts.jsonl", "three slashes"),
        ("file:posts.jsonl", "not a file URI of a local path"),
        ("file:///tmp/posts.jsonl?x=1", "not a file URI of a local path"),
    ],
)
def test_a_file_uri_that_names_no_local_path_is_refused_by_name(
    storage: LocalStorage, uri: str, said: str
) -> None:
    with pytest.raises(InputNotFoundError, match=said) as caught:
        fetch_jsonl_to_storage(storage, uri, "posts/a.jsonl", 1)
    assert str(caught.value).startswith(f"input {uri!r}")
    assert not storage.exists("posts/a.jsonl")


def test_a_checkpoint_of_the_path_as_typed_is_still_read(
    storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a checkpoint an earlier version wrote under the relative path as typed
    src = tmp_path / "posts.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "text": "Dior"}) + "\n" for i in range(3)))
    monkeypatch.chdir(tmp_path)
    fetch_jsonl_to_storage(storage, "posts.jsonl", "posts/a.jsonl", 2)
    current = jsonl_checkpoint_key(storage, "posts.jsonl")
    legacy = layout.jsonl_checkpoint(hashlib.sha256(b"posts.jsonl").hexdigest()[:16])
    storage.write_json(legacy, storage.read_json(current))
    storage.delete(current)
    # When the file is fetched again, as written then
    more = fetch_jsonl_to_storage(storage, "posts.jsonl", "posts/b.jsonl", 5)
    # Then it continues after the two lines read, and the checkpoint moves to its one name
    assert more["n_posts"] == 1 and storage.read_json(current)["line"] == 3


def test_jsonl_fetch_missing_input_is_a_clear_error(storage: LocalStorage) -> None:
    with pytest.raises(SourceError, match="neither a local file nor a storage key"):
        fetch_jsonl_to_storage(storage, "nope.jsonl", "posts/x.jsonl", 5)


# --------------------------------------------------------------------------- query
@pytest.mark.parametrize(
    ("keywords", "lang", "expected"),
    [
        (
            ["makeup", "lip gloss", "#beauty"],
            "en",
            '(makeup OR "lip gloss" OR #beauty) lang:en -is:retweet',
        ),
        (["Sephora", " sephora ", "", "Ulta"], "fr", "(Sephora OR Ulta) lang:fr -is:retweet"),
        (['say "hi" there', "(x)"], "", '("say hi there" OR "(x)") -is:retweet'),
    ],
)
def test_query_from_keywords(keywords: list[str], lang: str, expected: str) -> None:
    assert build_query(keywords, lang) == expected


def test_query_rejects_no_keywords_and_overlong_queries() -> None:
    with pytest.raises(ConfigError, match="NER_KEYWORDS is empty"):
        build_query([])
    with pytest.raises(ConfigError, match="NER_KEYWORDS is empty"):
        build_query(["  "])
    keywords = [f"keyword{i}" for i in range(60)]
    with pytest.raises(ConfigError, match=r"of \d+ characters; X allows 512"):
        build_query(keywords)
    assert len(build_query(keywords, max_length=4096)) > 512


# --------------------------------------------------------------------------- X: paging
def test_pagination_follows_next_token_and_maps_fields(storage: LocalStorage) -> None:
    # Given a recorded-shape page linking to a second and a third page
    first = fixture("search_recent_page.json")
    token = first["meta"]["next_token"]
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, json=first)
        mock.get(SEARCH, json=page([tweet(1861497000000000002)], next_token="p3"))
        mock.get(SEARCH, json=page([tweet(1861497000000000001)]))
        source = x_source(storage)
        # When all posts are fetched
        posts = list(source.fetch(["makeup", "lip gloss"], max_posts=100))
        calls = [params_of(c.request) for c in mock.calls]
    # Then every page was read, in order, with the tokens X gave
    assert ids_of(posts) == [
        "1861498227041345721",
        "1861497950519288123",
        "1861497000000000002",
        "1861497000000000001",
    ]
    assert "next_token" not in calls[0]
    assert [c.get("next_token") for c in calls[1:]] == [token, "p3"]
    assert calls[0]["query"] == '(makeup OR "lip gloss") lang:en -is:retweet'
    assert calls[0]["tweet.fields"] == "created_at,author_id,lang,note_tweet"
    assert calls[0]["max_results"] == "100"
    # And each post carries the tweet's fields and the query
    head = first["data"][0]
    assert posts[0] == Post(
        id=head["id"],
        text=head["text"],
        created_at=head["created_at"],
        author_id=head["author_id"],
        lang="en",
        source="x",
        query=calls[0]["query"],
    )


def test_checkpoint_written_on_commit_and_read_by_the_next_run(
    fake_x: FakeRecentSearch, storage: LocalStorage
) -> None:
    # Given 25 posts whose ids have different lengths (numeric, not string, order matters)
    fake_x.ids = list(range(990, 1015))
    source = XSource(make_x_client(TOKEN), storage, page_size=10)
    # When they are fetched 10 per page and committed
    posts = list(source.fetch(["makeup"], max_posts=50))
    assert not storage.exists(X_CHECKPOINT)
    source.commit()
    # Then since_id is the numerically newest id, and the next run asks only for newer ones
    assert len(posts) == 25 and len(fake_x.calls) == 3
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "1014"
    fake_x.ids += [1015, 1016]
    again = x_source(storage)
    assert ids_of(list(again.fetch(["makeup"], max_posts=50))) == ["1016", "1015"]
    assert fake_x.calls[-1]["since_id"] == "1014"


def test_budget_stop_keeps_a_window_so_nothing_is_missed(
    fake_x: FakeRecentSearch, storage: LocalStorage
) -> None:
    # Given a committed since_id and 25 newer posts, fetched 10 at a time
    storage.write_json(X_CHECKPOINT, {"since_id": "100"})
    fake_x.ids = list(range(90, 126))
    runs: list[list[str]] = []
    # When new posts keep arriving between runs
    for extra in ([], [126, 127], [], []):
        fake_x.ids += extra
        source = x_source(storage)
        runs.append(ids_of(list(source.fetch(["makeup"], max_posts=10))))
        source.commit()
    # Then the first runs finish the window (older posts), then the new ones come
    assert runs[0] == [str(i) for i in range(125, 115, -1)]
    assert runs[1] == [str(i) for i in range(115, 105, -1)]
    assert runs[2] == [str(i) for i in range(105, 100, -1)]
    assert runs[3] == ["127", "126"]
    assert fake_x.calls[1]["until_id"] == "116" and fake_x.calls[1]["since_id"] == "100"
    assert fake_x.calls[1]["max_results"] == "10"
    assert "until_id" not in fake_x.calls[-1] and fake_x.calls[-1]["since_id"] == "125"


def test_repeated_tweets_are_dropped(storage: LocalStorage) -> None:
    # Given a tweet that shows up on two pages
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, json=page([tweet(503), tweet(502)], next_token="n"))
        mock.get(SEARCH, json=page([tweet(502), tweet(501)]))
        source = x_source(storage)
        # When fetched
        posts = list(source.fetch(["makeup"], max_posts=10))
    # Then it is handed over once
    assert ids_of(posts) == ["503", "502", "501"]


# --------------------------------------------------------------------------- X: crashes
def test_failure_on_page_two_stores_nothing_and_the_rerun_gets_everything_once(
    fake_x: FakeRecentSearch, storage: LocalStorage, clean_env: None
) -> None:
    # Given 150 posts (two pages) and an X that fails on the second page
    fake_x.ids = list(range(1000, 1150))
    fake_x.fail(2, status=503)
    settings = load_settings(storage_uri=str(storage.root), lang="en")
    client = make_x_client(TOKEN)
    # When the run fails
    with pytest.raises(SourceError, match="TwitterServerError"):
        fetch_x_to_storage(settings, storage, "posts/run1.jsonl", ["makeup"], 500, client=client)
    # Then neither posts nor checkpoint were written
    assert not storage.exists("posts/run1.jsonl") and not storage.exists(X_CHECKPOINT)
    # And the repeated run stores every post once
    result = fetch_x_to_storage(
        settings, storage, "posts/run2.jsonl", ["makeup"], 500, client=client
    )
    stored = [json.loads(x)["id"] for x in storage.iter_lines("posts/run2.jsonl")]
    assert sorted(stored, key=int) == [str(i) for i in range(1000, 1150)]
    assert result["n_posts"] == 150 and result["n_rejected"] == 0
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "1149"


def test_crash_after_partial_commits_resumes_without_repeats_or_gaps(
    fake_x: FakeRecentSearch, storage: LocalStorage
) -> None:
    # Given a consumer that stores each post and commits right away
    fake_x.ids = list(range(2000, 2250))
    stored: list[str] = []

    def consume(source: XSource) -> None:
        for post in source.fetch(["makeup"], max_posts=1000):
            stored.append(post.id)
            source.commit()
        source.commit()

    # When the first run crashes on page 2, and posts arrive before the rerun
    fake_x.fail(2, status=500)
    with pytest.raises(SourceError):
        consume(x_source(storage))
    assert len(stored) == 100
    fake_x.ids += [2250, 2251]
    consume(x_source(storage))
    consume(x_source(storage))
    # Then every post was stored exactly once
    assert sorted(stored, key=int) == [str(i) for i in range(2000, 2252)]
    assert len(stored) == len(set(stored))
    assert fake_x.calls[2]["until_id"] == "2150"
    assert fake_x.calls[-1]["since_id"] == "2249"


def test_stale_since_id_is_dropped_with_a_warning(
    storage: LocalStorage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a checkpoint older than X's 7 days
    storage.write_json(X_CHECKPOINT, {"since_id": "1851000000000000000"})
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, status=400, json=fixture("invalid_since_id.json"))
        mock.get(SEARCH, json=page([tweet(1861000000000000001)]))
        source = x_source(storage)
        # When fetched
        with caplog.at_level(logging.WARNING, logger="ner.sources"):
            posts = list(source.fetch(["makeup"], max_posts=10))
        calls = [params_of(c.request) for c in mock.calls]
    source.commit()
    # Then the search is repeated without since_id, and the checkpoint is fresh again
    assert ids_of(posts) == ["1861000000000000001"]
    assert calls[0]["since_id"] == "1851000000000000000" and "since_id" not in calls[1]
    assert "older than the 7 days" in caplog.text
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "1861000000000000001"


def test_other_bad_requests_are_source_errors(storage: LocalStorage) -> None:
    body = {"errors": [{"parameters": {"query": ["("]}, "message": "bad query"}]}
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, status=400, json=body)
        with pytest.raises(SourceError, match="bad query"):
            list(x_source(storage).fetch(["makeup"], max_posts=10))


# --------------------------------------------------------------------------- X: errors
@pytest.mark.parametrize(
    ("status", "name", "match"),
    [(401, "unauthorized.json", "NER_X_BEARER_TOKEN"), (403, "forbidden.json", "403")],
)
def test_auth_errors_name_the_cause_not_the_token(
    storage: LocalStorage, caplog: pytest.LogCaptureFixture, status: int, name: str, match: str
) -> None:
    # Given X refusing the token
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, status=status, json=fixture(name))
        source = x_source(storage)
        # When fetching, with tweepy logging its request headers
        with (
            caplog.at_level(logging.DEBUG, logger="tweepy.client"),
            pytest.raises(SourceAuthError, match=match) as info,
        ):
            list(source.fetch(["makeup"], max_posts=10))
    # Then the error says what to fix, and the token is in neither the error nor the logs
    assert isinstance(info.value.__cause__, tweepy.HTTPException)
    assert TOKEN not in str(info.value)
    assert "Authorization" in caplog.text and "Bearer ***" in caplog.text
    assert TOKEN not in caplog.text


def test_rate_limit_is_waited_out(storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a 429 whose reset is 30 s away, then a good page
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    reset = int(time.time()) + 30
    with responses.RequestsMock() as mock:
        mock.get(
            SEARCH,
            status=429,
            json=fixture("too_many_requests.json"),
            headers={"x-rate-limit-reset": str(reset), "x-rate-limit-remaining": "0"},
        )
        mock.get(SEARCH, json=page([tweet(301)]))
        # When fetching with wait_on_rate_limit
        posts = list(x_source(storage).fetch(["makeup"], max_posts=10))
        n_calls = len(mock.calls)
    # Then the client slept until the reset, once, and the retry succeeded
    assert ids_of(posts) == ["301"]
    assert n_calls == 2
    assert len(slept) == 1 and 29 <= slept[0] <= 32


def test_rate_limit_without_waiting_is_a_source_error(storage: LocalStorage) -> None:
    reset = int(time.time()) + 60
    with responses.RequestsMock() as mock:
        mock.get(
            SEARCH,
            status=429,
            json=fixture("too_many_requests.json"),
            headers={"x-rate-limit-reset": str(reset)},
        )
        source = x_source(storage, wait_on_rate_limit=False)
        with pytest.raises(SourceError, match=f"rate limit.*{reset}"):
            list(source.fetch(["makeup"], max_posts=10))


def test_server_and_network_errors_are_source_errors(storage: LocalStorage) -> None:
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, status=503, json={"title": "Service Unavailable"})
        with pytest.raises(SourceError, match="503") as info:
            list(x_source(storage).fetch(["makeup"], max_posts=10))
        assert TOKEN not in str(info.value)
        mock.replace(responses.GET, SEARCH, body=requests.ConnectionError("connection reset"))
        with pytest.raises(SourceError, match="connection reset"):
            list(x_source(storage).fetch(["makeup"], max_posts=10))


def test_bad_arguments_fail_before_any_request(storage: LocalStorage) -> None:
    source = x_source(storage)
    with pytest.raises(ConfigError, match="NER_KEYWORDS"):
        source.fetch([" "], max_posts=10)
    with pytest.raises(ConfigError, match="max_posts"):
        source.fetch(["makeup"], max_posts=0)
    with pytest.raises(ConfigError, match="NER_X_BEARER_TOKEN"):
        make_x_client("")


def test_missing_token_is_a_config_error(
    storage: LocalStorage, clean_env: None, tmp_path: Path
) -> None:
    settings = load_settings(storage_uri=str(tmp_path))
    with pytest.raises(ConfigError, match="NER_X_BEARER_TOKEN is not set"):
        fetch_x_to_storage(settings, storage, "posts/x.jsonl", ["makeup"], 10)


# --------------------------------------------------------------------------- X: bad data
def test_malformed_tweets_are_skipped_named_and_not_refetched(storage: LocalStorage) -> None:
    # Given a page mixing good tweets with broken ones, one of them the newest
    body = page([tweet(404, text=""), tweet(403), tweet(402)])
    body["data"].insert(2, {"id": "notanumber", "text": "x"})
    body["data"].append({"id": "401", "edit_history_tweet_ids": ["401"]})
    body["data"].append({"text": "no id at all"})
    body["data"].append("not an object")
    body["data"].append(tweet(399, text="cut emoji \ud83d"))
    body["data"].append(tweet(398))
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, body=json.dumps(body), content_type="application/json")
        source = x_source(storage)
        # When fetched
        ids = ids_of(list(source.fetch(["makeup"], max_posts=10)))
    source.commit()
    # Then the good ones are kept, each bad one is named with its reason
    assert ids == ["403", "402", "398"]
    reasons = [(r.record_id, r.reason) for r in source.rejected]
    assert reasons[:4] == [
        ("404", "empty text"),
        ("notanumber", "missing or non-numeric id"),
        ("401", "missing or non-string 'text'"),
        (None, "missing or non-numeric id"),
    ]
    assert reasons[4][0] is None and reasons[4][1].startswith("tweet is not an object")
    assert reasons[5][0] == "399" and "not valid Unicode" in reasons[5][1]
    # And the checkpoint moves past the broken newest tweet, so it is not reported again
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "404"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (json.dumps({"data": {"id": "1"}, "meta": {}}), "'data' is not a list"),
        ("<html>gateway</html>", "not JSON"),
        (json.dumps([1, 2]), "malformed X API page 1"),
    ],
)
def test_malformed_page_is_a_source_error_and_commits_nothing(
    storage: LocalStorage, body: str, match: str
) -> None:
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, body=body, status=200)
        source = x_source(storage)
        with pytest.raises(SourceError, match=match):
            list(source.fetch(["makeup"], max_posts=10))
    assert source.commit() is None and not storage.exists(X_CHECKPOINT)


def test_empty_result_keeps_the_checkpoint(storage: LocalStorage) -> None:
    storage.write_json(X_CHECKPOINT, {"since_id": "700"})
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, json=page([]))
        source = x_source(storage)
        assert list(source.fetch(["makeup"], max_posts=10)) == []
    source.commit()
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "700"


# --------------------------------------------------------------------------- X: text


@pytest.mark.parametrize(
    ("sent", "written"),
    [
        ("H&amp;M &amp; Sephora &lt;3", "H&M & Sephora <3"),
        ("typing &amp;amp; instead of &amp;", "typing &amp; instead of &"),
        ("&amp;lt;3 is how X sends &lt;3", "&lt;3 is how X sends <3"),
        ("a -&gt; b &gt;_&lt;", "a -> b >_<"),
        ("&quot;Dior&quot; &eacute;t&eacute; &#39; & alone",) * 2,
        ("no escapes 😍 at all",) * 2,
    ],
)
def test_x_text_is_unescaped_exactly_once(sent: str, written: str) -> None:
    # X escapes only &, < and >; one pass undoes exactly that and nothing else
    assert unescape_x_text(sent) == written


def test_whole_unescaped_text_from_a_documented_page(storage: LocalStorage) -> None:
    # Given a page as X sends it: escaped text, a long post whose text is cut (ellipsis and
    # t.co link) with the whole text in note_tweet, and a post that really says "&amp;"
    body = fixture("search_recent_escaped_long.json")
    assert body["data"][1]["text"].endswith("… https://t.co/Lq7XbZ2mWd")
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, json=body)
        # When fetched
        posts = list(x_source(storage).fetch(["sephora"], max_posts=10))
        asked = params_of(mock.calls[0].request)["tweet.fields"].split(",")
    # Then note_tweet was asked for, and each post is whole and unescaped once
    assert "note_tweet" in asked and {"created_at", "author_id", "lang"} <= set(asked)
    assert [p.text for p in posts] == [
        "H&M & Sephora <3",
        LONG_REVIEW,
        "typing &amp; instead of & in my Fenty order notes again >_<",
    ]
    assert len(posts[1].text) == 353 and posts[1].text.endswith("lip mask from Laneige")
    # And offsets computed downstream point at the brands as written
    assert posts[0].text[0:3] == "H&M" and posts[0].text[6:13] == "Sephora"
    assert posts[1].text[346:353] == "Laneige"


@pytest.mark.parametrize("return_type", [tweepy.Response, requests.Response])
def test_note_tweet_survives_every_client_return_type(
    storage: LocalStorage, return_type: type
) -> None:
    client = tweepy.Client(bearer_token=TOKEN, return_type=return_type)
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, json=fixture("search_recent_escaped_long.json"))
        posts = list(XSource(client, storage).fetch(["sephora"], max_posts=10))
    assert posts[1].text == LONG_REVIEW


@pytest.mark.parametrize("note", [{"entities": {}}, {"text": ""}, "cut"])
def test_a_note_tweet_without_text_is_rejected_by_id_not_stored_cut(
    storage: LocalStorage, note: Any
) -> None:
    # Given a long post whose note_tweet is unusable, next to a good post
    broken = tweet(902, text="a long review of Laneige… https://t.co/abcdefghij")
    broken["note_tweet"] = note
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, json=page([tweet(903), broken]))
        source = x_source(storage)
        posts = list(source.fetch(["makeup"], max_posts=10))
    # Then the good post is kept and the broken one is named with the reason
    assert ids_of(posts) == ["903"]
    assert [r.record_id for r in source.rejected] == ["902"]
    assert source.rejected[0].reason.startswith("'note_tweet' has no text")
    assert x_post_text({"id": "1", "text": 5}) == 5  # non-strings are left for Post to reject


# --------------------------------------------------------------------------- X: clients
@pytest.mark.parametrize("return_type", [tweepy.Response, requests.Response])
def test_clients_with_other_return_types_work(storage: LocalStorage, return_type: type) -> None:
    # Given a client built elsewhere, returning tweepy or requests responses
    client = tweepy.Client(bearer_token=TOKEN, return_type=return_type)
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, json=fixture("search_recent_page.json"))
        mock.get(SEARCH, json=page([tweet(1861497000000000001)]))
        source = XSource(client, storage)
        # When fetching
        posts = list(source.fetch(["makeup"], max_posts=10))
    # Then the posts are the same as with the default client
    assert ids_of(posts) == ["1861498227041345721", "1861497950519288123", "1861497000000000001"]
    assert posts[0].created_at == "2026-11-20T18:02:11.000Z"
    assert posts[0].author_id == "1290041932870098944"


def test_fetch_x_to_storage_writes_posts_rejections_and_checkpoint(
    storage: LocalStorage, clean_env: None, tmp_path: Path
) -> None:
    # Given a page with one broken tweet and a token from settings
    body = page([tweet(802), tweet(801, text=" ")])
    settings = load_settings(storage_uri=str(tmp_path), x_bearer_token=TOKEN)
    with responses.RequestsMock() as mock:
        mock.get(SEARCH, json=body)
        # When the flow's fetch step runs
        result = fetch_x_to_storage(settings, storage, "posts/s.jsonl", ["makeup"], 10)
        auth = mock.calls[0].request.headers["Authorization"]
    # Then posts, rejections and checkpoint are stored, and the settings token was used
    assert result == {"posts_key": "posts/s.jsonl", "n_posts": 1, "n_rejected": 1, "source": "x"}
    assert [json.loads(x)["id"] for x in storage.iter_lines("posts/s.jsonl")] == ["802"]
    assert storage.read_json("posts/s.rejected.json") == [
        {"post_id": "801", "reason": "empty text"}
    ]
    assert storage.read_json(X_CHECKPOINT)["since_id"] == "802"
    assert auth == f"Bearer {TOKEN}"


def test_an_empty_token_block_is_named(
    storage: LocalStorage, clean_env: None, tmp_path: Path
) -> None:
    # Given the token's Secret block named, and read empty (build_settings reads blocks)
    settings = load_settings(
        storage_uri=str(tmp_path), x_bearer_token="", x_bearer_token_block="x-bearer-token-dev"
    )
    # Then the error names the block that is empty, not the variable to set a block in
    with pytest.raises(ConfigError, match=r"block 'x-bearer-token-dev' \(NER_X_BEARER_TOKEN_BLOCK"):
        fetch_x_to_storage(settings, storage, "posts/x.jsonl", ["makeup"], 10)
