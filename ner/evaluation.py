"""Scoring predicted spans against gold spans.

Pure Python: only :func:`score_model`, which runs a spaCy pipeline, imports spaCy (lazily).

The headline is the CoNLL convention: a predicted span is correct only when its start, end
and label all equal a gold span's. From the per-post counts :func:`evaluate` builds

* micro precision / recall / F1 over every span of every post (the headline numbers);
* a per-label table (tp, fp, fn, precision, recall, F1, support);
* overlap ("partial") precision / recall / F1: a prediction is correct when it overlaps a
  gold span of the same label;
* post-level accuracy: the share of posts whose predicted span set equals the gold span set
  exactly (a post with no gold and no prediction counts as correct);
* a confusion summary that sorts every span that is not an exact match into one kind.

Scope. The evaluated posts are exactly the keys of ``gold``. A gold post with no entry in
``predicted`` predicted nothing; predictions for posts that are not in ``gold`` are ignored
and counted in :attr:`EvalReport.n_ignored_posts`. Within a post, spans are compared by
``(start, end, label)``; a duplicate of the same triple is counted once.

Labels. The per-label table lists ``labels`` in the given order, then any other label met in
the gold or predicted spans (sorted), so a model that emits an unexpected label is charged
for it and the per-label counts always add up to the micro counts.

Zero-division convention (as scikit-learn's ``zero_division=0`` and seqeval's default):
precision is 0.0 when nothing was predicted, recall is 0.0 when there is no gold span, and F1
is 0.0 when precision + recall is 0. An empty evaluation therefore scores 0.0 everywhere,
including post accuracy, so it can never pass a promotion threshold by accident.

Matching. Spans are paired one to one inside a post, in this order; each gold and each
predicted span takes part in at most one pair:

1. ``correct``: same start, end and label (exact match);
2. ``boundary``: same label, overlapping, different offsets;
3. ``label``: same offsets, different label;
4. ``label_boundary``: overlapping, different label and different offsets;
5. what is left is ``missed`` (an unpaired gold span) or ``spurious`` (an unpaired
   prediction). A gold span counts as missed when no prediction overlaps it, or when every
   prediction that overlaps it was already paired with another gold span.

Steps 2 and 4 pair as many spans as possible (a maximum bipartite matching), trying the
candidates with the largest overlap first, so the result does not depend on span order.
The overlap scores use exactly the pairs of steps 1 and 2: ``overlap_tp = tp + boundary``.
Hence ``correct + boundary + label + label_boundary + missed == n_gold`` and
``correct + boundary + label + label_boundary + spurious == n_pred``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ner.errors import DataError
from ner.types import Annotation, Post, Span

if TYPE_CHECKING:
    from spacy.language import Language

ERROR_KINDS: tuple[str, ...] = ("missed", "spurious", "boundary", "label", "label_boundary")
"""The kinds :func:`errors` reports, in the order they are listed."""

_METRIC_UNSAFE = re.compile(r"[^0-9A-Za-z_\-./ ]")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


#: F1 scores closer than this are one score: a registry tag kept F1 to 6 places until
#: 2026-12-05, so a champion's F1 read from its tag and the same model's scored afresh
#: differed in the 7th place, and an identical copy "beat" its champion (trial AE).
F1_TIE = 5e-7


def beats(challenger_f1: float, champion_f1: float, margin: float = 0.0) -> bool:
    """Whether ``challenger_f1`` exceeds ``champion_f1 + margin``, a difference within
    :data:`F1_TIE` being a tie (not a win)."""
    return challenger_f1 > champion_f1 + margin + F1_TIE


def below(f1: float, floor: float) -> bool:
    """Whether ``f1`` is under ``floor`` (the cold start's F1, say), a difference within
    :data:`F1_TIE` being a tie (not below): :func:`beats`'s rule seen from the other side."""
    return f1 < floor - F1_TIE


def metric_name(name: str) -> str:
    """``name`` with every character MLflow refuses in a metric name replaced by ``_``."""
    return _METRIC_UNSAFE.sub("_", name)


@dataclass(frozen=True, slots=True)
class LabelScores:
    """Exact-match scores of one label. ``support`` is the number of gold spans."""

    label: str
    tp: int
    fp: int
    fn: int

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _f1(self.precision, self.recall)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }


