"""Where posts come from: a JSONL file, or the X API v2 recent-search endpoint.

Both sources stream, validate every record (a bad one is reported with its line or tweet id
and skipped; the good ones are kept), de-duplicate by post id, and keep a checkpoint in
storage so that the next run continues where the last one stopped.

Checkpoints are advanced only by :meth:`XSource.commit` / after the posts were written, so a
run that crashes before its posts are stored is simply fetched again: nothing is stored
twice and nothing is skipped.

X API paging. Recent search returns the newest posts first. A run that stops early (post
budget reached, crash) must not move the ``since_id`` watermark past posts it never saw, so
the checkpoint keeps the unfinished window: ``since_id`` (lower bound), ``until_id`` (the
oldest id already stored) and ``newest_id`` (the newest id of the window). The next run
finishes the window first (``since_id < id < until_id``); only when the window is exhausted
does ``since_id`` move to ``newest_id``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ner.errors import ConfigError, DataError, SourceAuthError, SourceError, StorageError
from ner.storage import CHECKPOINTS, Storage
from ner.types import Post, Rejected

log = logging.getLogger(__name__)

#: X's limit on a recent-search query (Essential/Basic access).
MAX_QUERY_LENGTH = 512
TWEET_FIELDS = ("created_at", "author_id", "lang")


# --------------------------------------------------------------------------- JSONL
def iter_jsonl(
    lines: Iterable[str],
    *,
    source: str = "jsonl",
    query: str | None = None,
    seen: set[str] | None = None,
    first_line: int = 1,
) -> Iterator[tuple[int, Post | Rejected]]:
    """Parse JSONL lines into posts, streaming; yields ``(line number, Post | Rejected)``.

    Blank lines are skipped silently. Invalid JSON, a record without id or text, an empty
    text and a repeated id are yielded as :class:`Rejected` naming the line.
    """
    seen = set() if seen is None else seen
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, Rejected(f"line {number}", f"invalid JSON: {exc.msg}")
            continue
        if not isinstance(record, dict):
            yield number, Rejected(f"line {number}", "not a JSON object")
            continue
        record.setdefault("source", source)
        if query is not None:
            record.setdefault("query", query)
        try:
            post = Post.from_dict(record)
        except DataError as exc:
            yield number, Rejected(f"line {number} ({exc.record_id or 'no id'})", exc.reason)
            continue
        if post.id in seen:
            yield number, Rejected(f"line {number} ({post.id})", "duplicate post id")
            continue
        seen.add(post.id)
        yield number, post


def _jsonl_lines(storage: Storage, input_uri: str) -> Iterator[str]:
    """Lines of a local file, or of an object in ``storage`` when no such file exists."""
    path = Path(input_uri.removeprefix("file://")).expanduser()
    if path.is_file():
        with path.open("r", encoding="utf-8") as handle:
            for line in handle:
                yield line.rstrip("\n")
        return
    if "://" not in input_uri and storage.exists(input_uri):
        yield from storage.iter_lines(input_uri)
        return
    raise SourceError(f"JSONL input {input_uri!r} is neither a local file nor a storage key")


def jsonl_checkpoint_key(input_uri: str) -> str:
    digest = hashlib.sha256(input_uri.encode("utf-8")).hexdigest()[:16]
    return f"{CHECKPOINTS}/jsonl-{digest}.json"


def fetch_jsonl_to_storage(
    storage: Storage, input_uri: str, key: str, max_posts: int
) -> dict[str, Any]:
    """Copy the next ``max_posts`` valid posts of a JSONL input into ``key``.

    The checkpoint (the last line consumed) moves only after the posts were written, so
    repeated runs walk through the file batch by batch without repeats or gaps. Rejected
    lines are written to ``<key>.rejected.json`` and counted.
    """
    checkpoint_key = jsonl_checkpoint_key(input_uri)
    done = 0
    if storage.exists(checkpoint_key):
        done = int(storage.read_json(checkpoint_key).get("line", 0))
    rejected: list[Rejected] = []
    last_line = done
    count = 0

    def posts() -> Iterator[str]:
        nonlocal last_line, count
        lines = _jsonl_lines(storage, input_uri)
        for _ in range(done):
            if next(lines, None) is None:
                return
        for number, item in iter_jsonl(lines, first_line=done + 1):
            if isinstance(item, Rejected):
                rejected.append(item)
                last_line = number
                continue
            if count >= max_posts:
                return
            count += 1
            last_line = number
            yield json.dumps(item.to_dict(), ensure_ascii=False)

    storage.write_lines(key, posts())
    if rejected:
        storage.write_json(
            key.removesuffix(".jsonl") + ".rejected.json", [str(r) for r in rejected]
        )
        for item in rejected[:20]:
            log.warning("skipped %s: %s", input_uri, item)
    storage.write_json(checkpoint_key, {"input": input_uri, "line": last_line})
    return {"posts_key": key, "n_posts": count, "n_rejected": len(rejected), "source": "jsonl"}


# --------------------------------------------------------------------------- X API v2
def build_query(keywords: Sequence[str], lang: str = "en") -> str:
    """``(a OR "two words" OR #c) lang:en -is:retweet`` from a keyword list."""
    terms = []
    for keyword in keywords:
        word = keyword.strip()
        if not word:
            continue
        if any(ch.isspace() for ch in word):
            word = '"' + word.replace('"', "") + '"'
        terms.append(word)
    if not terms:
        raise ConfigError("NER_KEYWORDS is empty: at least one keyword is needed")
    query = f"({' OR '.join(terms)}) -is:retweet"
    if lang:
        query = f"({' OR '.join(terms)}) lang:{lang} -is:retweet"
    if len(query) > MAX_QUERY_LENGTH:
        raise ConfigError(
            f"NER_KEYWORDS make a query of {len(query)} characters; X allows {MAX_QUERY_LENGTH}"
        )
    return query


def make_x_client(bearer_token: str, *, wait_on_rate_limit: bool = True) -> Any:
    """A tweepy v2 client returning plain dicts (so one bad tweet cannot spoil a page)."""
    import tweepy

    return tweepy.Client(
        bearer_token=bearer_token, wait_on_rate_limit=wait_on_rate_limit, return_type=dict
    )


@dataclass
class _Window:
    since_id: int | None
    until_id: int | None = None
    newest_id: int | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            key: None if value is None else str(value)
            for key, value in (
                ("since_id", self.since_id),
                ("until_id", self.until_id),
                ("newest_id", self.newest_id),
            )
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Window:
        def num(key: str) -> int | None:
            value = data.get(key)
            return None if value in (None, "") else int(value)

        return cls(num("since_id"), num("until_id"), num("newest_id"))


def _tweet_to_post(tweet: Any, query: str) -> Post:
    if not isinstance(tweet, Mapping):
        raise DataError(None, "tweet is not an object")
    tweet_id = tweet.get("id")
    if tweet_id is None or not str(tweet_id).isdigit():
        raise DataError(None if tweet_id is None else str(tweet_id), "missing or non-numeric id")
    return Post.from_dict(
        {
            "id": str(tweet_id),
            "text": tweet.get("text"),
            "created_at": tweet.get("created_at"),
            "author_id": tweet.get("author_id"),
            "lang": tweet.get("lang"),
            "source": "x",
            "query": query,
        }
    )


@dataclass
class XSource:
    """Recent search on the X API v2 with a crash-safe ``since_id`` checkpoint."""

    client: Any
    storage: Storage
    checkpoint_key: str = f"{CHECKPOINTS}/x_since_id.json"
    page_size: int = 100
    rejected: list[Rejected] = field(default_factory=list)
    _pending: _Window | None = None

    def _load(self) -> _Window:
        if not self.storage.exists(self.checkpoint_key):
            return _Window(None)
        try:
            return _Window.from_dict(self.storage.read_json(self.checkpoint_key))
        except (StorageError, ValueError, AttributeError) as exc:
            raise SourceError(f"unreadable X checkpoint {self.checkpoint_key}: {exc}") from exc

    def fetch(self, keywords: Sequence[str], *, max_posts: int, lang: str = "en") -> Iterator[Post]:
        """Yield up to ``max_posts`` new posts, newest first; call :meth:`commit` after
        they are stored."""
        import requests
        import tweepy

        query = build_query(keywords, lang)
        window = self._load()
        oldest: int | None = None
        newest = window.newest_id
        seen: set[str] = set()
        count = 0
        exhausted = False
        kwargs: dict[str, Any] = {
            "query": query,
            "max_results": max(10, min(self.page_size, 100)),
            "tweet_fields": list(TWEET_FIELDS),
        }
        if window.since_id is not None:
            kwargs["since_id"] = str(window.since_id)
        if window.until_id is not None:
            kwargs["until_id"] = str(window.until_id)
        try:
            pages = tweepy.Paginator(self.client.search_recent_tweets, **kwargs)
            for page in pages:
                if not isinstance(page, Mapping):
                    raise SourceError(f"malformed X API page (not an object): {page!r:.200}")
                for item in page.get("errors") or []:
                    log.warning("X API reported a partial error: %s", item)
                data = page.get("data") or []
                if not isinstance(data, list):
                    raise SourceError("malformed X API page: 'data' is not a list")
                for tweet in data:
                    try:
                        post = _tweet_to_post(tweet, query)
                    except DataError as exc:
                        self.rejected.append(Rejected(exc.record_id, exc.reason))
                        log.warning("skipped tweet %s: %s", exc.record_id, exc.reason)
                        continue
                    if post.id in seen:
                        continue
                    seen.add(post.id)
                    number = int(post.id)
                    newest = number if newest is None else max(newest, number)
                    oldest = number if oldest is None else min(oldest, number)
                    yield post
                    count += 1
                    if count >= max_posts:
                        break
                if count >= max_posts:
                    break
            else:
                exhausted = True
        except tweepy.Unauthorized as exc:
            raise SourceAuthError(
                "X API rejected the bearer token (401): check NER_X_BEARER_TOKEN"
            ) from exc
        except tweepy.Forbidden as exc:
            raise SourceAuthError(
                "X API refused access (403): the app lacks access to recent search"
            ) from exc
        except (tweepy.TweepyException, requests.RequestException, ValueError) as exc:
            raise SourceError(f"X API recent search failed: {type(exc).__name__}: {exc}") from exc
        if exhausted:
            since = newest if newest is not None else window.since_id
            self._pending = _Window(since)
        else:
            until = oldest if oldest is not None else window.until_id
            self._pending = _Window(window.since_id, until, newest)

    def commit(self) -> None:
        """Persist the checkpoint of the last :meth:`fetch` (after its posts were stored)."""
        if self._pending is not None:
            self.storage.write_json(self.checkpoint_key, self._pending.to_dict())
            self._pending = None


def fetch_x_to_storage(
    settings: Any, storage: Storage, key: str, keywords: Sequence[str], max_posts: int
) -> dict[str, Any]:
    """Fetch new posts from X into ``key``, then advance the checkpoint."""
    client = make_x_client(settings.require_secret("x_bearer_token"))
    source = XSource(client, storage)
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for post in source.fetch(keywords, max_posts=max_posts, lang=settings.lang):
            count += 1
            yield json.dumps(post.to_dict(), ensure_ascii=False)

    storage.write_lines(key, lines())
    source.commit()
    if source.rejected:
        storage.write_json(
            key.removesuffix(".jsonl") + ".rejected.json", [str(r) for r in source.rejected]
        )
    return {"posts_key": key, "n_posts": count, "n_rejected": len(source.rejected), "source": "x"}
