"""Where posts come from: a JSONL file, or the X API v2 recent-search endpoint.

Both sources stream, validate every record, de-duplicate by post id and keep a checkpoint in
storage so that the next run continues where the last one stopped. A bad record is reported
(its line number or tweet id, and why) and skipped; the good ones around it are kept.

**Checkpoints move only after the posts are stored.** ``fetch_*_to_storage`` writes the
posts atomically first and the checkpoint second. :class:`XSource` hands posts over with
:meth:`XSource.fetch` and writes its checkpoint only when the caller calls
:meth:`XSource.commit` after storing them. A run that fails before its posts are stored
therefore leaves the checkpoint where it was, and the next run fetches the same posts again:
none is stored twice and none is skipped.

**The X watermark.** Recent search returns the newest posts first, so a run that stops early
(post budget reached, crash after a partial commit) must not move ``since_id`` past posts it
never saw. The checkpoint therefore keeps the unfinished window: ``since_id`` (lower bound),
``until_id`` (the oldest id handed over) and ``newest_id`` (the newest id of the window).
The next run finishes the window first (``since_id < id < until_id``). Only when the window
is exhausted does ``since_id`` move to ``newest_id``. X keeps 7 days of posts. If the
checkpoint is older than that, X rejects it (400), and the posts in between are gone. The
fetch then logs a warning and drops the expired bound (see :meth:`XSource.fetch`).

**X post text.** X API v2 escapes ``&``, ``<`` and ``>`` in post text as ``&amp;``, ``&lt;``
and ``&gt;``. :func:`x_post_text` undoes exactly that, once, here at the source, before any
span offset is computed: everything downstream (storage, prediction, Label Studio) sees the
text as written. Posts over 280 characters arrive with ``text`` cut (an ellipsis and a t.co
link) and their whole text in ``note_tweet.text``, which X sends only when ``note_tweet`` is
among the requested ``tweet.fields`` (:data:`TWEET_FIELDS`); the whole text is preferred.
JSONL input is taken as written (it is our own format, not X's).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections.abc import Collection, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from ner import forget, layout
from ner.canary import parse_created_at
from ner.errors import (
    ConfigError,
    DataError,
    InputNotFoundError,
    SourceAuthError,
    SourceError,
    StorageError,
)
from ner.fetched import fetched_before, text_digest
from ner.report import quantity
from ner.storage import Storage
from ner.types import Post, Rejected
from ner.uris import local_path

if TYPE_CHECKING:
    import tweepy

    from ner.settings import Settings

log = logging.getLogger(__name__)

#: X's limit on a recent-search query for self-serve access (Pro/Enterprise allow 4096).
MAX_QUERY_LENGTH = 512
X_CHECKPOINT = layout.X_CHECKPOINT
#: ``tweet.fields`` requested from X: every field :class:`~ner.types.Post` keeps, plus
#: ``note_tweet`` (the whole text of a post over 280 characters; sent only when asked for).
#: ``id`` and ``text`` are always sent.
TWEET_FIELDS = ("created_at", "author_id", "lang", "note_tweet")
#: How many rejected records are logged one by one (all of them are written to storage).
LOG_REJECTED = 20


def _check_encodable(post: Post) -> None:
    """Reject text that cannot be stored as UTF-8 (lone surrogates, undecodable bytes), or
    that holds a NUL character: Label Studio keeps task data in PostgreSQL's ``jsonb``,
    which cannot store U+0000 (PostgreSQL docs, "JSON Types"), so its import would fail."""
    for name, value in post.to_dict().items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(post.id, f"{name!r} {_not_unicode(value[exc.start])}") from exc
            if "\x00" in value:
                raise DataError(
                    post.id,
                    f"{name!r} holds a NUL character (U+0000) at offset "
                    f"{value.index(chr(0))}, which Label Studio's PostgreSQL cannot store: "
                    "remove it",
                )


def _not_unicode(char: str) -> str:
    """Why ``char`` (a lone surrogate) cannot be stored: a byte the file's UTF-8 decoding
    could not read (``surrogateescape`` maps byte ``b`` >= 0x80 to U+DC00 + ``b``), or a
    lone surrogate written as a JSON escape."""
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"holds the byte 0x{code - 0xDC00:02X}, which is not UTF-8: save the file as UTF-8"
    return f"is not valid Unicode: it holds a lone surrogate (U+{code:04X})"


# --------------------------------------------------------------------------- JSONL
def iter_jsonl(
    lines: Iterable[str],
    *,
    source: str = "jsonl",
    query: str | None = None,
    seen: dict[str, tuple[int, bytes]] | None = None,
    first_line: int = 1,
    max_chars: int | None = None,
) -> Iterator[tuple[int, Post | Rejected]]:
    """Parse JSONL lines into posts, streaming; yields ``(line number, Post | Rejected)``.

    Nothing but ``seen`` (post id -> the line where it first appeared and a short digest of
    its text, to say whether a repeat differs) is kept in memory. Blank
    lines are skipped silently. A line that is not a JSON object, has no usable id, has a
    missing, non-string or empty text, a text longer than ``max_chars`` characters, or
    repeats an id already in ``seen`` is yielded as a :class:`Rejected` with its ``line``
    and, when it has a readable one, its id, and parsing goes on.
    """
    seen = {} if seen is None else seen
    for number, line in enumerate(lines, start=first_line):
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        record = _json_record(line)
        if isinstance(record, str):
            yield number, Rejected(None, record, number)
            continue
        record.setdefault("source", source)
        if query is not None:
            record.setdefault("query", query)
        try:
            post = Post.from_dict(record)
            _check_encodable(post)
            _check_id(post.id)
        except DataError as exc:
            yield number, Rejected(exc.record_id or None, exc.reason, number)
            continue
        if max_chars is not None and len(post.text) > max_chars:
            reason = f"text of {len(post.text):,} characters; the limit is {max_chars:,} "
            yield number, Rejected(post.id, reason + "(NER_MAX_POST_CHARS)", number)
            continue
        digest = text_digest(post.text)
        if post.id in seen:
            first, earlier = seen[post.id]
            differs = "" if earlier == digest else "; its text differs"
            reason = f"duplicate post id (first on line {first}{differs})"
            yield number, Rejected(post.id, reason, number)
            continue
        seen[post.id] = (number, digest)
        yield number, post


def _check_id(post_id: str) -> None:
    """:class:`DataError` for an id with white space at either end, or a character inside
    that cannot be seen or typed (a control or format character such as a tab or U+200B, a
    line or paragraph separator, any space but U+0020: what :meth:`str.isprintable` refuses):
    ids are matched exactly, and ``brandloop forget`` strips the ids it is given, so it could
    never name that post (trials AX, BA)."""
    if post_id != post_id.strip():
        raise DataError(
            post_id,
            f"'id' {post_id!r} starts or ends with white space: remove it (ids are matched "
            "exactly, and brandloop forget strips the ids it is given)",
        )
    if not post_id.isprintable():
        at, char = next((i, c) for i, c in enumerate(post_id) if not c.isprintable())
        raise DataError(
            post_id,
            f"'id' {post_id!r} holds an invisible or control character (U+{ord(char):04X}) as "
            f"character {at + 1}: remove it (ids are matched exactly, so nobody could type this "
            "one to brandloop forget)",
        )


def _json_record(line: str) -> dict[str, Any] | str:
    """The JSON object of one line, or why it is none (the reason a :class:`Rejected` gives):
    not JSON, not an object, or an ``id`` that is neither a string nor an integer."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        if looks_utf16(line.encode("utf-8", errors="surrogateescape")):  # without its mark
            return "not UTF-8: the file looks UTF-16 (every other byte is NUL); save it as UTF-8"
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(record, dict):
        shape = "a JSON array" if isinstance(record, list) else "not a JSON object"
        return f"{shape}: JSONL holds one post object per line"
    record_id = record.get("id")
    if isinstance(record_id, bool) or not isinstance(record_id, str | int | None):
        return f"'id' must be a string or an integer: {record_id!r}"
    return record


