"""The promotion gate: may the challenger replace the champion?

Pure functions over evaluation results; nothing here loads a model or talks to MLflow.
:func:`decide_promotion` runs every rule and returns a :class:`GateDecision` that lists each
rule's :class:`Verdict` (rule, status, the numbers it compared, a one-line reason). The
challenger is promoted only when no rule refuses.

Rules, in the order they run:

* ``threshold``: challenger micro F1 on the gold set >= ``threshold``.
* ``beats_champion``: challenger F1 > champion F1 + ``promotion_margin`` on the same gold set
  (today's rule of :func:`ner.registry.decide`).
* ``confidence``: paired bootstrap over gold posts (:func:`paired_bootstrap`). The lower end
  of the two-sided percentile interval of ``F1(challenger) - F1(champion)`` at
  ``bootstrap_level`` must be > 0. With level 0.95 that is a one-sided test at 97.5 %: the
  win must hold on (nearly) every plausible redraw of the gold posts, not only thanks to a
  few of them. The same interval is the one the model card shows, so a refusal can be read
  straight from the card.
* ``label_regression``: no label with gold support loses more than
  ``label_regression_margin`` of F1 against the champion.
* ``canary``: on the frozen canary set (older time windows, other sources; see
  :mod:`ner.canary`) the challenger's F1 is not below the champion's by more than
  ``canary_margin``. The decision is on the point estimates; the paired bootstrap interval
  of the difference is reported beside them.

Without a champion (first model), the threshold applies, ``beats_champion`` only asks that
the challenger is not below the cold start (what apply predicts with until then), the canary
rule compares the challenger with the cold start (when both were scored on the canary set),
and ``confidence`` and ``label_regression`` are ``not_applicable``; a missing canary
evaluation makes the canary rule ``not_applicable`` (with the reason saying so), never a
silent pass.

F1 here is the micro F1 of :mod:`ner.evaluation` (exact span and label); from pooled counts
it is ``2 tp / (2 tp + fp + fn)``, and 0.0 when that denominator is 0.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ner.errors import GoldSetError
from ner.evaluation import EvalReport, beats, below, evaluate, metric_name
from ner.report import quantity
from ner.types import Span

_CHUNK_CELLS = 1_000_000
"""At most this many resampled post indices are held at once (bounds the memory)."""


class Rule(enum.StrEnum):
    """The rules of the gate, in the order :func:`decide_promotion` runs them."""

    THRESHOLD = "threshold"
    BEATS_CHAMPION = "beats_champion"
    CONFIDENCE = "confidence"
    LABEL_REGRESSION = "label_regression"
    CANARY = "canary"


class Status(enum.StrEnum):
    """A rule's outcome. ``not_applicable`` (nothing to compare with) does not refuse."""

    PASSED = "passed"
    REFUSED = "refused"
    NOT_APPLICABLE = "not_applicable"


class Outcome(enum.StrEnum):
    """What the gate decided."""

    PROMOTED = "promoted"
    REFUSED = "refused"


MAX_TAG_REASON = 5000
"""Characters of the reason kept in a model-version tag (MLflow itself allows far more)."""


# Per-post counts and scored sets ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostCounts:
    """Exact-match counts of one post: true positives, false positives, false negatives."""

    post_id: str
    tp: int
    fp: int
    fn: int


def post_counts(
    gold: Mapping[str, Sequence[Span]], predicted: Mapping[str, Sequence[Span]]
) -> tuple[PostCounts, ...]:
    """Per-post exact-match counts over the posts of ``gold``, sorted by post id.

    Same conventions as :func:`ner.evaluation.evaluate`: spans compare by
    ``(start, end, label)``, a duplicate triple counts once, a gold post missing from
    ``predicted`` predicted nothing. Summed over posts they equal the report's tp/fp/fn.
    """
    out = []
    for post_id in sorted(gold):
        gold_keys = {s.key for s in gold[post_id]}
        pred_keys = {s.key for s in predicted.get(post_id, ())}
        tp = len(gold_keys & pred_keys)
        out.append(PostCounts(post_id, tp, len(pred_keys) - tp, len(gold_keys) - tp))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SetScores:
    """One model scored on one evaluation set: the full report and the per-post counts."""

    report: EvalReport
    posts: tuple[PostCounts, ...]

    @property
    def f1(self) -> float:
        return self.report.f1


