"""Agreement between annotators of one post, and what to train on when they disagree (pure).

Score. Two annotations of the same text agree on a span when offsets *and* label are equal
(:attr:`~ner.types.Span.key`). Their agreement is the span F1 of one against the other,
``2 * |A ∩ B| / (|A| + |B|)`` (symmetric; two annotations without any span agree fully, 1.0).
With more than two annotators the score is the mean F1 over every pair.

Policies (:class:`AgreementPolicy`, setting ``agreement_policy``):

* ``latest``: the most recently saved annotation is the label (what a single annotator gives);
* ``majority``: the spans chosen by more than half of the annotators (ties are not a majority);
  they never overlap, since two spans both chosen by a majority share at least one annotator,
  whose own spans do not overlap. A post where more than half marked a brand at one place
  but no bounds won a majority ("Rare Beauty" against "Rare"), or exactly half did (a tie:
  "a brand here" and "none here" each had half), is *held*, as under ``review``: trained as
  it stands, the place would be a negative;
* ``review``: the latest annotation, unless the agreement is below ``agreement_threshold``:
  then the post is *held* — kept out of training (and out of a gold set being frozen) and
  listed for review, until the annotators agree or one annotation is deleted.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from ner.types import Annotation, Span


class AgreementPolicy(enum.StrEnum):
    """How the label of a post annotated by several people is chosen."""

    LATEST = "latest"
    MAJORITY = "majority"
    REVIEW = "review"


class Outcome(enum.StrEnum):
    """What a policy did with one post."""

    KEPT_LATEST = "kept_latest"
    MAJORITY = "majority"
    HELD = "held_for_review"


@dataclass(frozen=True, slots=True)
class Agreement:
    """The agreement on one post's task and what the policy made of it.

    ``score`` is in [0, 1] (mean pairwise span F1); ``annotators`` names the annotations
    compared (annotator, else ``"annotation <n>"``), in the order given.
    """

    post_id: str
    task_id: int | None
    annotators: tuple[str, ...]
    score: float
    outcome: Outcome

    def to_dict(self) -> dict[str, object]:
        return {
            "post_id": self.post_id,
            "task_id": self.task_id,
            "annotators": list(self.annotators),
            "score": round(self.score, 4),
            "outcome": str(self.outcome),
        }


@dataclass(frozen=True, slots=True)
class Resolution:
    """The label to train on (``None`` when held for review) and the agreement behind it."""

    annotation: Annotation | None
    agreement: Agreement


def span_f1(first: Sequence[Span], second: Sequence[Span]) -> float:
    """Exact span F1 of ``first`` against ``second`` (offsets and label); 1.0 if both empty."""
    a = {span.key for span in first}
    b = {span.key for span in second}
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / (len(a) + len(b))


def agreement_score(annotations: Sequence[Annotation]) -> float:
    """Mean pairwise :func:`span_f1` of ``annotations`` (1.0 for fewer than two)."""
    pairs = list(combinations(annotations, 2))
    if not pairs:
        return 1.0
    return sum(span_f1(x.spans, y.spans) for x, y in pairs) / len(pairs)


def majority_spans(annotations: Sequence[Annotation]) -> tuple[Span, ...]:
    """The spans chosen by more than half of ``annotations``, in text order."""
    votes: Counter[tuple[int, int, str]] = Counter()
    spans: dict[tuple[int, int, str], Span] = {}
    for annotation in annotations:
        for span in {s.key: s for s in annotation.spans}.values():
            votes[span.key] += 1
            spans.setdefault(span.key, Span(span.start, span.end, span.label, span.text))
    needed = len(annotations) // 2 + 1
    return tuple(spans[key] for key in sorted(votes) if votes[key] >= needed)


def contested_spans(annotations: Sequence[Annotation], kept: Sequence[Span]) -> list[Span]:
    """Spans that more than half of ``annotations`` marked a brand at (a span of theirs
    overlaps it, any label) although no majority span (``kept``) overlaps it: the annotators
    agree there is one there, not on its bounds; or that exactly half marked (a tie on
    whether there is one at all)."""
    needed = len(annotations) // 2 + 1
    found: dict[tuple[int, int, str], Span] = {}
    for span in (s for a in annotations for s in a.spans):
        if any(_overlap(span, k) for k in kept) or span.key in found:
            continue
        marking = sum(any(_overlap(span, s) for s in a.spans) for a in annotations)
        if marking >= needed or 2 * marking == len(annotations):
            found[span.key] = span
    return [found[key] for key in sorted(found)]


def _overlap(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def _latest(annotations: Sequence[Annotation]) -> Annotation:
    """The most recently saved annotation (the last given on equal or missing times)."""
    ordered = sorted(enumerate(annotations), key=lambda p: (p[1].updated_at or "", p[0]))
    return ordered[-1][1]


def resolve(
    annotations: Sequence[Annotation], policy: AgreementPolicy, threshold: float
) -> Resolution:
    """Apply ``policy`` to the annotations of one post (at least one, same post and text).

    ``threshold`` (in [0, 1]) only matters for ``review``: a score strictly below it holds the
    post. ``majority`` holds a post with :func:`contested_spans`. Raises :class:`ValueError`
    for an empty list or annotations of different posts.
    """
    if not annotations:
        raise ValueError("resolve() needs at least one annotation")
    if len({(a.post_id, a.text) for a in annotations}) != 1:
        raise ValueError("resolve() compares annotations of one post and one text")
    latest = _latest(annotations)
    score = agreement_score(annotations)
    names = tuple(a.annotator or f"annotation {n}" for n, a in enumerate(annotations, 1))
    chosen: Annotation | None = latest
    outcome = Outcome.KEPT_LATEST
    majority = majority_spans(annotations) if policy is AgreementPolicy.MAJORITY else ()
    if policy is AgreementPolicy.MAJORITY and contested_spans(annotations, majority):
        outcome, chosen = Outcome.HELD, None
    elif policy is AgreementPolicy.MAJORITY and len(annotations) > 1:
        outcome = Outcome.MAJORITY
        chosen = Annotation(
            post_id=latest.post_id,
            text=latest.text,
            spans=majority,
            task_id=latest.task_id,
            annotator=f"majority of {len(annotations)}",
            updated_at=latest.updated_at,
        )
    elif policy is AgreementPolicy.REVIEW and score < threshold:
        outcome, chosen = Outcome.HELD, None
    agreement = Agreement(latest.post_id, latest.task_id, names, score, outcome)
    return Resolution(chosen, agreement)