def find_input(storage: Storage, uri: str) -> Path | str | None:
    """Where an input named by a setting is: the :class:`Path` of a local file, else the
    key of an object in ``storage`` (``uri`` is a key or a URI under its root), else None."""
    path = _local_path(uri)
    if path.is_file():
        return path
    root = storage.uri().rstrip("/") + "/"
    key = uri.removeprefix(root) if uri.startswith(root) else uri
    return key if "://" not in key and storage.exists(key) else None


def _local_path(uri: str) -> Path:
    """The local path an input names: a path, or a ``file:`` URI (:func:`ner.uris.local_path`;
    ``file:///a%20b.jsonl`` is ``/a b.jsonl``). :class:`InputNotFoundError` for a ``file:``
    URI that names none (another host, a relative path, a query)."""
    try:
        return local_path(uri).expanduser()
    except StorageError as exc:
        raise InputNotFoundError(f"input {exc}") from exc


def input_bytes(storage: Storage, uri: str, what: str) -> bytes:
    """The bytes of a local file, or of an object in ``storage`` (a key or a URI under its
    root): :func:`find_input`. :class:`InputNotFoundError` naming ``what`` (for example
    "rehearsal set") when ``uri`` is neither."""
    found = find_input(storage, uri)
    if isinstance(found, Path):
        return found.read_bytes()
    if found is not None:
        return storage.read_bytes(found)
    looked = _local_path(uri).resolve()
    folder = " (a folder: name a file in it)" if looked.is_dir() else ""  # trial AN
    raise InputNotFoundError(
        f"{what} {uri!r} is neither a local file (looked for {looked}{folder}) nor a "
        f"key under storage {storage.uri()}"
    )