def score_spans(
    gold: Mapping[str, Sequence[Span]],
    predicted: Mapping[str, Sequence[Span]],
    labels: Sequence[str] = (),
) -> SetScores:
    """:func:`ner.evaluation.evaluate` plus :func:`post_counts`, for the gate."""
    return SetScores(evaluate(gold, predicted, labels), post_counts(gold, predicted))


@dataclass(frozen=True, slots=True)
class ModelScores:
    """One model's evaluations for the gate: the gold set and, when there is one, the canary."""

    gold: SetScores
    canary: SetScores | None = None


# Bootstrap -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate and its two-sided bootstrap percentile interval at ``level``."""

    estimate: float
    lower: float
    upper: float
    level: float
    resamples: int

    def format(self, digits: int = 3) -> str:
        """``0.812 [0.771, 0.850]`` (95 % interval)."""
        return (
            f"{self.estimate:.{digits}f} [{self.lower:.{digits}f}, {self.upper:.{digits}f}]"
            f" ({self.level:.0%} interval)"
        )


@dataclass(frozen=True, slots=True)
class PairedInterval:
    """Paired bootstrap of two models on the same posts: each F1 and their difference
    (challenger minus champion), all from the same resamples."""

    challenger: Interval
    champion: Interval
    difference: Interval
    n_posts: int