@dataclass(frozen=True, slots=True)
class Confusion:
    """How the spans that are not exact matches went wrong (see the module docstring)."""

    correct: int = 0
    boundary: int = 0
    label: int = 0
    label_boundary: int = 0
    missed: int = 0
    spurious: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "correct": self.correct,
            "boundary": self.boundary,
            "label": self.label,
            "label_boundary": self.label_boundary,
            "missed": self.missed,
            "spurious": self.spurious,
        }


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Everything :func:`evaluate` measured. Ratios follow the module's 0/0 convention."""

    n_posts: int
    n_gold: int
    n_pred: int
    n_ignored_posts: int
    per_label: tuple[LabelScores, ...]
    overlap_tp: int
    posts_correct: int
    confusion: Confusion = field(default_factory=Confusion)
    error_items: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)
    """Every error, as :func:`errors` lists them (for a confusion artifact)."""

    # Micro (headline) exact-match scores ----------------------------------------------------
    @property
    def tp(self) -> int:
        return sum(s.tp for s in self.per_label)

    @property
    def fp(self) -> int:
        return sum(s.fp for s in self.per_label)

    @property
    def fn(self) -> int:
        return sum(s.fn for s in self.per_label)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.n_pred)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.n_gold)

    @property
    def f1(self) -> float:
        return _f1(self.precision, self.recall)

    # Overlap matching and post accuracy ------------------------------------------------------
    @property
    def overlap_precision(self) -> float:
        return _ratio(self.overlap_tp, self.n_pred)

    @property
    def overlap_recall(self) -> float:
        return _ratio(self.overlap_tp, self.n_gold)

    @property
    def overlap_f1(self) -> float:
        return _f1(self.overlap_precision, self.overlap_recall)

    @property
    def post_accuracy(self) -> float:
        return _ratio(self.posts_correct, self.n_posts)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.per_label)

    def label_scores(self, label: str) -> LabelScores:
        """The row of ``label``; :class:`KeyError` if the report has no such label."""
        for scores in self.per_label:
            if scores.label == label:
                return scores
        raise KeyError(label)

    def per_label_dict(self) -> dict[str, dict[str, float]]:
        """``{label: {precision, recall, f1, support, tp, fp, fn}}`` (for plots)."""
        return {
            s.label: {k: float(v) for k, v in s.to_dict().items() if k != "label"}
            for s in self.per_label
        }

    def errors_list(self) -> list[dict[str, Any]]:
        """The errors found (see :func:`errors`), JSON-ready."""
        return [dict(item) for item in self.error_items]

    # Export --------------------------------------------------------------------------------
    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{name: value}`` for ``mlflow.log_metrics``.

        Names: ``precision``, ``recall``, ``f1``, ``overlap_precision``, ``overlap_recall``,
        ``overlap_f1``, ``post_accuracy``, counts (``n_posts``, ``n_gold``, ``n_pred``,
        ``n_ignored_posts``, ``tp``, ``fp``, ``fn``, ``posts_correct``), the confusion kinds
        (``missed``, ``spurious``, ``boundary_errors``, ``label_errors``,
        ``label_boundary_errors``) and, per label, ``{LABEL}_precision``, ``{LABEL}_recall``,
        ``{LABEL}_f1``, ``{LABEL}_support``, all preceded by ``prefix``. Characters MLflow does
        not allow are replaced by ``_``.
        """
        values: dict[str, float] = {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "overlap_precision": self.overlap_precision,
            "overlap_recall": self.overlap_recall,
            "overlap_f1": self.overlap_f1,
            "post_accuracy": self.post_accuracy,
            "n_posts": self.n_posts,
            "n_gold": self.n_gold,
            "n_pred": self.n_pred,
            "n_ignored_posts": self.n_ignored_posts,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "posts_correct": self.posts_correct,
            "missed": self.confusion.missed,
            "spurious": self.confusion.spurious,
            "boundary_errors": self.confusion.boundary,
            "label_errors": self.confusion.label,
            "label_boundary_errors": self.confusion.label_boundary,
        }
        for scores in self.per_label:
            for stat in ("precision", "recall", "f1", "support"):
                name = f"{scores.label}_{stat}"
                if name in values:
                    raise ValueError(f"label {scores.label!r} makes metric {name!r} ambiguous")
                values[name] = float(getattr(scores, stat))
        return {metric_name(prefix + name): float(value) for name, value in values.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: micro, overlap, post accuracy, counts, labels, confusion."""
        return {
            "n_posts": self.n_posts,
            "n_gold": self.n_gold,
            "n_pred": self.n_pred,
            "n_ignored_posts": self.n_ignored_posts,
            "micro": {
                "tp": self.tp,
                "fp": self.fp,
                "fn": self.fn,
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
            },
            "overlap": {
                "tp": self.overlap_tp,
                "precision": self.overlap_precision,
                "recall": self.overlap_recall,
                "f1": self.overlap_f1,
            },
            "post_accuracy": self.post_accuracy,
            "posts_correct": self.posts_correct,
            "per_label": [scores.to_dict() for scores in self.per_label],
            "confusion": self.confusion.to_dict(),
        }

    def format_table(self, digits: int = 3) -> str:
        """A Markdown table of per-label precision/recall/F1/support plus the micro row."""
        rows = [
            "| label | precision | recall | f1 | support |",
            "|---|---:|---:|---:|---:|",
        ]

        def row(name: str, p: float, r: float, f: float, support: int) -> str:
            return f"| {name} | {p:.{digits}f} | {r:.{digits}f} | {f:.{digits}f} | {support} |"

        for s in self.per_label:
            rows.append(row(s.label, s.precision, s.recall, s.f1, s.support))
        rows.append(row("micro", self.precision, self.recall, self.f1, self.n_gold))
        return "\n".join(rows)

    def format_confusion(self) -> str:
        """A Markdown table of how the spans went: each kind of :data:`ERROR_KINDS` and the
        exact matches, counted over gold and predicted spans, plus overlap P/R/F1."""
        counts = self.confusion.to_dict()
        meaning = {
            "correct": "exact match (start, end and label)",
            "missed": "gold span left without any prediction paired to it",
            "spurious": "prediction left without any gold span paired to it",
            "boundary": "same label, overlapping, other offsets",
            "label": "same offsets, other label",
            "label_boundary": "overlapping, other label and offsets",
        }
        rows = ["| kind | spans | meaning |", "|---|---:|---|"]
        for kind in ("correct", *ERROR_KINDS):
            rows.append(f"| {kind} | {counts[kind]} | {meaning[kind]} |")
        rows.append(
            f"\nOverlap (correct + boundary): precision {self.overlap_precision:.3f}, "
            f"recall {self.overlap_recall:.3f}, F1 {self.overlap_f1:.3f}; "
            f"{self.n_gold} gold spans, {self.n_pred} predicted, {self.n_posts} posts."
        )
        return "\n".join(rows)


