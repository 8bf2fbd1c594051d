"""Active learning: choose which posts go to the human annotators next.

One round of selection (:func:`select`) over a pool of unlabelled posts:

1. **Skip** retweets (``RT @user …``: the original is labelled instead), posts already
   labelled, exact duplicates after :func:`normalise` (case, URLs, @handles, ``#`` and
   punctuation ignored), and near-duplicates of each other or of labelled posts
   (:class:`NearDuplicates`: datasketch's MinHash LSH over character shingles, confirmed by
   the exact Jaccard similarity).
2. **Score** the rest by the model's uncertainty (:func:`uncertainty`): a beam search over
   the ``ner`` component's transitions (:func:`entity_probabilities`) gives each candidate
   entity a probability ``p`` (the probability mass of the beam parses that contain it); a
   post's score is ``sum(min(p, 1 - p))`` over its candidate brand entities, the expected
   number of brand decisions that go the wrong way. spaCy's greedy ``ner`` has no scores of
   its own, and its ``beam_parse`` ranks parses by raw summed scores, which a greedy-trained
   model does not calibrate; this beam normalises each step over the valid actions. It
   costs about 5 s per 1,000 tweets on one core (beam width 8), some 2.5x greedy parsing.
3. **Diversify**: take posts from the most uncertain down, skipping one whose shingle
   Jaccard similarity with a post already chosen this round reaches ``diversity``, so one
   round does not spend its budget on one story. An optional ``explore`` share of the budget
   is drawn at random from the rest, which keeps the labelled set from drifting too far from
   the pool.
4. Stop at ``budget`` posts.

Without a model (cold start) or with ``strategy="random"`` the order is a seeded shuffle;
the same skipping rules apply. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import logging
import random
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from datasketch import MinHash, MinHashLSH

from ner import layout
from ner.components import LABEL_FILTER
from ner.errors import DataError, ModelError
from ner.records import read_posts
from ner.storage import Storage
from ner.types import Post

if TYPE_CHECKING:
    from spacy.language import Language

log = logging.getLogger(__name__)

Strategy = Literal["uncertainty", "random"]

_RETWEET = re.compile(r"^\s*RT\s+@\w+", re.IGNORECASE)
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_HANDLE = re.compile(r"@\w+")
_NON_WORD = re.compile(r"[^\w]+")


def is_retweet(text: str) -> bool:
    """True for a classic retweet (``RT @user: …``)."""
    return bool(_RETWEET.match(text))


def normalise(text: str) -> str:
    """Lower-cased words only: no URLs, no @handles, no ``RT`` prefix, no ``#``/punctuation."""
    text = _RETWEET.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _HANDLE.sub(" ", text)
    text = _NON_WORD.sub(" ", text.lower()).replace("_", " ")
    return " ".join(text.split())


