"""What the fetch step stored before: each post id with the digests of its texts.

A JSONL input read again (a copy of a file, an overlapping dump, a fixed file) must not send
a post that is already stored with the same text. :func:`fetched_before` answers that from
every posts batch (``posts/<stamp>.jsonl``, :mod:`ner.layout`), through an index
(:data:`ner.layout.FETCHED_INDEX`) that holds, per batch, each post id with the
:func:`text_digest` of its text. A read parses only the batches the index does not cover
yet, drops the entries of batches that are gone, and writes the index back when either
happened: one read of the index and one listing instead of one read per batch (on ``gs://``
one request per batch, a number that grows with every run).

The index is a cache of the batches, never the reverse:

* a batch is written once by the fetch step and afterwards only loses posts (a forgotten
  post removed by :mod:`ner.purge`, which cleans the index too), so an entry can only hold
  more than its batch, never less. An extra entry is a forgotten post, which a JSONL input
  does not send again either way;
* an index that is not JSON or not of this shape is rebuilt from the batches (a warning
  names it); a storage failure raises :class:`~ner.errors.StorageError` (transient I/O);
* two runs that write it at once lose at most the other's new entries, which the next read
  parses again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Collection
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ner import layout
from ner.records import read_posts
from ner.storage import Storage, json_text

log = logging.getLogger(__name__)


def text_digest(text: str) -> bytes:
    """A short digest of a post's text (8 bytes of BLAKE2b), to tell an edit from a repeat."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


class FetchedIndex(BaseModel):
    """The index object: posts batch key -> post id -> hex :func:`text_digest` of each text
    the batch holds for it (one, unless a batch repeats an id)."""

    model_config = ConfigDict(frozen=True)

    version: Literal[1] = 1
    batches: dict[str, dict[str, list[str]]] = {}


def fetched_before(storage: Storage) -> dict[str, set[bytes]]:
    """Post id -> the :func:`text_digest` of each text it was stored with by the fetch step
    (every posts batch; every version of a post, forgotten ones included): what a JSONL
    input may not send again. Parses only the batches the index does not cover (module
    docs). Raises :class:`~ner.errors.DataError` for a batch that cannot be read."""
    batches = [key for key in storage.list(layout.POSTS) if layout.is_posts_batch(key)]
    index = read_index(storage)
    listed = set(batches)
    entries = {key: ids for key, ids in index.batches.items() if key in listed}
    new = [key for key in batches if key not in entries]
    for key in new:
        entries[key] = _batch_entries(storage, key)
    if new or len(entries) != len(index.batches):
        _write_index(storage, entries)
    known: dict[str, set[bytes]] = {}
    for ids in entries.values():
        for post_id, digests in ids.items():
            known.setdefault(post_id, set()).update(bytes.fromhex(d) for d in digests)
    return known


def _batch_entries(storage: Storage, key: str) -> dict[str, list[str]]:
    """Post id -> hex digests of its texts in the posts batch ``key``."""
    entries: dict[str, list[str]] = {}
    for post in read_posts(storage, key, include_forgotten=True):
        digest = text_digest(post.text).hex()
        if digest not in entries.setdefault(post.id, []):
            entries[post.id].append(digest)
    return entries


def read_index(storage: Storage) -> FetchedIndex:
    """The stored index; an empty one when there is none or it cannot be parsed (a warning
    names it: it is rebuilt from the batches)."""
    if not storage.exists(layout.FETCHED_INDEX):
        return FetchedIndex()
    raw = storage.read_bytes(layout.FETCHED_INDEX)
    try:
        return FetchedIndex.model_validate_json(raw)
    except ValidationError as exc:
        log.warning(
            "%s is not an index of fetched posts (%s); rebuilding it from the posts batches",
            storage.uri(layout.FETCHED_INDEX),
            exc.errors()[0]["msg"],
        )
        return FetchedIndex()


def _write_index(storage: Storage, batches: dict[str, dict[str, list[str]]]) -> None:
    storage.write_text(layout.FETCHED_INDEX, json_text(FetchedIndex(batches=batches).model_dump()))


def purge_index(storage: Storage, post_ids: Collection[str]) -> Counter[str]:
    """Rewrite the index without ``post_ids``; returns the entries removed per post (empty:
    the index was not rewritten). For :mod:`ner.purge`."""
    index = read_index(storage)
    removed: Counter[str] = Counter()
    kept: dict[str, dict[str, list[str]]] = {}
    for key, ids in index.batches.items():
        kept[key] = {post_id: d for post_id, d in ids.items() if post_id not in post_ids}
        removed.update(post_id for post_id in ids if post_id in post_ids)
    if removed:
        _write_index(storage, kept)
    return removed