# Per-post comparison ---------------------------------------------------------------------------


def _overlap(a: Span, b: Span) -> int:
    return max(0, min(a.end, b.end) - max(a.start, b.start))


def _dedupe(spans: Iterable[Span]) -> list[Span]:
    """Spans in (start, end, label) order, one per triple."""
    unique: dict[tuple[int, int, str], Span] = {}
    for span in spans:
        unique.setdefault(span.key, span)
    return [unique[key] for key in sorted(unique)]


def _max_matching(
    golds: Sequence[Span], preds: Sequence[Span], allowed: Callable[[Span, Span], bool]
) -> list[tuple[Span, Span]]:
    """A maximum one-to-one pairing of ``allowed`` (gold, pred) pairs (Kuhn's algorithm).

    Each prediction tries its gold candidates largest overlap first, then by position, so
    the pairing is deterministic and prefers the closest boundaries.
    """
    candidates: list[list[int]] = []
    for pred in preds:
        options = [i for i, gold in enumerate(golds) if allowed(gold, pred)]
        options.sort(key=lambda i: (-_overlap(golds[i], pred), golds[i].key))
        candidates.append(options)
    owner: dict[int, int] = {}  # gold index -> pred index

    def augment(p: int, seen: set[int]) -> bool:
        for g in candidates[p]:
            if g in seen:
                continue
            seen.add(g)
            if g not in owner or augment(owner[g], seen):
                owner[g] = p
                return True
        return False

    for p in range(len(preds)):
        augment(p, set())
    return sorted(((golds[g], preds[p]) for g, p in owner.items()), key=lambda gp: gp[0].key)


