"""Rehearsal: train on the base pipeline's own entities too, so fine-tuning does not forget.

Fine-tuning the pretrained ``ner`` on brand labels alone teaches it that every token outside
a brand span is *outside* any entity: people, places, dates and works it knew how to tell
apart become "nothing", and what is left of its knowledge drifts towards "capitalised word =
brand". Rehearsal adds, to each training post, the entities the base pipeline itself finds
there (silver spans) wherever they do not overlap a gold span: gold always wins.

``skip_labels`` are base labels not rehearsed. The fast recipe trains brands as the base's
``ORG`` label, so the base's own ``ORG``/``PRODUCT`` spans are skipped (those that are not
gold brands stay *outside*: the gold set is the authority on what a brand is).

Two more sources of posts beside the labels, against the same forgetting: **hard negatives**
(:func:`hard_negatives`: unlabelled posts of other topics in which the base finds entities
but no organisation or product) and a **rehearsal set** (:func:`rehearsal_set`: labelled
posts of a general source, a Label Studio export, trained beside each round's labels).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from spacy.language import Language

from ner import layout
from ner.datasets import dataset_hash
from ner.errors import ConfigError
from ner.labelstudio.export import labelled_export
from ner.records import read_posts
from ner.storage import Storage
from ner.types import Annotation, Rejected, Span

log = logging.getLogger(__name__)

#: Base labels not rehearsed by default: brands are trained as ORG.
DEFAULT_SKIP = ("ORG", "PRODUCT")


@dataclass(frozen=True)
class Rehearsed:
    """Annotations with silver spans added, and how many of each label were added."""

    annotations: tuple[Annotation, ...]
    added: dict[str, int]
    dropped_overlapping: int


def with_base_entities(
    annotations: Sequence[Annotation],
    nlp: Language,
    *,
    skip_labels: Collection[str] = DEFAULT_SKIP,
    batch_size: int = 256,
) -> Rehearsed:
    """``annotations`` with the entities ``nlp`` predicts on their texts added as spans.

    A predicted entity is added unless its label is in ``skip_labels`` or it overlaps one of
    the post's own spans by a character (those are counted in ``dropped_overlapping``).
    The posts keep their order, ids and own spans; ``nlp`` is any pipeline with ``ner``
    (pass it with unneeded pipes excluded: only ``doc.ents`` is read).
    """
    skip = set(skip_labels)
    added: Counter[str] = Counter()
    dropped = 0
    out: list[Annotation] = []
    texts = (a.text for a in annotations)
    for annotation, doc in zip(annotations, nlp.pipe(texts, batch_size=batch_size), strict=True):
        spans = list(annotation.spans)
        for ent in doc.ents:
            if ent.label_ in skip:
                continue
            start, end = ent.start_char, ent.end_char
            if any(s.start < end and start < s.end for s in annotation.spans):
                dropped += 1
                continue
            spans.append(Span(start, end, ent.label_, annotation.text[start:end]))
            added[ent.label_] += 1
        out.append(replace(annotation, spans=tuple(sorted(spans, key=lambda s: s.start))))
    return Rehearsed(tuple(out), dict(added), dropped)


def hard_negatives(
    posts: Sequence[Annotation],
    nlp: Language,
    *,
    brand_labels: Collection[str] = DEFAULT_SKIP,
    limit: int | None = None,
    batch_size: int = 256,
) -> list[Annotation]:
    """Unlabelled posts with capitalised non-brands, as training posts without a brand.

    A post qualifies when ``nlp`` finds at least one entity in it and none labelled with one
    of ``brand_labels`` (so, by the base's judgement, it names people, places, dates … but
    no organisation or product). Its entities are kept as spans (their own labels), so the
    model is trained that these are not brands without forgetting what they are. ``posts``
    are unlabelled (their spans are ignored); at most ``limit`` are returned, in order.
    """
    brand = set(brand_labels)
    out: list[Annotation] = []
    texts = (p.text for p in posts)
    for post, doc in zip(posts, nlp.pipe(texts, batch_size=batch_size), strict=True):
        if limit is not None and len(out) >= limit:
            break
        ents = list(doc.ents)
        if not ents or any(ent.label_ in brand for ent in ents):
            continue
        spans = tuple(
            Span(e.start_char, e.end_char, e.label_, post.text[e.start_char : e.end_char])
            for e in ents
        )
        out.append(replace(post, spans=spans))
    return out


def unlabelled_posts(storage: Storage, exclude: Collection[str], limit: int) -> list[Annotation]:
    """Up to ``limit`` stored posts (the fetch step's batches, ``posts/<stamp>.jsonl``,
    newest batch first) whose id is not in ``exclude`` (the labelled, gold and canary posts),
    each once, as annotations without spans: the pool :func:`hard_negatives` draws from.
    Forgotten posts are left out; a malformed batch raises :class:`ner.errors.DataError`."""
    out: list[Annotation] = []
    seen = set(exclude)
    batches = sorted(k for k in storage.list(layout.POSTS) if layout.is_posts_batch(k))
    for key in reversed(batches):
        for post in read_posts(storage, key):
            if len(out) >= limit:
                return out
            if post.id in seen:
                continue
            seen.add(post.id)
            out.append(Annotation(post_id=post.id, text=post.text, spans=()))
    return out


def posts_from_file(storage: Storage, uri: str, limit: int) -> list[Annotation]:
    """Up to ``limit`` posts of the JSONL file ``uri`` (a local path, or a key or URI under
    ``storage``), as annotations without spans: a pool of posts of other topics for
    :func:`hard_negatives`. A line that is not a valid post is logged by its line number and
    skipped; a missing file raises :class:`ner.errors.InputNotFoundError`."""
    from ner.sources import iter_jsonl, jsonl_lines

    out: list[Annotation] = []
    for number, item in iter_jsonl(jsonl_lines(storage, uri)):
        if len(out) >= limit:
            break
        if isinstance(item, Rejected):
            log.warning("%s, line %d: %s; skipped", uri, number, item.reason)
            continue
        out.append(Annotation(post_id=item.id, text=item.text, spans=()))
    return out


@dataclass(frozen=True)
class RehearsalSet:
    """Labelled posts of a general source, trained beside each round's labels."""

    annotations: tuple[Annotation, ...]
    #: Records of the file that could not be read, each named with its reason.
    rejected: tuple[Rejected, ...]
    #: Posts of the file left out because they are labelled or gold here (ours win).
    left_out: int
    #: :func:`ner.datasets.dataset_hash` of ``annotations``.
    digest: str