def shingles(text: str, size: int = 4) -> frozenset[str]:
    """Character ``size``-grams of :func:`normalise` (the whole text when shorter)."""
    norm = normalise(text)
    if len(norm) <= size:
        return frozenset({norm}) if norm else frozenset()
    return frozenset(norm[i : i + size] for i in range(len(norm) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """``|a & b| / |a | b|`` (0.0 for two empty sets)."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


class NearDuplicates:
    """An index of shingle sets that answers "is this set near one already added?".

    Candidates come from datasketch's :class:`~datasketch.MinHashLSH` over MinHash
    signatures (``bands * rows`` permutations drawn from ``seed`` over the CRC-32 of each
    shingle): two sets become candidates when one band of ``rows`` values agrees, which
    happens with probability ``1 - (1 - J**rows)**bands`` for Jaccard ``J`` (about 0.64 at
    J = 0.5 and 0.9998 at J = 0.8 with the defaults); each candidate is then confirmed with
    the exact Jaccard similarity, so a set is near only when ``jaccard >= threshold``.
    :class:`ValueError` if ``threshold`` is outside [0, 1], ``bands < 2`` or ``rows < 1``.
    """

    def __init__(self, threshold: float, *, bands: int = 16, rows: int = 4, seed: int = 17):
        if bands < 2 or rows < 1:
            raise ValueError(f"need bands >= 2 and rows >= 1, got {bands} and {rows}")
        self.threshold = threshold
        self._empty = MinHash(num_perm=bands * rows, seed=seed, hashfunc=zlib.crc32)
        self._lsh = MinHashLSH(threshold, num_perm=bands * rows, params=(bands, rows))
        self._sets: list[frozenset[str]] = []

    def signature(self, items: frozenset[str]) -> MinHash:
        """The MinHash of a shingle set (the index's permutations, so deterministic)."""
        signature = self._empty.copy()
        signature.update_batch([item.encode("utf-8") for item in items])
        return signature

    def add(self, items: frozenset[str], signature: MinHash) -> None:
        """Index ``items`` (``signature`` from :meth:`signature`); empty sets are not kept."""
        if items:
            self._lsh.insert(len(self._sets), signature, check_duplication=False)
            self._sets.append(items)

    def near(self, items: frozenset[str], signature: MinHash) -> bool:
        """Whether an indexed set has Jaccard similarity >= ``threshold`` with ``items``."""
        if not items:
            return False
        candidates = self._lsh.query(signature)
        return any(jaccard(items, self._sets[key]) >= self.threshold for key in candidates)


@dataclass(frozen=True)
class Selection:
    """What one round of selection picked, and why the others were left.

    ``posts`` are in selection order; ``scores`` holds the uncertainty of every scored post
    (empty for random selection); ``skipped`` counts posts left out by reason
    (``labelled``, ``retweet``, ``duplicate``, ``near_duplicate``, ``empty``) and
    ``similar_in_round`` those passed over for diversity.
    """

    posts: tuple[Post, ...]
    strategy: str
    scores: dict[str, float]
    skipped: dict[str, int]
    similar_in_round: int = 0

    @property
    def ids(self) -> list[str]:
        return [post.id for post in self.posts]


def _skip_reason(
    post: Post, norm: str, known_ids: set[str], seen_norm: set[str], skip_retweets: bool
) -> str | None:
    """Why ``post`` (``norm`` its :func:`normalise`) is left out before the near-duplicate
    check, or None to keep going."""
    if post.id in known_ids:
        return "labelled"
    if skip_retweets and is_retweet(post.text):
        return "retweet"
    if not norm:
        return "empty"
    return "duplicate" if norm in seen_norm else None


def filter_pool(
    posts: Iterable[Post],
    *,
    labelled_ids: Iterable[str] = (),
    labelled_texts: Iterable[str] = (),
    near_duplicate: float = 0.8,
    skip_retweets: bool = True,
    seed: int = 17,
) -> tuple[list[Post], dict[str, int]]:
    """The posts worth labelling, in input order, and the count skipped per reason.

    The first of a group of (near-)duplicates is kept; a post near a labelled text is
    skipped. ``near_duplicate`` is the Jaccard similarity of character shingles from which
    two posts count as the same (1.0 keeps everything but exact duplicates).
    """
    index = NearDuplicates(near_duplicate, seed=seed) if near_duplicate < 1.0 else None
    known_ids = set(labelled_ids)
    seen_norm: set[str] = set()
    for text in labelled_texts:
        seen_norm.add(normalise(text))
        if index is not None:
            items = shingles(text)
            index.add(items, index.signature(items))
    skipped: dict[str, int] = defaultdict(int)
    kept: list[Post] = []
    for post in posts:
        norm = normalise(post.text)
        reason = _skip_reason(post, norm, known_ids, seen_norm, skip_retweets)
        if reason is None and index is not None:
            items = shingles(post.text)
            signature = index.signature(items)
            if index.near(items, signature):
                reason = "near_duplicate"
            else:
                index.add(items, signature)
        if reason is not None:
            skipped[reason] += 1
            continue
        seen_norm.add(norm)
        kept.append(post)
    return kept, dict(skipped)


def _label_map(nlp: Language, labels: Sequence[str]) -> dict[str, str]:
    """How the ``ner`` labels map to ours, read from the pipeline's label filter."""
    mapping: dict[str, str] = {label: label for label in labels}
    if LABEL_FILTER in nlp.pipe_names:
        component = nlp.get_pipe(LABEL_FILTER)
        extra: Mapping[str, str] = getattr(component, "mapping", {})
        mapping.update({k: v for k, v in extra.items() if v in labels})
    return mapping


_KINDS = "BILUO"


@dataclass(frozen=True)
class _Moves:
    """The ``ner`` transition system's actions as arrays: kind (index into ``BILUO``) and
    label of every class, so validity masks can be built with numpy."""

    names: tuple[str, ...]
    kinds: np.ndarray
    labels: tuple[str, ...]

    @classmethod
    def of(cls, moves: object) -> _Moves:
        n = int(getattr(moves, "n_moves"))  # noqa: B009 - a Cython attribute
        names = tuple(str(moves.get_class_name(i)) for i in range(n))  # type: ignore[attr-defined]
        kinds = np.array([_KINDS.index(name[0]) if name[0] in _KINDS else -1 for name in names])
        labels = tuple(name[2:] if "-" in name else "" for name in names)
        return cls(names, kinds, labels)

    def valid(self, open_label: str | None, last_token: bool, on_space: bool) -> np.ndarray:
        """Which actions spaCy's BILUO system allows here (docs without preset entities).

        Outside an entity: ``B-x`` (not on the last token), ``U-x`` (neither on whitespace) or
        ``O``; inside one labelled ``x``: ``I-x`` (not on the last token) or ``L-x``.
        """
        labelled = np.array([bool(label) for label in self.labels])
        if open_label is None:
            mask = (self.kinds == 4) | (labelled & (self.kinds == 3) & (not on_space))
            if not last_token and not on_space:
                mask |= labelled & (self.kinds == 0)
            return mask
        same = np.array([label == open_label for label in self.labels])
        mask = same & (self.kinds == 2)
        if not last_token:
            mask |= same & (self.kinds == 1)
        return mask


@dataclass(frozen=True)
class _Hypothesis:
    """One parse in the beam: its log-probability, parser state and entities so far."""

    logp: float
    state: Any
    open_label: str | None = None
    open_start: int = -1
    ents: tuple[tuple[int, int, str], ...] = ()


def _advance(hyp: _Hypothesis, action: int, moves: Any, table: _Moves, logp: float) -> _Hypothesis:
    """``hyp`` after ``action``: a copied state with the transition applied."""
    position = int(hyp.state.B(0))
    state = hyp.state.copy()
    moves.apply_transition(state, table.names[action])
    kind, label = _KINDS[int(table.kinds[action])], table.labels[action]
    if kind == "B":
        return _Hypothesis(logp, state, label, position, hyp.ents)
    if kind == "I":
        return _Hypothesis(logp, state, hyp.open_label, hyp.open_start, hyp.ents)
    if kind == "L":
        return _Hypothesis(
            logp, state, None, -1, (*hyp.ents, (hyp.open_start, position + 1, label))
        )
    if kind == "U":
        return _Hypothesis(logp, state, None, -1, (*hyp.ents, (position, position + 1, label)))
    return _Hypothesis(logp, state, None, -1, hyp.ents)


def _beam_search(
    ner: Any, docs: Sequence[Any], table: _Moves, beam_width: int, density: float = 9.2
) -> list[list[_Hypothesis]]:
    """The ``beam_width`` most probable parses of each doc, with normalised log-probabilities.

    spaCy's own ``beam_parse`` ranks parses by summed raw scores, which is meaningless for a
    pipeline trained with the greedy objective (its scores are only normalised per step over
    the valid actions); here every step's scores go through a softmax over the valid actions
    first, so a parse's score is the log of the product of its step probabilities.
    Parses less likely than the best by more than ``density`` (natural log; 9.2 is a
    factor of 10,000) are dropped early: they could not change an entity's probability.
    """
    moves = ner.moves
    step_model = ner.model.predict(list(docs))
    spaces = [[token.is_space for token in doc] for doc in docs]
    beams = [[_Hypothesis(0.0, state)] for state in moves.init_batch(list(docs))]
    masks: dict[tuple[str | None, bool, bool], np.ndarray] = {}
    try:
        while True:
            active = [
                (d, hyp) for d, beam in enumerate(beams) for hyp in beam if not hyp.state.is_final()
            ]
            if not active:
                break
            total = _step_logp(step_model, active, table, masks, spaces)
            rows_of: dict[int, list[int]] = defaultdict(list)
            for row, (d, _) in enumerate(active):
                rows_of[d].append(row)
            for d, rows in rows_of.items():
                step = _Step(active, total, rows, moves, table)
                beams[d] = _next_beam(beams[d], step, beam_width, density)
    finally:
        step_model.clear_memory()
    return beams


def _step_logp(
    step_model: Any,
    active: Sequence[tuple[int, _Hypothesis]],
    table: _Moves,
    masks: dict[tuple[str | None, bool, bool], np.ndarray],
    spaces: Sequence[Sequence[bool]],
) -> np.ndarray:
    """``[row, action]``: the log-probability of hypothesis ``active[row]`` followed by
    ``action``, softmax-normalised over the valid actions (invalid ones are ``-inf``)."""
    scores = np.asarray(step_model.predict([hyp.state for _, hyp in active]), dtype="f8")
    valid = np.empty(scores.shape, dtype=bool)
    for row, (d, hyp) in enumerate(active):
        position = int(hyp.state.B(0))
        key = (hyp.open_label, hyp.state.buffer_length() < 2, spaces[d][position])
        if key not in masks:
            masks[key] = table.valid(*key)
        valid[row] = masks[key]
    scores[~valid] = -np.inf
    top = scores.max(axis=1, keepdims=True)
    logp = scores - top - np.log(np.exp(scores - top).sum(axis=1, keepdims=True))
    return logp + np.array([hyp.logp for _, hyp in active])[:, None]


@dataclass(frozen=True)
class _Step:
    """One step of the beam search over a batch: the unfinished hypotheses, their
    extensions' log-probabilities, and the rows of one doc."""

    active: Sequence[tuple[int, _Hypothesis]]
    total: np.ndarray
    rows: list[int]
    moves: Any
    table: _Moves


def _next_beam(
    beam: list[_Hypothesis], step: _Step, beam_width: int, density: float
) -> list[_Hypothesis]:
    """The ``beam_width`` best of the doc's finished hypotheses and one-action extensions
    of its unfinished ones, dropping those below the best by more than ``density``."""
    finished = [hyp for hyp in beam if hyp.state.is_final()]
    flat = step.total[step.rows].ravel()
    k = min(beam_width, flat.size)
    best = np.argpartition(-flat, k - 1)[:k]
    best = best[np.isfinite(flat[best])]
    best = best[np.argsort(-flat[best], kind="stable")]
    n_classes = step.total.shape[1]
    options = [(float(flat[i]), step.rows[i // n_classes], int(i % n_classes)) for i in best]
    options += [(hyp.logp, -1, -1) for hyp in finished]
    options.sort(key=lambda option: -option[0])
    floor = options[0][0] - density
    kept: list[_Hypothesis] = []
    finished_iter = iter(finished)
    for score, row, action in options[:beam_width]:
        if score < floor:
            break
        if row < 0:
            kept.append(next(finished_iter))
        else:
            kept.append(_advance(step.active[row][1], action, step.moves, step.table, score))
    return kept


def entity_probabilities(
    nlp: Language,
    texts: Sequence[str],
    labels: Sequence[str] = ("BRAND",),
    *,
    beam_width: int = 8,
    batch_size: int = 64,
) -> list[dict[tuple[int, int, str], float]]:
    """For each text, ``{(start_char, end_char, label): probability}`` of every entity with
    one of ``labels`` (after the label filter's mapping) among the ``ner`` beam's parses.

    A parse's probability is the product of its per-step action probabilities, renormalised
    over the parses in the beam; an entity's is the sum over the parses that contain it.
    """
    if "ner" not in nlp.pipe_names:
        raise ModelError("uncertainty needs a pipeline with a statistical 'ner' component")
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    ner = nlp.get_pipe("ner")
    if not hasattr(ner, "moves") or not hasattr(ner, "model"):
        raise ModelError("the 'ner' component is not a transition-based entity recogniser")
    table = _Moves.of(ner.moves)
    mapping = _label_map(nlp, labels)
    before = nlp.pipe_names[: nlp.pipe_names.index("ner")]
    feeds_ner = {
        name for name in before if "ner" in getattr(nlp.get_pipe(name), "listening_components", [])
    }
    disabled = [name for name in nlp.pipe_names if name not in feeds_ner]
    out: list[dict[tuple[int, int, str], float]] = []
    with nlp.select_pipes(disable=disabled):
        for start in range(0, len(texts), batch_size):
            docs = list(nlp.pipe(texts[start : start + batch_size]))
            nonempty = [doc for doc in docs if len(doc)]
            beams = iter(_beam_search(ner, nonempty, table, beam_width) if nonempty else [])
            for doc in docs:
                probs: dict[tuple[int, int, str], float] = defaultdict(float)
                if len(doc):
                    beam = next(beams)
                    logps = np.array([hyp.logp for hyp in beam])
                    weights = np.exp(logps - logps.max())
                    weights /= weights.sum()
                    for weight, hyp in zip(weights, beam, strict=True):
                        for first, last, label in hyp.ents:
                            ours = mapping.get(label)
                            if ours is None:
                                continue
                            span = doc[first:last]
                            probs[(span.start_char, span.end_char, ours)] += float(weight)
                out.append({k: min(1.0, v) for k, v in probs.items()})
    return out


def uncertainty(probabilities: Mapping[tuple[int, int, str], float]) -> float:
    """``sum(min(p, 1 - p))``: the expected number of entity decisions that go wrong."""
    return float(sum(min(p, 1.0 - p) for p in probabilities.values()))


def _diverse_top(
    pool: Sequence[Post], ranked: Sequence[int], count: int, diversity: float
) -> tuple[list[int], int]:
    """The first ``count`` indices of ``ranked`` whose posts are not too similar (shingle
    Jaccard >= ``diversity``) to one taken before; and how many were passed over."""
    chosen_idx: list[int] = []
    chosen_sets: list[frozenset[str]] = []
    passed_over = 0
    for i in ranked:
        if len(chosen_idx) >= count:
            break
        items = shingles(pool[i].text)
        if diversity < 1.0 and any(jaccard(items, other) >= diversity for other in chosen_sets):
            passed_over += 1
            continue
        chosen_idx.append(i)
        chosen_sets.append(items)
    return chosen_idx, passed_over


def select(
    posts: Iterable[Post],
    budget: int,
    *,
    nlp: Language | None = None,
    strategy: Strategy = "uncertainty",
    labels: Sequence[str] = ("BRAND",),
    labelled_ids: Iterable[str] = (),
    labelled_texts: Iterable[str] = (),
    near_duplicate: float = 0.8,
    diversity: float = 0.5,
    explore: float = 0.0,
    beam_width: int = 8,
    seed: int = 17,
) -> Selection:
    """Choose up to ``budget`` posts for the next labelling round (see the module docstring).

    ``nlp`` is the current model; without one, selection is random. ``diversity`` is the
    shingle Jaccard similarity from which a post is too close to one already chosen this
    round (1.0 turns the check off); ``explore`` is the share of the budget drawn at random.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if not 0.0 <= explore <= 1.0:
        raise ValueError(f"explore must be within [0, 1], got {explore}")
    pool, skipped = filter_pool(
        posts,
        labelled_ids=labelled_ids,
        labelled_texts=labelled_texts,
        near_duplicate=near_duplicate,
        seed=seed,
    )
    rng = random.Random(seed)
    order = list(range(len(pool)))
    rng.shuffle(order)
    if nlp is None or strategy == "random":
        chosen = [pool[i] for i in order[:budget]]
        used = "random"
        return Selection(tuple(chosen), used, {}, skipped)
    probabilities = entity_probabilities(
        nlp, [post.text for post in pool], labels, beam_width=beam_width
    )
    scores = {post.id: uncertainty(probs) for post, probs in zip(pool, probabilities, strict=True)}
    rank = {index: position for position, index in enumerate(order)}
    ranked = sorted(range(len(pool)), key=lambda i: (-scores[pool[i].id], rank[i]))
    n_explore = round(budget * explore)
    chosen_idx, passed_over = _diverse_top(pool, ranked, budget - n_explore, diversity)
    taken = set(chosen_idx)
    rest = [i for i in order if i not in taken]
    chosen_idx.extend(rest[: budget - len(chosen_idx)])
    log.info(
        "selected %d of %d candidate posts (%s); skipped %s; %d passed over for diversity",
        len(chosen_idx),
        len(pool),
        strategy,
        skipped,
        passed_over,
    )
    return Selection(tuple(pool[i] for i in chosen_idx), strategy, scores, skipped, passed_over)


# --- one batch in storage ----------------------------------------------------------------
def has_scorer(nlp: Language | None) -> bool:
    """Whether ``nlp`` can score uncertainty (a statistical transition-based ``ner``)."""
    if nlp is None or "ner" not in nlp.pipe_names:
        return False
    return hasattr(nlp.get_pipe("ner"), "moves")


def earlier_selections(storage: Storage, *, exclude: str | None = None) -> set[str]:
    """Ids of every post chosen by earlier selections (``selections/*.json``), so a post
    sent to the annotators once is not chosen again; ``exclude`` skips one key."""
    ids: set[str] = set()
    for key in storage.list(layout.SELECTIONS):
        if layout.is_selection(key) and key != exclude:
            ids.update(str(i) for i in storage.read_json(key).get("post_ids", []))
    return ids


@dataclass(frozen=True)
class BatchSelection:
    """The record of one batch's selection, as stored at ``selections/<stamp>.json``.

    ``post_ids`` in selection order; ``uncertainty`` of each chosen post (empty for a
    random choice); ``skipped`` counts by reason; ``n_candidates`` posts in the batch.
    """

    posts_key: str
    budget: int
    strategy: str
    post_ids: tuple[str, ...]
    uncertainty: dict[str, float]
    skipped: dict[str, int]
    similar_in_round: int
    n_candidates: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored (``post_ids`` as a list)."""
        return {**self.__dict__, "post_ids": list(self.post_ids)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchSelection:
        """Read a stored record; :class:`DataError` naming the posts key if malformed."""
        try:
            return cls(
                posts_key=str(data["posts_key"]),
                budget=int(data["budget"]),
                strategy=str(data["strategy"]),
                post_ids=tuple(str(i) for i in data["post_ids"]),
                uncertainty={str(k): float(v) for k, v in data["uncertainty"].items()},
                skipped={str(k): int(v) for k, v in data["skipped"].items()},
                similar_in_round=int(data.get("similar_in_round", 0)),
                n_candidates=int(data["n_candidates"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(data.get("posts_key"), f"malformed selection record: {exc!r}") from exc


def select_batch(
    storage: Storage,
    posts_key: str,
    key: str,
    budget: int,
    *,
    nlp: Language | None,
    labels: Sequence[str] = ("BRAND",),
    diversity: float = 0.5,
    explore: float = 0.0,
    seed: int = 17,
) -> BatchSelection:
    """Choose up to ``budget`` posts of the stored batch ``posts_key`` for the annotators
    and record the choice at ``key`` (:class:`BatchSelection`); returns that record.

    Posts chosen by earlier selections are skipped. A model that cannot score uncertainty
    (the cold-start gazetteer) gives a random choice, said so in ``strategy``. The record is
    what the send step reads; written once, it is reused as it is when the batch is sent
    again. :class:`DataError` if a post of the batch or a stored record is unreadable.
    """
    if storage.exists(key):
        return BatchSelection.from_dict(storage.read_json(key))
    posts = list(read_posts(storage, posts_key))
    scorer = nlp if has_scorer(nlp) else None
    if nlp is not None and scorer is None:
        log.info("model has no statistical ner to score uncertainty: random selection")
    chosen = select(
        posts,
        budget,
        nlp=scorer,
        strategy="uncertainty" if scorer is not None else "random",
        labels=labels,
        labelled_ids=earlier_selections(storage, exclude=key),
        diversity=diversity,
        explore=explore,
        seed=seed,
    )
    record = BatchSelection(
        posts_key=posts_key,
        budget=budget,
        strategy="uncertainty" if scorer is not None else "random",
        post_ids=tuple(chosen.ids),
        uncertainty={i: chosen.scores[i] for i in chosen.ids if i in chosen.scores},
        skipped=chosen.skipped,
        similar_in_round=chosen.similar_in_round,
        n_candidates=len(posts),
    )
    storage.write_json(key, record.to_dict())
    return record