@dataclass(slots=True)
class _PostResult:
    """Pairs and leftovers of one post, by kind."""

    gold: list[Span]
    pred: list[Span]
    pairs: dict[str, list[tuple[Span, Span]]]
    missed: list[Span]
    spurious: list[Span]


def _compare(gold_spans: Iterable[Span], pred_spans: Iterable[Span]) -> _PostResult:
    gold = _dedupe(gold_spans)
    pred = _dedupe(pred_spans)
    free_gold = list(gold)
    free_pred = list(pred)
    steps: list[tuple[str, Callable[[Span, Span], bool]]] = [
        ("correct", lambda g, p: g.key == p.key),
        ("boundary", lambda g, p: g.label == p.label and _overlap(g, p) > 0),
        ("label", lambda g, p: (g.start, g.end) == (p.start, p.end)),
        ("label_boundary", lambda g, p: _overlap(g, p) > 0),
    ]
    pairs: dict[str, list[tuple[Span, Span]]] = {}
    for kind, allowed in steps:
        matched = _max_matching(free_gold, free_pred, allowed)
        pairs[kind] = matched
        used_gold = {id(g) for g, _ in matched}
        used_pred = {id(p) for _, p in matched}
        free_gold = [g for g in free_gold if id(g) not in used_gold]
        free_pred = [p for p in free_pred if id(p) not in used_pred]
    return _PostResult(gold, pred, pairs, free_gold, free_pred)


def evaluate(
    gold: Mapping[str, Sequence[Span]],
    predicted: Mapping[str, Sequence[Span]],
    labels: Sequence[str] = (),
) -> EvalReport:
    """Score ``predicted`` against ``gold``, both keyed by post id (see the module docstring).

    ``labels`` fixes the order of the per-label table and makes a label appear in it even
    when it has no gold and no predicted span.
    """
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    n_gold = n_pred = posts_correct = 0
    seen_labels: set[str] = set()
    found: list[dict[str, Any]] = []
    for post_id, gold_spans in gold.items():
        result = _compare(gold_spans, predicted.get(post_id, ()))
        found.extend(_post_errors(post_id, result))
        n_gold += len(result.gold)
        n_pred += len(result.pred)
        seen_labels.update(s.label for s in result.gold)
        seen_labels.update(s.label for s in result.pred)
        exact = result.pairs["correct"]
        for g, _ in exact:
            tp[g.label] += 1
        exact_gold = {id(g) for g, _ in exact}
        exact_pred = {id(p) for _, p in exact}
        fn.update(g.label for g in result.gold if id(g) not in exact_gold)
        fp.update(p.label for p in result.pred if id(p) not in exact_pred)
        for kind, pairs in result.pairs.items():
            kinds[kind] += len(pairs)
        kinds["missed"] += len(result.missed)
        kinds["spurious"] += len(result.spurious)
        if len(exact) == len(result.gold) == len(result.pred):
            posts_correct += 1
    ordered = list(dict.fromkeys(labels))
    ordered += sorted(seen_labels - set(ordered))
    return EvalReport(
        n_posts=len(gold),
        n_gold=n_gold,
        n_pred=n_pred,
        n_ignored_posts=sum(1 for post_id in predicted if post_id not in gold),
        per_label=tuple(LabelScores(lab, tp[lab], fp[lab], fn[lab]) for lab in ordered),
        overlap_tp=kinds["correct"] + kinds["boundary"],
        posts_correct=posts_correct,
        confusion=Confusion(
            correct=kinds["correct"],
            boundary=kinds["boundary"],
            label=kinds["label"],
            label_boundary=kinds["label_boundary"],
            missed=kinds["missed"],
            spurious=kinds["spurious"],
        ),
        error_items=tuple(_sorted_errors(found)),
    )