def rehearsal_set(
    storage: Storage,
    uri: str,
    *,
    labels: Sequence[str],
    limit: int = 0,
    seed: int = 17,
    exclude: Collection[str] = (),
) -> RehearsalSet:
    """The labelled posts of the Label Studio JSON export ``uri`` (a local file, or a key or
    URI under ``storage``), for rehearsal: a general source trained beside a narrow stream of
    labels, so the model keeps what it knows about other posts (bench/README.md, "Demo
    champion: a rehearsal set").

    Read with :func:`ner.labelstudio.export.parse_export`, offsets checked; a post that
    loses a span (offsets that cannot be repaired, overlaps) is left out whole, named in the
    log and in ``rejected``: half its brands would train as non-brands. Spans of labels other
    than ``labels`` (a general export may have PERSON ...) are ignored. Posts whose id is in
    ``exclude`` (labelled, gold or canary here) are left out; then at most ``limit`` (0 = all)
    are drawn with ``seed``, in file order. Raises :class:`~ner.errors.InputNotFoundError`
    when ``uri`` is neither, and :class:`~ner.errors.ConfigError` when it is not a Label
    Studio JSON export or leaves no post to train on (both permanent: no retry)."""
    where = f"rehearsal set {uri} (train.rehearsal_uri)"
    n_tasks, parsed = labelled_export(storage, uri, labels, what="rehearsal set", where=where)
    for item in parsed.rejected:
        log.warning("rehearsal set %s: %s", uri, item)
    records = parsed.records
    kept = [a for a in records if a.post_id not in exclude]
    left_out = len(records) - len(kept)
    if not kept:
        raise ConfigError(
            f"{where} has no post to train on: {n_tasks} tasks, {len(records)} read, "
            f"{left_out} of them labelled or gold here, "
            f"{len({r.record_id for r in parsed.rejected})} posts not read"
        )
    if 0 < limit < len(kept):
        chosen = sorted(random.Random(seed).sample(range(len(kept)), limit))
        kept = [kept[i] for i in chosen]
    log.info("rehearsal set %s: %d labelled posts", uri, len(kept))
    return RehearsalSet(
        annotations=tuple(kept),
        rejected=tuple(parsed.rejected),
        left_out=left_out,
        digest=dataset_hash(kept),
    )