def _check_bootstrap(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap level must be within (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")


def _count_matrix(posts: Sequence[PostCounts]) -> npt.NDArray[np.int64]:
    return np.array([(p.tp, p.fp, p.fn) for p in posts], dtype=np.int64).reshape(-1, 3)


def _f1_of(sums: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Micro F1 of each row ``(tp, fp, fn)``: ``2tp / (2tp + fp + fn)``, 0 when that is 0/0."""
    tp = sums[..., 0].astype(np.float64)
    denominator = 2 * tp + sums[..., 1] + sums[..., 2]
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, 2 * tp / safe, 0.0)


def _resample_chunks(n: int, resamples: int, seed: int) -> Iterator[npt.NDArray[np.intp]]:
    """Index arrays ``(chunk, n)`` drawn with replacement; ``resamples`` rows in all."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def _bootstrap_f1s(
    matrices: Sequence[npt.NDArray[np.int64]], resamples: int, seed: int
) -> list[npt.NDArray[np.float64]]:
    """F1 of each matrix on each resample; every matrix uses the same resampled posts."""
    n = matrices[0].shape[0]
    parts: list[list[npt.NDArray[np.float64]]] = [[] for _ in matrices]
    for idx in _resample_chunks(n, resamples, seed):
        for part, matrix in zip(parts, matrices, strict=True):
            part.append(_f1_of(matrix[idx].sum(axis=1)))
    return [np.concatenate(part) for part in parts]


def _interval(estimate: float, draws: npt.NDArray[np.float64], level: float) -> Interval:
    tail = (1.0 - level) / 2
    lower, upper = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(float(estimate), float(lower), float(upper), level, int(draws.size))


def _point_f1(matrix: npt.NDArray[np.int64]) -> float:
    return float(_f1_of(matrix.sum(axis=0)))


def bootstrap_f1(
    posts: Sequence[PostCounts], *, level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> Interval:
    """Micro F1 of ``posts`` with its bootstrap percentile interval.

    Each resample draws ``len(posts)`` posts with replacement (``numpy.random.default_rng
    (seed)``) and recomputes micro F1 from their pooled counts, so the same seed always gives
    the same interval. Raises :class:`ValueError` for no posts, a level outside (0, 1) or
    fewer than 1 resample.
    """
    _check_bootstrap(level, resamples)
    if not posts:
        raise ValueError("cannot bootstrap an evaluation with no posts")
    matrix = _count_matrix(posts)
    (draws,) = _bootstrap_f1s([matrix], resamples, seed)
    return _interval(_point_f1(matrix), draws, level)


def _difference(ids_challenger: Sequence[str], ids_champion: Sequence[str]) -> str:
    """Why two lists of scored post ids differ, naming a post."""
    only_mine = sorted(set(ids_challenger) - set(ids_champion))
    only_theirs = sorted(set(ids_champion) - set(ids_challenger))
    if only_mine:
        detail = f"post {only_mine[0]!r} was scored for the challenger only"
    elif only_theirs:
        detail = f"post {only_theirs[0]!r} was scored for the champion only"
    else:
        detail = "a post id is repeated"
    return (
        f"challenger and champion were evaluated on different posts "
        f"({len(ids_challenger)} vs {len(ids_champion)} posts; {detail})"
    )


def paired_bootstrap(
    challenger: Sequence[PostCounts],
    champion: Sequence[PostCounts],
    *,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> PairedInterval:
    """Paired bootstrap of challenger and champion over the same gold posts.

    Both models are scored on the same resampled posts in every resample (pairing removes
    the between-post variance the two share). Raises :class:`GoldSetError` when the two were
    not evaluated on exactly the same post ids (naming one that differs), and
    :class:`ValueError` as :func:`bootstrap_f1` does.
    """
    _check_bootstrap(level, resamples)
    ordered_challenger = sorted(challenger, key=lambda p: p.post_id)
    ordered_champion = sorted(champion, key=lambda p: p.post_id)
    ids_challenger = [p.post_id for p in ordered_challenger]
    ids_champion = [p.post_id for p in ordered_champion]
    if ids_challenger != ids_champion:
        raise GoldSetError(_difference(ids_challenger, ids_champion))
    if not ordered_challenger:
        raise ValueError("cannot bootstrap an evaluation with no posts")
    mine, theirs = _count_matrix(ordered_challenger), _count_matrix(ordered_champion)
    draws_mine, draws_theirs = _bootstrap_f1s([mine, theirs], resamples, seed)
    estimate_mine, estimate_theirs = _point_f1(mine), _point_f1(theirs)
    return PairedInterval(
        challenger=_interval(estimate_mine, draws_mine, level),
        champion=_interval(estimate_theirs, draws_theirs, level),
        difference=_interval(estimate_mine - estimate_theirs, draws_mine - draws_theirs, level),
        n_posts=len(ordered_challenger),
    )


# Policy, verdicts, decision ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """The gate's settings. Margins are absolute F1 points (0.02 = two points of F1).

    ``threshold`` and ``promotion_margin`` are today's ``NER_THRESHOLD`` and
    ``NER_PROMOTION_MARGIN``; the others are the gate's own settings (defaults here).
    Raises :class:`ValueError` naming the field when a value is out of range.
    """

    threshold: float
    promotion_margin: float = 0.0
    bootstrap_level: float = 0.95
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 17
    label_regression_margin: float = 0.05
    canary_margin: float = 0.02

    def __post_init__(self) -> None:
        for name in ("threshold", "promotion_margin", "label_regression_margin", "canary_margin"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"gate policy: {name} must be within [0, 1], got {value}")
        _check_bootstrap(self.bootstrap_level, self.bootstrap_resamples)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One rule's outcome: its status, the numbers it compared and a one-line reason."""

    rule: Rule
    status: Status
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True unless the rule refused (``not_applicable`` does not refuse)."""
        return self.status is not Status.REFUSED

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": str(self.rule),
            "status": str(self.status),
            "reason": self.reason,
            "numbers": dict(self.numbers),
        }


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Every verdict of the gate; ``promote`` is True only when some rule ran and none
    refused."""

    verdicts: tuple[Verdict, ...]

    @property
    def promote(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)

    @property
    def outcome(self) -> Outcome:
        return Outcome.PROMOTED if self.promote else Outcome.REFUSED

    @property
    def refusals(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.passed)

    @property
    def reason(self) -> str:
        """One line: ``promoted: <rule>: <reason>; ...`` over the rules that passed, or
        ``refused by <rule>: <reason>; ...`` over the rules that refused."""
        if self.promote:
            passed = [v for v in self.verdicts if v.status is Status.PASSED]
            return "promoted: " + "; ".join(f"{v.rule}: {v.reason}" for v in passed)
        return "refused by " + "; ".join(f"{v.rule}: {v.reason}" for v in self.refusals)

    def verdict(self, rule: Rule) -> Verdict:
        """The verdict of ``rule``; :class:`KeyError` if it did not run."""
        for verdict in self.verdicts:
            if verdict.rule is rule:
                return verdict
        raise KeyError(str(rule))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``promote``, ``outcome``, ``reason``, ``refused_by`` (rule names) and
        ``verdicts`` (each :meth:`Verdict.to_dict`), for the flow's result."""
        return {
            "promote": self.promote,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "refused_by": [str(v.rule) for v in self.refusals],
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    def to_tags(self, prefix: str = "brandloop.gate.") -> dict[str, str]:
        """Model-version (or run) tags: ``{prefix}outcome`` (``promoted``/``refused``),
        ``{prefix}refused_by`` and ``{prefix}not_applicable`` (rule names, comma-separated,
        empty when none) and ``{prefix}reason`` (:attr:`reason`, at most
        :data:`MAX_TAG_REASON` characters)."""
        idle = (v for v in self.verdicts if v.status is Status.NOT_APPLICABLE)
        return {
            f"{prefix}outcome": str(self.outcome),
            f"{prefix}refused_by": ",".join(str(v.rule) for v in self.refusals),
            f"{prefix}not_applicable": ",".join(str(v.rule) for v in idle),
            f"{prefix}reason": self.reason[:MAX_TAG_REASON],
        }

    def to_metrics(self, prefix: str = "gate_") -> dict[str, float]:
        """Flat ``{prefix}{rule}_{number}`` values plus ``{prefix}{rule}_passed`` (1/0) for
        each rule that ran: a ``not_applicable`` rule has none (it compared nothing, so it
        is no pass; :meth:`to_tags` names it)."""
        metrics: dict[str, float] = {f"{prefix}promote": float(self.promote)}
        for v in self.verdicts:
            if v.status is not Status.NOT_APPLICABLE:
                metrics[f"{prefix}{v.rule}_passed"] = float(v.passed)
            for name, value in v.numbers.items():
                metrics[metric_name(f"{prefix}{v.rule}_{name}")] = float(value)
        return metrics


# Rules ---------------------------------------------------------------------------------------


def check_threshold(challenger_f1: float, threshold: float) -> Verdict:
    """Refuse when the challenger's gold F1 is below ``threshold``."""
    numbers = {"challenger_f1": challenger_f1, "threshold": threshold}
    if challenger_f1 < threshold:
        reason = f"challenger F1 {challenger_f1:.4f} < threshold {threshold:.4f}"
        return Verdict(Rule.THRESHOLD, Status.REFUSED, reason, numbers)
    reason = f"challenger F1 {challenger_f1:.4f} >= threshold {threshold:.4f}"
    return Verdict(Rule.THRESHOLD, Status.PASSED, reason, numbers)


def check_beats_champion(
    challenger_f1: float, champion_f1: float | None, margin: float = 0.0
) -> Verdict:
    """Refuse unless the challenger's gold F1 exceeds the champion's by more than ``margin``
    (a tie is not a win). Without a champion the rule does not apply."""
    if champion_f1 is None:
        return Verdict(
            Rule.BEATS_CHAMPION,
            Status.NOT_APPLICABLE,
            "no champion to beat",
            {"challenger_f1": challenger_f1},
        )
    numbers = {
        "challenger_f1": challenger_f1,
        "champion_f1": champion_f1,
        "difference": challenger_f1 - champion_f1,
        "margin": margin,
    }
    if not beats(challenger_f1, champion_f1, margin):
        reason = (
            f"challenger F1 {challenger_f1:.4f} does not beat champion F1 "
            f"{champion_f1:.4f} + margin {margin:.4f}"
        )
        return Verdict(Rule.BEATS_CHAMPION, Status.REFUSED, reason, numbers)
    reason = (
        f"challenger F1 {challenger_f1:.4f} beats champion F1 {champion_f1:.4f} "
        f"+ margin {margin:.4f}"
    )
    return Verdict(Rule.BEATS_CHAMPION, Status.PASSED, reason, numbers)


def check_not_below_cold_start(challenger_f1: float, cold_start: tuple[str, float]) -> Verdict:
    """The ``beats_champion`` rule of a first model: while no version is champion, the
    cold start ``(spec, gold F1)`` is what the apply flow predicts with, so a challenger
    below it (a tie is not below) is refused."""
    spec, cold_f1 = cold_start
    numbers = {"challenger_f1": challenger_f1, "cold_start_f1": cold_f1}
    said = f"challenger F1 {challenger_f1:.4f}"
    theirs = f"the cold start {spec}'s F1 {cold_f1:.4f}"
    if below(challenger_f1, cold_f1):
        reason = f"{said} is below {theirs} (what apply predicts with while no version is champion)"
        return Verdict(Rule.BEATS_CHAMPION, Status.REFUSED, reason, numbers)
    reason = f"no champion yet; {said} is not below {theirs}"
    return Verdict(Rule.BEATS_CHAMPION, Status.PASSED, reason, numbers)


def check_confidence(
    challenger: Sequence[PostCounts],
    champion: Sequence[PostCounts] | None,
    *,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Verdict:
    """Refuse unless the lower end of the paired bootstrap interval of ``F1(challenger) -
    F1(champion)`` at ``level`` is > 0 (see the module docstring for the choice of bound).
    Raises :class:`GoldSetError` when the two were scored on different posts."""
    if champion is None:
        return Verdict(Rule.CONFIDENCE, Status.NOT_APPLICABLE, "no champion to compare with")
    if not challenger and not champion:
        return Verdict(Rule.CONFIDENCE, Status.REFUSED, "no gold posts to bootstrap over")
    paired = paired_bootstrap(challenger, champion, level=level, resamples=resamples, seed=seed)
    diff = paired.difference
    numbers = {
        "difference": diff.estimate,
        "lower": diff.lower,
        "upper": diff.upper,
        "level": level,
        "resamples": float(resamples),
        "n_posts": float(paired.n_posts),
    }
    summary = (
        f"F1 difference {diff.estimate:+.4f}, {level:.0%} interval "
        f"[{diff.lower:+.4f}, {diff.upper:+.4f}] over {quantity(paired.n_posts, 'gold post')}"
    )
    if diff.lower <= 0.0:
        reason = f"{summary}: lower bound {diff.lower:+.4f} is not > 0"
        return Verdict(Rule.CONFIDENCE, Status.REFUSED, reason, numbers)
    return Verdict(Rule.CONFIDENCE, Status.PASSED, f"{summary}: lower bound > 0", numbers)


def check_label_regression(
    challenger: EvalReport, champion: EvalReport | None, margin: float = 0.05
) -> Verdict:
    """Refuse when a label with gold support loses more than ``margin`` of F1 against the
    champion on the same gold set. Numbers: each such label's two F1s, and the worst drop."""
    if champion is None:
        return Verdict(Rule.LABEL_REGRESSION, Status.NOT_APPLICABLE, "no champion to compare with")
    numbers: dict[str, float] = {"margin": margin}
    drops: list[tuple[float, str, float, float]] = []
    for scores in challenger.per_label:
        if scores.support == 0:
            continue
        try:
            before = champion.label_scores(scores.label).f1
        except KeyError:
            before = 0.0
        numbers[f"{scores.label}_challenger_f1"] = scores.f1
        numbers[f"{scores.label}_champion_f1"] = before
        drops.append((before - scores.f1, scores.label, before, scores.f1))
    if not drops:
        reason = "no label has gold support"
        return Verdict(Rule.LABEL_REGRESSION, Status.NOT_APPLICABLE, reason, numbers)
    drops.sort(key=lambda d: (-d[0], d[1]))
    numbers["worst_drop"] = drops[0][0]
    regressed = [d for d in drops if d[0] > margin]
    if regressed:
        listed = ", ".join(f"{lab} {b:.4f} -> {a:.4f} ({-d:+.4f})" for d, lab, b, a in regressed)
        reason = f"label F1 fell by more than {margin:.4f}: {listed}"
        return Verdict(Rule.LABEL_REGRESSION, Status.REFUSED, reason, numbers)
    drop, label, _, _ = drops[0]
    change = round(-drop, 4) + 0.0  # no "-0.0000" for a label that did not move
    reason = f"no label fell by more than {margin:.4f} (least change: {label} {change:+.4f})"
    return Verdict(Rule.LABEL_REGRESSION, Status.PASSED, reason, numbers)


def no_canary_set(note: str | None = None) -> str:
    """How the canary rule, the train run's reason and the model card say there is no
    canary set: ``no canary set``, with ``: <note>`` (why, ``CanarySet.note``) when known."""
    return f"no canary set: {note}" if note else "no canary set"


def check_canary(
    challenger: SetScores | None,
    champion: SetScores | None,
    margin: float = 0.02,
    *,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    cold_start: str | None = None,
) -> Verdict:
    """Refuse when the challenger's F1 on the frozen canary set is below the champion's by
    more than ``margin`` (point estimates). The paired bootstrap interval of the difference
    is reported beside it (``lower``, ``upper``) so a reader can tell a drop from noise.
    ``cold_start`` (its spec) says that ``champion`` is the cold start's evaluation: a first
    model's rule; its number is then ``cold_start_f1``. Does not apply unless both models
    were scored on a non-empty canary set; raises :class:`GoldSetError` when the two canary
    evaluations cover different posts."""
    if challenger is None and champion is None:
        return Verdict(Rule.CANARY, Status.NOT_APPLICABLE, no_canary_set())
    if challenger is None or champion is None:
        theirs = "champion" if cold_start is None else f"cold start {cold_start}"
        missing = "challenger" if challenger is None else theirs
        reason = f"no canary evaluation of the {missing}"
        return Verdict(Rule.CANARY, Status.NOT_APPLICABLE, reason)
    if not challenger.posts and not champion.posts:
        return Verdict(Rule.CANARY, Status.NOT_APPLICABLE, "the canary set is empty")
    try:
        paired = paired_bootstrap(
            challenger.posts, champion.posts, level=level, resamples=resamples, seed=seed
        )
    except GoldSetError as exc:
        raise GoldSetError(f"canary set: {exc}") from exc
    diff = paired.difference
    after, before = challenger.f1, champion.f1
    numbers = {
        "challenger_f1": after,
        ("champion_f1" if cold_start is None else "cold_start_f1"): before,
        "difference": diff.estimate,
        "lower": diff.lower,
        "upper": diff.upper,
        "margin": margin,
        "n_posts": float(paired.n_posts),
    }
    summary = (
        f"canary F1 {before:.4f} -> {after:.4f} ({diff.estimate:+.4f}, {level:.0%} interval "
        f"[{diff.lower:+.4f}, {diff.upper:+.4f}]) on {quantity(paired.n_posts, 'post')}"
    )
    if cold_start is not None:
        summary = f"no champion yet; against the cold start {cold_start}: {summary}"
    if before - after > margin:
        reason = f"{summary}: fell by more than {margin:.4f}"
        return Verdict(Rule.CANARY, Status.REFUSED, reason, numbers)
    reason = f"{summary}: did not fall by more than {margin:.4f}"
    return Verdict(Rule.CANARY, Status.PASSED, reason, numbers)


def decide_promotion(
    challenger: ModelScores,
    champion: ModelScores | None,
    policy: GatePolicy,
    cold_start: tuple[str, float] | None = None,
    cold_start_canary: SetScores | None = None,
) -> GateDecision:
    """Run every rule of the gate on the two models' evaluations; see the module docstring.

    ``champion`` is None when there is no champion: then the threshold applies,
    ``beats_champion`` compares with ``cold_start`` (spec, gold F1), when given
    (:func:`check_not_below_cold_start`), and the canary rule with ``cold_start_canary``
    (the cold start on the canary set), when given with ``cold_start``. The two gold
    evaluations must cover the same posts, and the two canary evaluations the same canary
    set (:class:`GoldSetError` otherwise).
    """
    if champion is None:
        return _decide_first(challenger, policy, cold_start, cold_start_canary)
    mine, theirs = challenger.gold, champion.gold
    verdicts = [
        check_threshold(mine.f1, policy.threshold),
        check_beats_champion(mine.f1, theirs.f1, policy.promotion_margin),
        check_confidence(
            mine.posts,
            theirs.posts,
            level=policy.bootstrap_level,
            resamples=policy.bootstrap_resamples,
            seed=policy.bootstrap_seed,
        ),
        check_label_regression(mine.report, theirs.report, policy.label_regression_margin),
        check_canary(
            challenger.canary,
            champion.canary,
            policy.canary_margin,
            level=policy.bootstrap_level,
            resamples=policy.bootstrap_resamples,
            seed=policy.bootstrap_seed,
        ),
    ]
    return GateDecision(tuple(verdicts))


def _decide_first(
    challenger: ModelScores,
    policy: GatePolicy,
    cold_start: tuple[str, float] | None,
    cold_start_canary: SetScores | None,
) -> GateDecision:
    """The gate of a first model (no champion); see :func:`decide_promotion`."""
    verdicts = [check_threshold(challenger.gold.f1, policy.threshold)]
    idle = [Rule.CONFIDENCE, Rule.LABEL_REGRESSION]
    if cold_start is None:
        idle.insert(0, Rule.BEATS_CHAMPION)
    else:
        verdicts.append(check_not_below_cold_start(challenger.gold.f1, cold_start))
    verdicts += [
        Verdict(rule, Status.NOT_APPLICABLE, "no champion to compare with") for rule in idle
    ]
    if cold_start is None:
        canary = challenger.canary
        reason = no_canary_set() if canary is None else "no champion or cold start to compare with"
        verdicts.append(Verdict(Rule.CANARY, Status.NOT_APPLICABLE, reason))
    else:
        verdicts.append(
            check_canary(
                challenger.canary,
                cold_start_canary,
                policy.canary_margin,
                level=policy.bootstrap_level,
                resamples=policy.bootstrap_resamples,
                seed=policy.bootstrap_seed,
                cold_start=cold_start[0],
            )
        )
    return GateDecision(tuple(verdicts))