#: A JSONL input whose first line is UTF-16: refused whole, at once.
_UTF16 = (
    "JSONL input {} is UTF-16 (a UTF-16 byte-order mark, or every other byte NUL): save it as UTF-8"
)


def looks_utf16(head: bytes) -> bool:
    """Whether a file whose first bytes (its first line, say) are ``head`` is UTF-16: its
    byte-order mark, or NUL every other byte (``{"id"`` saved as UTF-16 without a mark)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    return len(head) >= 4 and head.count(b"\x00") * 3 >= len(head)


def jsonl_lines(storage: Storage, input_uri: str) -> Generator[str, None, None]:
    """Lines of a local file, or of an object in ``storage`` (a key or a URI under its root).

    A local file is decoded line by line, so undecodable bytes spoil only their line (they
    become lone surrogates, which :func:`iter_jsonl` rejects).
    """
    found = find_input(storage, input_uri)
    if isinstance(found, Path):
        with found.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                if number == 1 and looks_utf16(raw):
                    raise ConfigError(_UTF16.format(input_uri))
                yield raw.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        return
    if found is not None:
        try:
            yield from storage.iter_lines(found)
        except UnicodeDecodeError as exc:  # an object is read whole, as UTF-8
            raise ConfigError(
                f"JSONL input {input_uri} is not UTF-8 ({exc}): save it as UTF-8"
            ) from exc
        return
    raise InputNotFoundError(f"JSONL input {input_uri!r} is neither a local file nor a storage key")


def _hashed(lines: Iterable[str], digest: Any) -> Iterator[str]:
    """Pass ``lines`` through, feeding each (as in the file) to ``digest`` first."""
    for line in lines:
        digest.update(line.encode("utf-8", errors="surrogateescape") + b"\n")
        yield line


def input_identity(storage: Storage, input_uri: str) -> str:
    """One name per JSONL input, however it is written: the ``file://`` URI of a local file's
    resolved path (``posts.jsonl``, ``./posts.jsonl``, ``$PWD/posts.jsonl`` and a key of a
    local storage naming it are one file), the storage URI of an object (its key or its
    URI), else ``input_uri`` itself."""
    found = find_input(storage, input_uri)
    name = storage.uri(found) if isinstance(found, str) else input_uri
    if isinstance(found, Path) or name.startswith("file://"):  # a file here, by path or key
        local = found if isinstance(found, Path) else _local_path(name)
        return local.resolve().as_uri()
    return name


def jsonl_checkpoint_key(storage: Storage, input_uri: str) -> str:
    """Storage key of the line checkpoint of one JSONL input (:func:`input_identity`)."""
    return _checkpoint_key_of(input_identity(storage, input_uri))


def _checkpoint_key_of(name: str) -> str:
    return layout.jsonl_checkpoint(hashlib.sha256(name.encode("utf-8")).hexdigest()[:16])


@dataclass(frozen=True, slots=True)
class LineCheckpoint:
    """Where runs stand in one JSONL input: ``line`` lines read, ``sha256`` of them (None
    without a checkpoint), and ``rejected``: for each of those lines that was rejected and is
    unchanged since, its 1-based number -> the storage key of the report giving the reason."""

    line: int = 0
    sha256: str | None = None
    rejected: Mapping[int, str] = field(default_factory=dict)


def line_checkpoint(storage: Storage, input_uri: str) -> LineCheckpoint:
    """The input's :class:`LineCheckpoint` (an empty one without a checkpoint). A checkpoint
    written before inputs had one name (keyed by ``input_uri`` as typed) is read when the
    input has no other. Raises :class:`SourceError` for an unreadable one."""
    found = [
        key
        for key in (jsonl_checkpoint_key(storage, input_uri), _checkpoint_key_of(input_uri))
        if storage.exists(key)
    ]
    if not found:
        return LineCheckpoint()
    try:
        state = storage.read_json(found[0])
        rejected = {int(n): str(k) for n, k in state.get("rejected", {}).items()}
        return LineCheckpoint(int(state.get("line", 0)), state.get("sha256"), rejected)
    except (StorageError, ValueError, TypeError, AttributeError) as exc:
        raise SourceError(f"unreadable JSONL checkpoint {found[0]}: {exc}") from exc


def _jsonl_prefix(
    storage: Storage, input_uri: str, done: int, expected: str | None, max_chars: int | None
) -> tuple[int, Any, dict[str, tuple[int, bytes]]]:
    """Re-read the lines consumed by earlier runs: their hash and their post ids.

    Returns ``(lines done, running sha256, seen ids)``. If the input no longer starts with
    the lines that were checkpointed (it was replaced, not appended to: a rejected line
    fixed, say), start again at 0.
    """
    digest = hashlib.sha256()
    seen: dict[str, tuple[int, bytes]] = {}
    if done <= 0:
        return 0, digest, seen
    with closing(jsonl_lines(storage, input_uri)) as lines:
        prefix = _hashed(itertools.islice(lines, done), digest)
        for _ in iter_jsonl(prefix, seen=seen, max_chars=max_chars):
            pass
    if expected is None or digest.hexdigest() == expected:
        return done, digest, seen
    log.warning(
        "JSONL input %s no longer starts with the %d lines read by earlier runs; reading it "
        "again from line 1, without the posts fetched before (same id and text)",
        input_uri,
        done,
    )
    return 0, hashlib.sha256(), {}


def fetch_jsonl_to_storage(
    storage: Storage,
    input_uri: str,
    key: str,
    max_posts: int,
    max_chars: int | None = None,
    *,
    from_start: bool = False,
) -> dict[str, Any]:
    """Copy the next ``max_posts`` valid posts of a JSONL input into ``key``.

    ``input_uri`` is a local path, a storage key, or a URI under the storage root. The
    checkpoint (the last line consumed and a hash of the lines up to it) moves only after the
    posts were written. Repeated runs therefore walk through a growing file batch by batch,
    without repeats or gaps, and ids are de-duplicated across batches too. A file replaced
    (a rejected line fixed) is read again from line 1. Every read leaves out the posts
    fetched before from any file with the same id and text (counted): a copy of a file, an
    overlapping dump, a fixed file. ``from_start`` reads from line 1 whatever the
    checkpoint says (to predict the file again, with another model), leaves nothing out,
    and moves the checkpoint only past where it was. Rejected lines (a post longer than
    ``max_chars`` too) are logged, written to ``<key without .jsonl>.rejected.json``, and
    counted.
    """
    if max_posts < 1:
        raise ConfigError(f"max_posts must be at least 1, got {max_posts}")
    checkpoint = line_checkpoint(storage, input_uri)
    done_before = checkpoint.line
    done = 0 if from_start else done_before
    done, digest, seen = _jsonl_prefix(storage, input_uri, done, checkpoint.sha256, max_chars)
    known = {} if from_start else fetched_before(storage)  # a copy, an overlapping dump
    read = _NewLines(known, max_posts, done, digest, forget.forgotten_ids(storage))
    with closing(jsonl_lines(storage, input_uri)) as lines:
        rest = _hashed(itertools.islice(lines, done, None), digest)
        items = iter_jsonl(rest, seen=seen, first_line=done + 1, max_chars=max_chars)
        storage.write_lines(key, read.posts(items))
    rejected, again, last_line = read.rejected, read.again, read.last_line
    _report_rejected(storage, key, input_uri, rejected)
    kept = {n: k for n, k in checkpoint.rejected.items() if n <= done}  # re-read unchanged
    if read.count:  # with no post, the caller's "no new posts" line says it all
        _say_what_waits(storage, input_uri, bool(rejected), kept)
    _report_undated(input_uri, read.undated)
    if again:
        log.info("left out %s of %s fetched before", quantity(len(again), "post"), input_uri)
    reported = layout.rejected_report(key) if rejected else None
    unfixed = kept | {r.line: reported for r in rejected if r.line is not None and reported}
    if last_line > done_before or not from_start:  # a reread never moves it back
        state = LineCheckpoint(last_line, read.committed.hexdigest(), unfixed)
        _write_line_checkpoint(storage, input_uri, state)
    now = {r.line for r in rejected if r.line is not None}
    return {"posts_key": key, "n_posts": read.count, "n_rejected": len(rejected)} | {
        "n_rejected_before": len(set(unfixed) - now),
        "rejected_key": reported,
        "n_fetched_before": len(again),
        "n_forgotten": len(read.forgotten),
        "source": "jsonl",
    }


class _NewLines:
    """What one fetch reads past the checkpoint: at most ``max_posts`` posts, the rejected
    lines, the posts ``known`` (id -> each :func:`text_digest` it was fetched with before,
    :func:`fetched_before`) and the ``forgotten`` ones left out (neither counts towards
    ``max_posts``), and the last line consumed with the running sha256 up to it."""

    def __init__(
        self,
        known: Mapping[str, set[bytes]],
        max_posts: int,
        done: int,
        digest: Any,
        forgotten: Collection[str] = (),
    ) -> None:
        self.known, self.max_posts, self.digest = known, max_posts, digest
        self.last_line, self.committed, self.count = done, digest.copy(), 0
        self.skip = forgotten
        self.rejected: list[Rejected] = []
        self.undated: list[str] = []
        self.again: list[str] = []
        self.forgotten: list[str] = []

    def posts(self, items: Iterable[tuple[int, Post | Rejected]]) -> Iterator[str]:
        """The JSON lines of the posts to store; stops before the first post past
        ``max_posts`` (left for the next run)."""
        for number, item in items:
            kept = False
            if isinstance(item, Rejected):
                self.rejected.append(item)
            elif text_digest(item.text) in self.known.get(item.id, ()):
                self.again.append(item.id)  # fetched before, from any file
            elif item.id in self.skip:
                self.forgotten.append(item.id)  # deleted upstream: never stored again
            elif self.count < self.max_posts:
                self.count, kept = self.count + 1, True
            else:
                return
            self.last_line, self.committed = number, self.digest.copy()
            if kept and isinstance(item, Post):
                if _bad_date(item):
                    self.undated.append(f"line {number} ({item.id}): {item.created_at!r}")
                yield json.dumps(item.to_dict(), ensure_ascii=False)


def _write_line_checkpoint(storage: Storage, input_uri: str, state: LineCheckpoint) -> None:
    """Record ``state``: runs read ``state.line`` lines of the input, whose sha256 is
    ``state.sha256``, and which of them were rejected."""
    unfixed = {str(n): k for n, k in sorted(state.rejected.items())}
    found = {"input": input_identity(storage, input_uri), "line": state.line}
    found |= {"sha256": state.sha256} | ({"rejected": unfixed} if unfixed else {})
    storage.write_json(jsonl_checkpoint_key(storage, input_uri), found)


def rejected_lines_phrase(storage: Storage, lines: Mapping[int, str]) -> str:
    """``"line 2; the reasons in <uri>"`` (``"lines 2, 5; …"``) for rejected lines (number ->
    key of their report, as :class:`LineCheckpoint` keeps them)."""
    numbers = ", ".join(str(n) for n in sorted(lines))
    reports = ", ".join(storage.uri(k) for k in sorted(set(lines.values())))
    return f"{'line' if len(lines) == 1 else 'lines'} {numbers}; the reasons in {reports}"


def _say_what_waits(
    storage: Storage, input_uri: str, rejected_now: bool, kept: Mapping[int, str]
) -> None:
    """Log how to take this run's rejected lines, and that lines rejected by earlier runs
    (``kept``: number -> report key) still wait for a fix."""
    if rejected_now:
        log.warning(
            "to take the rejected lines: fix them in %s and run apply again (the file is then "
            "read from line 1, and only new, fixed and edited posts are sent)",
            input_uri,
        )
    if kept:
        one = len(kept) == 1
        log.warning(
            "%s of %s rejected by earlier runs %s unchanged (%s): fix %s and run apply again",
            quantity(len(kept), "line"),
            input_uri,
            "is" if one else "are",
            rejected_lines_phrase(storage, kept),
            "it" if one else "them",
        )


def _bad_date(post: Post) -> bool:
    """Whether ``post`` has a ``created_at`` that is not an ISO 8601 date."""
    try:
        parse_created_at(post.id, post.created_at)
    except DataError:
        return True
    return False


def _report_undated(origin: str, undated: list[str]) -> None:
    """Say, as the posts are stored, which ones the canary rule will read as undated (it
    said so only when a train run read them)."""
    if undated:
        shown = "; ".join(undated[:LOG_REJECTED])
        more = f" and {len(undated) - LOG_REJECTED} more" if len(undated) > LOG_REJECTED else ""
        log.warning(
            "kept %s of %s whose created_at is not an ISO 8601 date (%s%s): the canary set "
            "reads them as undated",
            quantity(len(undated), "post"),
            origin,
            shown,
            more,
        )


def _report_rejected(storage: Storage, key: str, origin: str, rejected: list[Rejected]) -> None:
    if not rejected:
        return
    storage.write_json(layout.rejected_report(key), [r.entry() for r in rejected])
    for item in rejected[:LOG_REJECTED]:
        log.warning("skipped a record of %s: %s", origin, item)
    if len(rejected) > LOG_REJECTED:
        log.warning("... and %d more rejected records", len(rejected) - LOG_REJECTED)


# --------------------------------------------------------------------------- X API v2
def build_query(
    keywords: Sequence[str], lang: str = "en", *, max_length: int = MAX_QUERY_LENGTH
) -> str:
    """``(a OR "two words" OR #c) lang:en -is:retweet`` from a keyword list.

    Blank and repeated keywords (X search ignores case) are dropped. A keyword with spaces
    or parentheses is quoted. An empty ``lang`` means no language filter. Raises
    :class:`ConfigError` if no keyword is left or the query is longer than ``max_length``.
    """
    terms: list[str] = []
    folded: set[str] = set()
    for keyword in keywords:
        word = keyword.strip()
        if not word or word.casefold() in folded:
            continue
        folded.add(word.casefold())
        if any(ch.isspace() or ch in "()" for ch in word):
            word = '"' + word.replace('"', "") + '"'
        terms.append(word)
    if not terms:
        raise ConfigError("NER_KEYWORDS is empty: at least one keyword is needed")
    language = f" lang:{lang.strip()}" if lang.strip() else ""
    query = f"({' OR '.join(terms)}){language} -is:retweet"
    if len(query) > max_length:
        raise ConfigError(
            f"NER_KEYWORDS make a query of {len(query)} characters; X allows {max_length}"
        )
    return query


_BEARER = re.compile(r"Bearer [^\s'\",}]+")


class _RedactBearer(logging.Filter):
    """tweepy logs request headers, bearer token included, at DEBUG level: mask it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "Bearer " in record.msg:
            record.msg = _BEARER.sub("Bearer ***", record.msg)
        return True


def _guard_tweepy_logs() -> None:
    logger = logging.getLogger("tweepy.client")
    if not any(isinstance(f, _RedactBearer) for f in logger.filters):
        logger.addFilter(_RedactBearer())


#: The host tweepy 4.x writes into every v2 request URL.
TWEEPY_HOST = "https://api.twitter.com"


class RebasedSession(requests.Session):
    """A requests session that sends tweepy's ``https://api.twitter.com/...`` requests to
    another base URL (same path and query) and leaves every other URL alone.

    ``tweepy.Client.request`` builds its URLs from a hard-coded host; replacing the client's
    ``session`` is the one seam it offers that keeps its auth, error and rate-limit handling.
    """

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if isinstance(url, str) and url.startswith(TWEEPY_HOST + "/"):
            url = self.base_url + url.removeprefix(TWEEPY_HOST)
        return super().request(method, url, *args, **kwargs)


def make_x_client(
    bearer_token: str, *, wait_on_rate_limit: bool = True, api_url: str | None = None
) -> tweepy.Client:
    """A tweepy v2 client with app-only auth.

    It returns plain dicts, so that one malformed tweet is skipped without spoiling its page.
    :class:`XSource` also accepts clients with other return types. ``api_url``
    (``NER_X_API_URL``) replaces tweepy's built-in ``https://api.twitter.com`` as the base
    URL of every request: ``https://api.x.com``, a proxy, or a local test server.
    """
    import tweepy

    if not bearer_token:
        raise ConfigError("NER_X_BEARER_TOKEN is empty")
    _guard_tweepy_logs()
    client = tweepy.Client(
        bearer_token=bearer_token, wait_on_rate_limit=wait_on_rate_limit, return_type=dict
    )
    base_url = (api_url or TWEEPY_HOST).rstrip("/")
    if base_url != TWEEPY_HOST:
        if not base_url.startswith(("https://", "http://")):
            raise ConfigError(f"NER_X_API_URL must be an http(s) URL, got {api_url!r}")
        client.session = RebasedSession(base_url)
    return client


@dataclass(frozen=True)
class XWindow:
    """The X checkpoint: see the module docstring."""

    since_id: int | None = None
    until_id: int | None = None
    newest_id: int | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "since_id": None if self.since_id is None else str(self.since_id),
            "until_id": None if self.until_id is None else str(self.until_id),
            "newest_id": None if self.newest_id is None else str(self.newest_id),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> XWindow:
        def num(key: str) -> int | None:
            value = data.get(key)
            return None if value in (None, "") else int(value)

        return cls(num("since_id"), num("until_id"), num("newest_id"))


class _StaleCheckpoint(Exception):
    """X refused ``since_id``/``until_id`` (older than its 7-day window)."""

    def __init__(self, params: set[str]) -> None:
        super().__init__(", ".join(sorted(params)))
        self.params = params


def _is_numeric(text: str) -> bool:
    return text.isascii() and text.isdigit()


#: What X API v2 escapes in post text, and back.
_X_ESCAPES = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}
_X_ESCAPED = re.compile("|".join(_X_ESCAPES))


