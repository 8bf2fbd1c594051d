"""What the fetch step stored before: each post id with the digests of its texts, and the
date and source of each (:func:`stamps_of`, what the canary rule reads at train time).

A JSONL input read again (a copy of a file, an overlapping dump, a fixed file) must not send
a post that is already stored with the same text. :func:`fetched_before` answers that from
every posts batch (``posts/<stamp>.jsonl``, :mod:`ner.layout`) through an index that holds,
per batch, each post id with the :func:`text_digest` of its text. The index is cut into
segments of at most :data:`SEGMENT_BATCHES` batches (``indexes/fetched/<n>.json``): a read
takes one request per segment instead of one per batch (on ``gs://``, a number that grows
with every run) and parses only the batches no segment covers yet; a run rewrites only the
segments it adds to or that name batches gone from storage, so no write grows with history.

The index is a cache of the batches, never the reverse:

* a batch is written once by the fetch step and afterwards only loses posts (a forgotten
  post removed by :mod:`ner.purge`, which cleans the segments too), so an entry can only
  hold more than its batch, never less. An extra entry is a forgotten post, which a JSONL
  input does not send again either way;
* a segment that is not JSON or not of this shape is deleted with a warning naming it, and
  its batches are parsed again; a storage failure raises :class:`~ner.errors.StorageError`
  (transient I/O);
* two runs that write at once lose at most the other's new entries, which the next read
  parses again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ner import layout
from ner.records import read_posts
from ner.storage import Storage, json_text

log = logging.getLogger(__name__)

#: Batches one index segment covers at most.
SEGMENT_BATCHES = 64

#: Posts batch key -> post id -> hex :func:`text_digest` of each text the batch holds for it
#: (one, unless a batch repeats an id).
Entries = dict[str, dict[str, list[str]]]
#: Posts batch key -> post id -> ``(created_at as stored, or None; source)`` of its first
#: record in the batch: what the canary rule reads of a post (:mod:`ner.canary`).
Stamps = dict[str, dict[str, tuple[str | None, str]]]
#: The segments' format; a segment of another one is rebuilt from its batches.
INDEX_VERSION: Final = 2
#: One batch's part of a segment: its :data:`Entries` and its :data:`Stamps`.
BatchIndex = tuple[dict[str, list[str]], dict[str, tuple[str | None, str]]]


def text_digest(text: str) -> bytes:
    """A short digest of a post's text (8 bytes of BLAKE2b), to tell an edit from a repeat."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


class Segment(BaseModel):
    """One index object: the entries of at most :data:`SEGMENT_BATCHES` posts batches."""

    model_config = ConfigDict(frozen=True)

    version: Literal[2] = INDEX_VERSION
    batches: Entries = {}
    stamps: Stamps = {}

    def keeping(self, keys: Collection[str]) -> Segment:
        """This segment with only the batches ``keys`` names."""
        return Segment(
            batches={k: ids for k, ids in self.batches.items() if k in keys},
            stamps={k: ids for k, ids in self.stamps.items() if k in keys},
        )

    def adding(self, new: Iterable[tuple[str, BatchIndex]]) -> Segment:
        """This segment with the batches of ``new`` (key, its :data:`BatchIndex`) added."""
        added = list(new)
        return Segment(
            batches={**self.batches, **{key: index[0] for key, index in added}},
            stamps={**self.stamps, **{key: index[1] for key, index in added}},
        )

    def without(self, post_ids: Collection[str]) -> Segment:
        """This segment without the entries of ``post_ids``."""
        return Segment(
            batches=_without(self.batches, post_ids), stamps=_without(self.stamps, post_ids)
        )


def fetched_before(storage: Storage) -> dict[str, set[bytes]]:
    """Post id -> the :func:`text_digest` of each text it was stored with by the fetch step
    (every posts batch; every version of a post, forgotten ones included): what a JSONL
    input may not send again. Parses only the batches no index segment covers (module
    docs). Raises :class:`~ner.errors.DataError` for a batch that cannot be read."""
    known: dict[str, set[bytes]] = {}
    for segment in _refreshed(storage).values():
        for ids in segment.batches.values():
            for post_id, digests in ids.items():
                known.setdefault(post_id, set()).update(bytes.fromhex(d) for d in digests)
    return known


def stamps_of(
    storage: Storage, post_ids: Collection[str]
) -> dict[str, tuple[str, str | None, str]]:
    """Post id -> ``(posts batch key, created_at as stored or None, source)`` of each of
    ``post_ids`` the fetch step stored, from the first batch holding it (in key order), read
    from the index as :func:`fetched_before` reads it (a train run parsed every batch)."""
    batches: Stamps = {}
    for segment in _refreshed(storage).values():
        batches |= segment.stamps
    found: dict[str, tuple[str, str | None, str]] = {}
    for key in sorted(batches):
        for post_id, (created_at, source) in batches[key].items():
            if post_id in post_ids and post_id not in found:
                found[post_id] = (key, created_at, source)
    return found


