"""Split a posts JSONL into contiguous line ranges and predict each range on its own.

This is the library half of the sharded apply flow (``flows/apply_ner_sharded.py``): any
process that can open the storage and load the model can predict one shard, so shards can
run on the workers of a Dask cluster (or anywhere else) and be joined afterwards.

A shard is a half-open range of **physical** line numbers ``[start, stop)`` (0-based) of the
posts object; blank lines count as lines but yield no post, exactly as in
:func:`ner.inference.read_posts`. Shard ``i`` writes ``predictions/<stamp>/shard-<i>.jsonl``;
:func:`concat_shards` joins them in shard order, so the result is line for line what a single
process would have written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from spacy.language import Language

from ner.errors import BrandloopError, DataError, ModelError, StorageError
from ner.inference import predict
from ner.storage import PREDICTIONS, Storage
from ner.types import Post

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Lines ``[start, stop)`` (0-based, physical lines) of a posts object."""

    index: int
    start: int
    stop: int

    def __post_init__(self) -> None:
        if self.index < 0 or self.start < 0 or self.stop < self.start:
            raise ValueError(f"invalid shard {self.index}: lines [{self.start}, {self.stop})")

    @property
    def size(self) -> int:
        """Number of lines in the shard (blank lines included)."""
        return self.stop - self.start


def count_lines(storage: Storage, key: str) -> int:
    """Number of physical lines of ``key`` (streams; a final line without newline counts)."""
    return sum(1 for _ in storage.iter_lines(key))


def plan_shards(n_lines: int, n_shards: int) -> list[Shard]:
    """Cut ``n_lines`` lines into at most ``n_shards`` contiguous, near-equal, non-empty
    ranges that cover every line once, in order."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    if n_lines < 0:
        raise ValueError(f"n_lines must not be negative, got {n_lines}")
    count = min(n_shards, n_lines)
    shards = []
    for index in range(count):
        start = n_lines * index // count
        stop = n_lines * (index + 1) // count
        shards.append(Shard(index, start, stop))
    return shards


def shard_key(stamp: str, index: int) -> str:
    """Storage key of shard ``index``'s predictions for the run ``stamp``."""
    return f"{PREDICTIONS}/{stamp}/shard-{index:05d}.jsonl"


def read_posts_range(storage: Storage, key: str, start: int, stop: int) -> Iterator[Post]:
    """Stream the posts on lines ``[start, stop)`` of ``key`` (0-based; blank lines skipped).

    A line that is not a valid post raises :class:`DataError` naming ``key`` and its 1-based
    line number, as :func:`ner.inference.read_posts` does.
    """
    from ner.inference import read_posts  # imports this module

    return read_posts(storage, key, start, stop)


def predict_shard(
    nlp: Language,
    storage: Storage,
    posts_key: str,
    shard: Shard,
    out_key: str,
    *,
    model_version: str,
    labels: Sequence[str] = ("BRAND",),
    batch_size: int = 256,
) -> int:
    """Predict the posts of one shard into ``out_key``; returns the number of predictions."""
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        posts = read_posts_range(storage, posts_key, shard.start, shard.stop)
        for prediction in predict(
            nlp, posts, model_version=model_version, labels=labels, batch_size=batch_size
        ):
            count += 1
            yield json.dumps(prediction.to_dict(), ensure_ascii=False)

    storage.write_lines(out_key, lines())
    log.info(
        "shard %d: predicted %d posts of %s lines [%d, %d) into %s",
        shard.index,
        count,
        posts_key,
        shard.start,
        shard.stop,
        out_key,
    )
    return count


def concat_shards(
    storage: Storage, shard_keys: Sequence[str], out_key: str, *, delete: bool = True
) -> int:
    """Join shard outputs, in the given order, into ``out_key``; returns the line count.

    Every shard must exist (a missing one raises :class:`StorageError` before anything is
    written). With ``delete`` the shard objects are removed once the joined object is written.
    """
    missing = [key for key in shard_keys if not storage.exists(key)]
    if missing:
        raise StorageError(f"cannot join shards: {len(missing)} missing, first {missing[0]}")
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for key in shard_keys:
            for line in storage.iter_lines(key):
                if line:
                    count += 1
                    yield line

    storage.write_lines(out_key, lines())
    if delete:
        for key in shard_keys:
            storage.delete(key)
    log.info("joined %d shards (%d predictions) into %s", len(shard_keys), count, out_key)
    return count


def _storage_for_child(storage: Storage) -> Storage:
    """The storage a forked worker process should use: a GCS store gets a client of its own
    (an HTTP connection pool must not be shared across a fork); a local one is reused."""
    from ner.storage import GCSStorage

    if isinstance(storage, GCSStorage):
        return GCSStorage(storage.bucket_name, storage.prefix, None, timeout_s=storage.timeout_s)
    return storage