def unescape_x_text(text: str) -> str:
    """Undo X's escaping of ``&``, ``<`` and ``>`` in one pass.

    ``H&amp;M &amp; Sephora &lt;3`` -> ``H&M & Sephora <3``. One pass means a post that
    really says ``&amp;`` (sent as ``&amp;amp;``) keeps its ``&amp;``; other entities
    (``&quot;``, ``&eacute;``) are not X's escaping and are left as written.
    """
    return _X_ESCAPED.sub(lambda match: _X_ESCAPES[match.group()], text)


def x_post_text(tweet: Mapping[str, Any]) -> Any:
    """The whole, unescaped text of an X API v2 tweet object.

    ``note_tweet.text`` (a post over 280 characters) is preferred to the cut ``text``.
    Returns the raw value when it is not a string, for :meth:`Post.from_dict` to reject.
    Raises :class:`DataError` when ``note_tweet`` is present without a usable text, rather
    than storing the cut text as if it were whole.
    """
    note = tweet.get("note_tweet")
    if note is None:
        text = tweet.get("text")
    elif isinstance(note, Mapping) and isinstance(note.get("text"), str) and note["text"]:
        text = note["text"]
    else:
        raise DataError(str(tweet.get("id")), f"'note_tweet' has no text: {note!r:.80}")
    return unescape_x_text(text) if isinstance(text, str) else text