def _refreshed(storage: Storage) -> dict[int, Segment]:
    """The index segments, made to cover exactly the posts batches in storage: entries of
    deleted batches dropped, batches no segment covers parsed and added."""
    listed = [key for key in storage.list(layout.POSTS) if layout.is_posts_batch(key)]
    segments = read_segments(storage)
    present = set(listed)
    for number, segment in list(segments.items()):
        if not set(segment.batches) <= present:  # batches deleted from storage
            segments[number] = _write(storage, number, segment.keeping(present))
    covered = {key for segment in segments.values() for key in segment.batches}
    new = [key for key in listed if key not in covered]
    if new:
        _add(storage, segments, {key: _batch_entries(storage, key) for key in new})
    return segments


def _add(storage: Storage, segments: dict[int, Segment], new: dict[str, BatchIndex]) -> None:
    """Write ``new`` batches' ``(entries, stamps)`` into the last segment while it has room,
    then into new segments; ``segments`` is updated."""
    pending = list(new.items())
    last = max(segments, default=0)
    while pending:
        if last not in segments or len(segments[last].batches) >= SEGMENT_BATCHES:
            last += 1
            segments[last] = Segment()
        room = SEGMENT_BATCHES - len(segments[last].batches)
        taken, pending = pending[:room], pending[room:]
        segments[last] = _write(storage, last, segments[last].adding(taken))


def _batch_entries(storage: Storage, key: str) -> BatchIndex:
    """Post id -> hex digests of its texts in the posts batch ``key``, and post id -> its
    first record's ``(created_at, source)``."""
    entries: dict[str, list[str]] = {}
    stamps: dict[str, tuple[str | None, str]] = {}
    for post in read_posts(storage, key, include_forgotten=True):
        digest = text_digest(post.text).hex()
        if digest not in entries.setdefault(post.id, []):
            entries[post.id].append(digest)
        stamps.setdefault(post.id, (post.created_at, post.source))
    return entries, stamps


def segment_keys(storage: Storage) -> dict[int, str]:
    """Segment number -> key of each index segment in storage, in their order."""
    numbered = {layout.fetched_segment_number(k): k for k in storage.list(layout.FETCHED_INDEX)}
    return {n: numbered[n] for n in sorted(n for n in numbered if n is not None)}


def read_segments(storage: Storage) -> dict[int, Segment]:
    """Segment number -> segment, for each that parses; one that does not is deleted
    (:func:`_parse`)."""
    segments: dict[int, Segment] = {}
    for number, key in segment_keys(storage).items():
        if (segment := _parse(storage, key)) is not None:
            segments[number] = segment
    return segments


def _parse(storage: Storage, key: str) -> Segment | None:
    """The segment at ``key``; None when it does not parse: it is then deleted with a
    warning naming it (a cache: its batches are parsed again)."""
    try:
        return Segment.model_validate_json(storage.read_bytes(key))
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["loc"] == ("version",):  # an earlier release's format: no one's mistake
            log.info("%s is of an earlier format; rebuilt from its batches", storage.uri(key))
        else:
            log.warning(
                "%s is not a segment of the index of fetched posts (%s); deleted, its posts "
                "batches are read again",
                storage.uri(key),
                error["msg"],
            )
        storage.delete(key)
        return None


def _write(storage: Storage, number: int, segment: Segment) -> Segment:
    storage.write_text(layout.fetched_segment(number), json_text(segment.model_dump()))
    return segment


def purge_segment(storage: Storage, key: str, post_ids: Collection[str]) -> Counter[str]:
    """Rewrite the index segment ``key`` without ``post_ids``; returns the entries removed
    per post (empty: not rewritten). For :mod:`ner.purge`; a segment that does not parse is
    deleted (:func:`_parse`)."""
    number, segment = layout.fetched_segment_number(key), _parse(storage, key)
    if number is None or segment is None:
        return Counter()
    removed = Counter(_named(segment.batches.values(), post_ids))
    if removed:
        _write(storage, number, segment.without(post_ids))
    return removed


_V = TypeVar("_V")


def _without(
    batches: dict[str, dict[str, _V]], post_ids: Collection[str]
) -> dict[str, dict[str, _V]]:
    return {
        batch: {post_id: v for post_id, v in ids.items() if post_id not in post_ids}
        for batch, ids in batches.items()
    }


def _named(batches: Iterable[dict[str, list[str]]], post_ids: Collection[str]) -> list[str]:
    return [post_id for ids in batches for post_id in ids if post_id in post_ids]
