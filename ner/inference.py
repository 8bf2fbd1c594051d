"""Run a brand model over a stream of posts.

Posts go through ``nlp.pipe`` in batches and predictions come out as they are made, so memory
stays flat however many posts there are. Pipes the entity recogniser does not need (tagger,
parser, lemmatizer …) are disabled.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from spacy.language import Language
from spacy.tokens import Doc

from ner.components import LABEL_FILTER
from ner.records import count_lines, read_posts, write_records
from ner.storage import Storage
from ner.transformer import FACTORY as TRANSFORMER_FACTORY
from ner.types import Post, Prediction, Span

log = logging.getLogger(__name__)

#: Batches processed in one spaCy memory zone by :func:`predict` (one: predictions still
#: stream a batch at a time).
ZONE_BATCHES = 1

#: Least seconds between two progress reports of :func:`predict_to_storage` (the last one,
#: at the end, is always made).
PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class PredictionProgress:
    """How far a prediction run is: ``n_predicted`` of ``n_posts`` posts after ``seconds``."""

    n_predicted: int
    n_posts: int
    seconds: float

    @property
    def posts_per_second(self) -> float:
        """Posts predicted per second so far (0 before the first second's work)."""
        return self.n_predicted / self.seconds if self.seconds > 0 else 0.0

    @property
    def rate_text(self) -> str:
        """:attr:`posts_per_second` to two significant figures under 10 ("0.42 posts/s": a
        small run whose time is mostly a cluster's start), else whole ("545 posts/s")."""
        rate = self.posts_per_second
        return f"{rate:.2g} posts/s" if 0 < rate < 10 else f"{rate:.0f} posts/s"


#: ``on_progress(progress)``: called while predictions are made (see :func:`predict_to_storage`).
OnProgress = Callable[[PredictionProgress], None]

#: factories whose output is ``doc.ents`` (or that rewrite it).
ENTITY_FACTORIES = frozenset(
    {"ner", "beam_ner", "entity_ruler", "span_ruler", LABEL_FILTER, TRANSFORMER_FACTORY}
)


def unneeded_pipes(nlp: Language) -> list[str]:
    """Names of the pipes that do not contribute to ``doc.ents``."""
    keep = {name for name in nlp.pipe_names if nlp.get_pipe_meta(name).factory in ENTITY_FACTORIES}
    for name in nlp.pipe_names:
        listeners = getattr(nlp.get_pipe(name), "listening_components", None)
        if listeners and keep.intersection(listeners):
            keep.add(name)
    return [name for name in nlp.pipe_names if name not in keep]


def doc_spans(doc: Doc, labels: Sequence[str]) -> tuple[Span, ...]:
    """The doc's entities with one of ``labels``, as code-point spans."""
    wanted = set(labels)
    return tuple(
        Span(ent.start_char, ent.end_char, ent.label_, ent.text)
        for ent in doc.ents
        if ent.label_ in wanted
    )


def predict(
    nlp: Language,
    posts: Iterable[Post],
    *,
    model_version: str,
    labels: Sequence[str] = ("BRAND",),
    batch_size: int = 256,
    n_process: int = 1,
) -> Iterator[Prediction]:
    """Yield one :class:`Prediction` per post, in input order, streaming.

    In one process, posts go through the model in chunks of :data:`ZONE_BATCHES` batches,
    each inside a spaCy memory zone: the strings and lexemes the chunk's new words add to
    the vocabulary are freed after it (social posts bring endless new handles and links),
    so memory stays flat over any number of posts. Predictions hold plain Python values
    only, so nothing refers to the freed memory.
    """
    disabled = unneeded_pipes(nlp)
    with nlp.select_pipes(disable=disabled):
        stream = ((post.text, post.id) for post in posts)
        if n_process > 1:  # spaCy's workers own their vocabularies
            for doc, post_id in nlp.pipe(
                stream, as_tuples=True, batch_size=batch_size, n_process=n_process
            ):
                yield Prediction(post_id, doc_spans(doc, labels), model_version)
            return
        while chunk := list(itertools.islice(stream, batch_size * ZONE_BATCHES)):
            with nlp.memory_zone():
                predictions = [
                    Prediction(post_id, doc_spans(doc, labels), model_version)
                    for doc, post_id in nlp.pipe(chunk, as_tuples=True, batch_size=batch_size)
                ]
            yield from predictions


def predict_texts(
    nlp: Language, texts: Sequence[str], labels: Sequence[str] = ("BRAND",)
) -> list[tuple[Span, ...]]:
    """Predict spans for a handful of raw texts (serving, notebooks)."""
    with nlp.select_pipes(disable=unneeded_pipes(nlp)):
        return [doc_spans(doc, labels) for doc in nlp.pipe(texts)]


def predict_to_storage(
    nlp: Language,
    storage: Storage,
    posts_key: str,
    predictions_key: str,
    *,
    model_version: str,
    labels: Sequence[str] = ("BRAND",),
    batch_size: int = 256,
    start: int = 0,
    stop: int | None = None,
    on_progress: OnProgress | None = None,
) -> int:
    """Stream the posts on lines ``[start, stop)`` of ``posts_key`` (0-based; all by
    default) through the model into the predictions JSONL ``predictions_key``, in this
    process. Returns the number of predictions (one per post, in post order).

    ``on_progress`` is called after a batch when :data:`PROGRESS_EVERY_S` seconds have
    passed since the previous call, and once at the end. Raises :class:`DataError` naming
    the line of a post that cannot be read (nothing is written then) and
    :class:`ner.errors.StorageError` when storage fails. Several processes or machines:
    :func:`ner.parallel.predict_parallel`.
    """
    posts = read_posts(storage, posts_key, start, stop)
    predictions = predict(
        nlp, posts, model_version=model_version, labels=labels, batch_size=batch_size
    )
    if on_progress is not None:
        n_posts = (count_lines(storage, posts_key) if stop is None else stop) - start
        predictions = _reporting(predictions, n_posts, batch_size, on_progress)
    count = write_records(storage, predictions_key, predictions)
    log.info(
        "predicted %d posts from %s lines [%d, %s) into %s",
        count,
        posts_key,
        start,
        "end" if stop is None else stop,
        predictions_key,
    )
    return count


def _reporting(
    predictions: Iterator[Prediction], n_posts: int, batch_size: int, on_progress: OnProgress
) -> Iterator[Prediction]:
    """``predictions`` unchanged, reporting progress as they pass (see
    :func:`predict_to_storage`)."""
    started = time.perf_counter()
    reported = started
    done = 0
    for prediction in predictions:
        yield prediction
        done += 1
        now = time.perf_counter()
        if done % batch_size == 0 and now - reported >= PROGRESS_EVERY_S:
            on_progress(PredictionProgress(done, max(n_posts, done), now - started))
            reported = now
    # at the end every post is counted (blank lines, counted in n_posts, are no posts)
    on_progress(PredictionProgress(done, done, time.perf_counter() - started))