def _tweet_to_post(tweet: Any, query: str) -> Post:
    if not isinstance(tweet, Mapping):
        raise DataError(None, f"tweet is not an object: {tweet!r:.80}")
    tweet_id = tweet.get("id")
    if not isinstance(tweet_id, str | int) or not _is_numeric(str(tweet_id)):
        raise DataError(None if tweet_id is None else str(tweet_id), "missing or non-numeric id")
    post = Post.from_dict(
        {
            "id": str(tweet_id),
            "text": x_post_text(tweet),
            "created_at": tweet.get("created_at"),
            "author_id": tweet.get("author_id"),
            "lang": tweet.get("lang"),
            "source": "x",
            "query": query,
        }
    )
    _check_encodable(post)
    return post


def _page_tweets(page: Any, number: int) -> list[Any]:
    """The raw tweet objects of a page from a client of any return type."""
    import requests
    import tweepy

    if isinstance(page, tweepy.Response):
        return [getattr(t, "data", t) for t in page.data or []]
    if isinstance(page, requests.Response):
        page = page.json()
    if not isinstance(page, Mapping):
        raise SourceError(f"malformed X API page {number}: not a JSON object ({page!r:.80})")
    for item in page.get("errors") or []:
        log.warning("X API page %d reported a partial error: %s", number, item)
    data = page.get("data") or []
    if not isinstance(data, list):
        raise SourceError(f"malformed X API page {number}: 'data' is not a list")
    return data