def _shard_process(
    report: Any,
    nlp: Language,
    storage: Storage,
    posts_key: str,
    shard: Shard,
    out_key: str,
    model_version: str,
    labels: Sequence[str],
    batch_size: int,
) -> None:
    """Body of one forked worker of :func:`predict_in_processes`; sends ``(kind, a, b)``
    back through the pipe ``report``: ``("ok", count, None)``, or the brandloop error that
    stopped it (``("DataError", record_id, reason)``, ``(error class name, message, None)``)."""
    try:
        count = predict_shard(
            nlp,
            _storage_for_child(storage),
            posts_key,
            shard,
            out_key,
            model_version=model_version,
            labels=labels,
            batch_size=batch_size,
        )
    except DataError as exc:
        report.send(("DataError", exc.record_id, exc.reason))
        _leave(1)
    except BrandloopError as exc:
        report.send((type(exc).__name__, str(exc), None))
        _leave(1)
    report.send(("ok", count, None))
    _leave(0)


def _leave(code: int) -> NoReturn:
    """End a forked worker at once with ``code``.

    A forked child inherits the parent's exit machinery (atexit hooks, logging and API
    handlers of an orchestrator, open clients); running it in the child can fail and turn
    a finished part into a non-zero exit. The part's output is already written atomically
    and its report sent, so nothing is lost by skipping it.
    """
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _worker_error(
    name: str, message: tuple[Any, Any, Any] | None, exitcode: int | None
) -> Exception:
    """The exception the parent raises for a failed worker."""
    from ner import errors

    if message is None:
        return ModelError(f"prediction worker {name} died (exit code {exitcode})")
    kind, first, second = message
    if kind == "DataError":
        return DataError(first, second)
    cls = getattr(errors, str(kind), None)
    if isinstance(cls, type) and issubclass(cls, BrandloopError) and cls is not DataError:
        return cls(f"prediction worker {name}: {first}")
    return ModelError(f"prediction worker {name} failed: {kind}: {first}")


def can_fork() -> bool:
    """Whether worker processes can be forked here (they then share the loaded model)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def predict_in_processes(
    nlp: Language,
    storage: Storage,
    posts_key: str,
    predictions_key: str,
    *,
    model_version: str,
    labels: Sequence[str] = ("BRAND",),
    batch_size: int = 256,
    n_process: int = 2,
) -> int:
    """Predict ``posts_key`` into ``predictions_key`` with ``n_process`` forked processes.

    Each process takes a contiguous line range (:func:`plan_shards`) and writes its own part
    next to the output; the parts are joined in order, so the result is line for line what
    one process writes. Unlike spaCy's ``nlp.pipe(n_process=…)``, no parsed doc travels
    between processes (serialising and rebuilding docs costs about a quarter of the parse
    itself), and the parent only joins files. The workers are forked, so they share the
    loaded model instead of loading it again. Returns the number of predictions; raises
    :class:`ModelError` naming the failed part if a worker fails (no output is written).
    """
    import multiprocessing
    import uuid

    if n_process < 1:
        raise ValueError(f"n_process must be at least 1, got {n_process}")
    shards = plan_shards(count_lines(storage, posts_key), n_process)
    token = uuid.uuid4().hex[:12]
    keys = [f"{predictions_key}.parts-{token}/part-{s.index:05d}.jsonl" for s in shards]
    context = multiprocessing.get_context("fork")
    pipes = [context.Pipe(duplex=False) for _ in shards]
    workers = [
        context.Process(
            target=_shard_process,
            args=(send, nlp, storage, posts_key, shard, key, model_version, tuple(labels)),
            kwargs={"batch_size": batch_size},
            name=f"brandloop-predict-{shard.index}",
        )
        for shard, key, (_, send) in zip(shards, keys, pipes, strict=True)
    ]
    for worker in workers:
        worker.start()
    for _, send in pipes:
        send.close()  # the parent only reads: EOF once the worker is gone
    messages: list[tuple[Any, Any, Any] | None] = []
    for (receive, _), worker in zip(pipes, workers, strict=True):
        try:
            messages.append(receive.recv())
        except EOFError:  # the worker died before it could say anything
            messages.append(None)
        worker.join()
        receive.close()
    failed = [
        (worker.name, message, worker.exitcode)
        for worker, message in zip(workers, messages, strict=True)
        if worker.exitcode != 0 or message is None or message[0] != "ok"
    ]
    if failed:
        for key in keys:
            storage.delete(key)
        raise _worker_error(*failed[0])
    count = concat_shards(storage, keys, predictions_key)
    log.info(
        "predicted %d posts from %s into %s with %d processes",
        count,
        posts_key,
        predictions_key,
        len(workers),
    )
    return count