def _span_info(span: Span) -> dict[str, Any]:
    return {"start": span.start, "end": span.end, "label": span.label, "text": span.text}


def _post_errors(post_id: str, result: _PostResult) -> list[dict[str, Any]]:
    items: list[tuple[str, Span | None, Span | None]] = [("missed", g, None) for g in result.missed]
    items += [("spurious", None, p) for p in result.spurious]
    for kind in ("boundary", "label", "label_boundary"):
        items += [(kind, g, p) for g, p in result.pairs[kind]]
    return [
        {
            "post_id": post_id,
            "kind": kind,
            "gold": None if g is None else _span_info(g),
            "pred": None if p is None else _span_info(p),
        }
        for kind, g, p in items
    ]


def _sorted_errors(found: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {kind: i for i, kind in enumerate(ERROR_KINDS)}

    def sort_key(item: dict[str, Any]) -> tuple[str, int, int, int]:
        span = item["gold"] or item["pred"]
        return (item["post_id"], order[item["kind"]], span["start"], span["end"])

    return sorted(found, key=sort_key)


def errors(
    gold: Mapping[str, Sequence[Span]], predicted: Mapping[str, Sequence[Span]]
) -> list[dict[str, Any]]:
    """Every non-exact span of the gold posts, one dict per error, for a confusion artifact.

    Each item has ``post_id``, ``kind`` (one of :data:`ERROR_KINDS`), ``gold`` and ``pred``
    (``{start, end, label, text}`` or ``None``). Ordered by post id, then kind, then offsets.
    The pairing is the one :func:`evaluate` uses, so the counts agree with its confusion
    (and the list equals :meth:`EvalReport.errors_list`).
    """
    found: list[dict[str, Any]] = []
    for post_id in gold:
        found.extend(_post_errors(post_id, _compare(gold[post_id], predicted.get(post_id, ()))))
    return _sorted_errors(found)


class _HasSpans(Protocol):
    @property
    def post_id(self) -> str: ...

    @property
    def spans(self) -> tuple[Span, ...]: ...


def spans_by_post(records: Iterable[_HasSpans]) -> dict[str, tuple[Span, ...]]:
    """``{post_id: spans}`` from annotations or predictions, for :func:`evaluate`.

    Raises :class:`DataError` naming the post when a post id appears twice, since it is not
    clear which version should be scored.
    """
    out: dict[str, tuple[Span, ...]] = {}
    for record in records:
        if record.post_id in out:
            raise DataError(record.post_id, "post appears more than once")
        out[record.post_id] = tuple(record.spans)
    return out


def score_model(
    nlp: Language,
    gold: Iterable[Annotation],
    labels: Sequence[str] = ("BRAND",),
    *,
    batch_size: int = 256,
) -> EvalReport:
    """Run ``nlp`` over the gold posts' texts and :func:`evaluate` its ``labels`` entities.

    Predictions go through :func:`ner.inference.predict`, so the model is scored exactly as it
    runs in production (same pipes, same label filter).
    """
    gold_list = list(gold)
    gold_spans = spans_by_post(gold_list)
    predicted = predict_spans(nlp, gold_list, labels, batch_size=batch_size)
    return evaluate(gold_spans, predicted, labels)


def predict_spans(
    nlp: Language,
    gold: Iterable[Annotation],
    labels: Sequence[str] = ("BRAND",),
    *,
    batch_size: int = 256,
) -> dict[str, tuple[Span, ...]]:
    """``{post_id: predicted spans}`` of ``nlp`` on the gold posts' texts, as
    :func:`score_model` scores them (for :func:`ner.gate.score_spans`, which also needs the
    per-post counts). Raises :class:`DataError` when a post id appears twice."""
    from ner.inference import predict

    posts = (Post(id=a.post_id, text=a.text) for a in gold)
    predictions = predict(
        nlp, posts, model_version="evaluation", labels=labels, batch_size=batch_size
    )
    return spans_by_post(predictions)