class XSource:
    """Recent search on the X API v2 with a crash-safe ``since_id`` checkpoint.

    Use any ``tweepy.Client`` (see :func:`make_x_client`). One round is :meth:`fetch`, store
    the posts, then :meth:`commit`. ``rejected`` lists the tweets skipped by the last fetch.
    """

    def __init__(
        self,
        client: tweepy.Client,
        storage: Storage,
        *,
        checkpoint_key: str = X_CHECKPOINT,
        page_size: int = 100,
    ) -> None:
        self.client = client
        self.storage = storage
        self.checkpoint_key = checkpoint_key
        self.page_size = page_size
        self.rejected: list[Rejected] = []
        self._pending: XWindow | None = None
        _guard_tweepy_logs()

    def checkpoint(self) -> XWindow:
        """The committed window (empty before the first commit)."""
        if not self.storage.exists(self.checkpoint_key):
            return XWindow()
        try:
            return XWindow.from_dict(self.storage.read_json(self.checkpoint_key))
        except (StorageError, ValueError, TypeError, AttributeError) as exc:
            raise SourceError(f"unreadable X checkpoint {self.checkpoint_key}: {exc}") from exc

    @property
    def pending(self) -> XWindow | None:
        """The window :meth:`commit` would write: it covers every post handed over so far."""
        return self._pending

    def fetch(self, keywords: Sequence[str], *, max_posts: int, lang: str = "en") -> Iterator[Post]:
        """Stream up to ``max_posts`` new posts, newest first, then call :meth:`commit`.

        The query and the checkpoint are checked at once (:class:`ConfigError`,
        :class:`SourceError`); the requests run as the posts are consumed. The pending
        checkpoint is updated as each post is handed over, so committing after storing
        part of the stream is safe too. Malformed tweets are skipped, logged and listed in
        ``rejected``. Repeated ids are dropped. Errors: :class:`SourceAuthError` for
        401/403; :class:`SourceError` for other API, network or page-format failures. If X
        rejects a checkpoint older than its 7 days, a warning is logged and the expired
        bound is dropped, once per bound.
        """
        if max_posts < 1:
            raise ConfigError(f"max_posts must be at least 1, got {max_posts}")
        query = build_query(keywords, lang)
        window = self.checkpoint()
        self.rejected = []
        self._pending = None
        return self._fetch(query, window, max_posts)

    def commit(self) -> XWindow | None:
        """Write the checkpoint of the posts handed over (call it after storing them)."""
        window = self._pending
        if window is not None:
            self.storage.write_json(self.checkpoint_key, window.to_dict())
            self._pending = None
        return window

    # ------------------------------------------------------------------ internals
    def _fetch(self, query: str, window: XWindow, max_posts: int) -> Iterator[Post]:
        for _attempt in range(3):
            try:
                yield from self._window(query, window, max_posts)
                return
            except _StaleCheckpoint as stale:
                log.warning(
                    "X refused the checkpoint's %s (older than the 7 days recent search "
                    "covers): posts between it and 7 days ago can no longer be fetched",
                    stale,
                )
                if "until_id" in stale.params:  # the rest of the window has expired
                    window = XWindow(since_id=window.newest_id or window.since_id)
                else:
                    window = XWindow(None, window.until_id, window.newest_id)
        raise SourceError("X keeps refusing the checkpoint: delete " + self.checkpoint_key)

    def _window(self, query: str, window: XWindow, max_posts: int) -> Iterator[Post]:
        import tweepy

        params: dict[str, Any] = {
            "query": query,
            "max_results": max(10, min(self.page_size, 100, max_posts)),
            "tweet_fields": list(TWEET_FIELDS),
        }
        if window.since_id is not None:
            params["since_id"] = str(window.since_id)
        if window.until_id is not None:
            params["until_id"] = str(window.until_id)
        pages = iter(tweepy.Paginator(self.client.search_recent_tweets, **params))
        newest, oldest = window.newest_id, None
        seen: set[int] = set()
        count = 0
        for number in itertools.count(1):
            page = self._next_page(pages, number, params)
            if page is None:
                break
            for tweet in _page_tweets(page, number):
                try:
                    post: Post | None = _tweet_to_post(tweet, query)
                except DataError as exc:
                    post = None
                    rejected = Rejected(exc.record_id, exc.reason)
                    self.rejected.append(rejected)
                    log.warning("skipped tweet %s", rejected)
                    if exc.record_id is None or not _is_numeric(exc.record_id):
                        continue
                tweet_id = int(post.id if post else str(tweet.get("id")))
                if tweet_id in seen:
                    log.debug("dropped repeated tweet %s", tweet_id)
                    continue
                seen.add(tweet_id)
                newest = tweet_id if newest is None else max(newest, tweet_id)
                oldest = tweet_id if oldest is None else min(oldest, tweet_id)
                self._pending = XWindow(window.since_id, oldest, newest)
                if post is None:
                    continue
                yield post
                count += 1
                if count >= max_posts:
                    return
        self._pending = XWindow(newest if newest is not None else window.since_id)

    def _next_page(self, pages: Iterator[Any], number: int, params: Mapping[str, Any]) -> Any:
        """The next page, or None at the end; tweepy and HTTP errors wrapped."""
        import requests
        import tweepy

        try:
            return next(pages)
        except StopIteration:
            return None
        except tweepy.BadRequest as exc:
            named = {
                name
                for error in exc.api_errors
                if isinstance(error, Mapping) and isinstance(error.get("parameters"), Mapping)
                for name in error["parameters"]
            }
            stale = named & {"since_id", "until_id"} & set(params)
            if stale and number == 1:
                raise _StaleCheckpoint(stale) from exc
            raise SourceError(self._redact(f"X API rejected the request: {exc}")) from exc
        except tweepy.Unauthorized as exc:
            raise SourceAuthError(
                "X API rejected the bearer token (401): check NER_X_BEARER_TOKEN"
            ) from exc
        except tweepy.Forbidden as exc:
            raise SourceAuthError(
                "X API refused access (403): the app's access level does not include recent "
                "search, or it is suspended"
            ) from exc
        except requests.JSONDecodeError as exc:
            raise SourceError(f"malformed X API page {number}: the body is not JSON") from exc
        except tweepy.TooManyRequests as exc:
            raise SourceError(
                f"X API rate limit reached (429; resets at epoch {exc.reset_time}): "
                "use wait_on_rate_limit=True or run later"
            ) from exc
        except (tweepy.TweepyException, requests.RequestException) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            raise SourceError(self._redact(f"X API recent search failed: {detail}")) from exc
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
            # A body tweepy could not parse (not JSON, not an object, a tweet without id/text
            # for clients that build Tweet objects).
            raise SourceError(
                f"malformed X API page {number}: {type(exc).__name__}: {exc!s:.200}"
            ) from exc

    def _redact(self, message: str) -> str:
        token = getattr(self.client, "bearer_token", None)
        return message.replace(token, "***") if isinstance(token, str) and token else message


def fetch_x_to_storage(
    settings: Settings,
    storage: Storage,
    key: str,
    keywords: Sequence[str],
    max_posts: int,
    *,
    client: tweepy.Client | None = None,
) -> dict[str, Any]:
    """Fetch new posts from X into ``key``, then advance the checkpoint.

    The posts are written atomically before :meth:`XSource.commit`, so a failure anywhere
    leaves both the posts key and the checkpoint untouched. ``client`` defaults to
    :func:`make_x_client` with ``NER_X_BEARER_TOKEN`` and ``NER_X_API_URL``.
    """
    if client is None:
        client = make_x_client(
            settings.require_secret("x_bearer_token"), api_url=settings.x_api_url
        )
    source = XSource(client, storage)
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for post in source.fetch(keywords, max_posts=max_posts, lang=settings.lang):
            count += 1
            yield json.dumps(post.to_dict(), ensure_ascii=False)

    storage.write_lines(key, lines())
    _report_rejected(storage, key, "X", source.rejected)
    source.commit()
    return {"posts_key": key, "n_posts": count, "n_rejected": len(source.rejected), "source": "x"}
