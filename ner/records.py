"""JSONL record I/O: posts, predictions and annotations, one JSON object per line.

One writer streams records into an object atomically and returns how many it wrote; one
reader streams them back, optionally only the **physical** lines ``[start, stop)`` (0-based;
blank lines count as lines but yield no record), which is how parallel prediction cuts a
batch into shards. A line that is not a valid record raises :class:`DataError` naming the key
and its 1-based line number: these files are written by brandloop, so a bad line means the
file was damaged or edited, and skipping it would lose a post silently.

The post, prediction and annotation readers skip forgotten posts (the tombstone list of
:mod:`ner.forget`) unless asked for everything (``include_forgotten=True``: the purge and
the gold set's integrity check).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from ner import forget
from ner.errors import DataError
from ner.storage import Storage
from ner.types import Annotation, Post, Prediction

R = TypeVar("R")


class JsonRecord(Protocol):
    """A record that turns into one JSON object."""

    def to_dict(self) -> dict[str, Any]: ...


def write_records(
    storage: Storage, key: str, records: Iterable[JsonRecord], *, sort_keys: bool = False
) -> int:
    """Stream ``records`` into ``key`` as JSONL (UTF-8, not ASCII-escaped), atomically.

    Returns the number of records written. Raises :class:`ner.errors.StorageError` if the
    object cannot be written (then nothing is written).
    """
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for record in records:
            count += 1
            yield json.dumps(record.to_dict(), ensure_ascii=False, sort_keys=sort_keys)

    storage.write_lines(key, lines())
    return count


def read_records(
    storage: Storage,
    key: str,
    parse: Callable[[Mapping[str, Any]], R],
    *,
    what: str = "record",
    start: int = 0,
    stop: int | None = None,
) -> Iterator[R]:
    """Stream ``parse(obj)`` for each JSON object on lines ``[start, stop)`` of ``key``.

    Blank lines are skipped. A line that is not JSON, not an object, or that ``parse``
    rejects raises :class:`DataError` with ``record_id`` ``"<key>:<line>"`` (1-based) and a
    reason naming ``what`` was expected. :class:`ner.errors.StorageError` if ``key`` is
    missing.
    """
    lines = itertools.islice(storage.iter_lines(key), start, stop)
    for number, line in enumerate(lines, start=start + 1):
        if not line.strip():
            continue
        where = f"{key}:{number}"
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise DataError(where, "line is not a JSON object")
            yield parse(data)
        except DataError as exc:
            raise DataError(where, f"not a valid {what}: {exc.reason}") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(where, f"not a valid {what}: {exc!r}") from exc


def read_posts(
    storage: Storage,
    key: str,
    start: int = 0,
    stop: int | None = None,
    *,
    include_forgotten: bool = False,
) -> Iterator[Post]:
    """Stream the posts of a batch written by the fetch step (lines ``[start, stop)``),
    forgotten posts left out unless ``include_forgotten``."""
    posts = read_records(storage, key, Post.from_dict, what="post", start=start, stop=stop)
    return posts if include_forgotten else forget.honour(storage, posts, lambda p: p.id)


def read_predictions(
    storage: Storage,
    key: str,
    start: int = 0,
    stop: int | None = None,
    *,
    include_forgotten: bool = False,
) -> Iterator[Prediction]:
    """Stream the predictions written by the predict step (lines ``[start, stop)``),
    those of forgotten posts left out unless ``include_forgotten``."""
    found = read_records(
        storage, key, Prediction.from_dict, what="prediction", start=start, stop=stop
    )
    return found if include_forgotten else forget.honour(storage, found, lambda p: p.post_id)


def read_annotations(
    storage: Storage,
    key: str,
    start: int = 0,
    stop: int | None = None,
    *,
    include_forgotten: bool = False,
) -> Iterator[Annotation]:
    """Stream the annotations written by :func:`write_annotations` (lines ``[start, stop)``),
    those of forgotten posts left out unless ``include_forgotten``."""
    found = read_records(
        storage, key, Annotation.from_dict, what="annotation", start=start, stop=stop
    )
    return found if include_forgotten else forget.honour(storage, found, lambda a: a.post_id)


def write_annotations(storage: Storage, key: str, annotations: Iterable[Annotation]) -> int:
    """Write one JSON object per annotation (keys sorted) to ``key``; returns the count."""
    return write_records(storage, key, annotations, sort_keys=True)


def count_lines(storage: Storage, key: str) -> int:
    """Number of physical lines of ``key`` (streams; a final line without newline counts)."""
    return sum(1 for _ in storage.iter_lines(key))
