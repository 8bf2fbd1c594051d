"""The model card: the Markdown description MLflow shows on a model version's page.

:func:`render_model_card` is a pure function from a typed :class:`ModelCard` to a string:
what the version was trained on (sizes, dataset hash), its base model and recipe, its metrics
on each evaluation set with bootstrap intervals (and the champion's F1 beside them), the gate's
decision rule by rule (why it was promoted or refused) and its known limits. The caller stores
it with ``MlflowClient.update_model_version(name, version, description=...)``.

Length. MLflow's SQL registry stores a version description in a ``VARCHAR(5000)`` column
(``model_versions.description``; MySQL and PostgreSQL enforce it, SQLite does not), so the card
is kept within :data:`MLFLOW_DESCRIPTION_LIMIT` characters: first the per-label tables of the
sets after the first and the longest lists are shortened, then, if still too long, the card is
cut at a line boundary with a note. Sections are ordered most important first (decision,
metrics, gate, data, recipe, limits), so a cut loses the least useful lines.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ner.evaluation import LabelScores
from ner.gate import GateDecision, Interval, SetScores, Status, bootstrap_f1
from ner.report import markdown_cell, quantity

MLFLOW_DESCRIPTION_LIMIT = 5000
"""Characters MLflow's SQL model registry stores in a model version's description."""

SMALL_SUPPORT = 10
"""A label with fewer gold spans than this is named in the known limits."""

_TRUNCATED = "\n\n_(card truncated to fit MLflow's description limit)_"
ALIAS_NOTES = (
    "**Promoted by hand**",
    "**Rolled back**",
    "**Restored**",
    "**Copied**",
    "**Replaced**",
    "**Scored again**",
)
"""Starts of the lines :func:`with_alias_note` puts under a card's title (the latest alias
move of each kind made by hand, newest first)."""
#: The line between the alias notes and the card they sit on.
BELOW_NOTES = "_Below: the card as written when the version was trained._"
_COMPACT_ROWS = 8


@dataclass(frozen=True, slots=True)
class TrainingData:
    """What the version was trained on. ``dataset_hash`` is :func:`ner.datasets.dataset_hash`
    of the training pool; ``n_rejected_spans`` counts spans that could not be aligned."""

    n_train: int
    dataset_hash: str
    n_dev: int = 0
    n_rejected_spans: int = 0
    source_uri: str | None = None
    #: Posts of a rehearsal set trained beside the pool (``train.rehearsal_uri``), its
    #: location and :func:`ner.datasets.dataset_hash` of those posts.
    n_rehearsed: int = 0
    rehearsal_uri: str | None = None
    rehearsal_hash: str | None = None
    #: Posts of the training pool the recipe drew ``n_train`` and ``n_dev`` from.
    n_pool: int | None = None
    #: The spans left out (``post id: why``) and those trained widened to whole tokens.
    left_out: tuple[str, ...] = ()
    widened: tuple[str, ...] = ()
    #: What the pull made of the labels (rejected posts, repaired spans, disagreements).
    pull_note: str = ""


@dataclass(frozen=True, slots=True)
class Recipe:
    """How the version was trained: the base pipeline, the recipe's name and its parameters."""

    base_model: str
    name: str = "spacy-ner"
    params: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    #: Knobs set away from the recipe's shipped defaults (``TrainSettings.changed_knobs``).
    changed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetMetrics:
    """The version's scores on one evaluation set (gold, canary, a benchmark split).

    ``f1_interval`` is its bootstrap interval; ``champion_f1`` is the champion's F1 on the
    same set when one was scored; ``per_label`` rows come from :mod:`ner.evaluation`.
    """

    name: str
    n_posts: int
    precision: float
    recall: float
    f1: float
    f1_interval: Interval | None = None
    champion_f1: float | None = None
    dataset_hash: str | None = None
    per_label: tuple[LabelScores, ...] = ()

    @classmethod
    def from_scores(
        cls,
        name: str,
        scores: SetScores,
        *,
        champion: SetScores | None = None,
        dataset_hash: str | None = None,
        level: float = 0.95,
        resamples: int = 1000,
        seed: int = 0,
    ) -> SetMetrics:
        """Metrics of ``scores`` with a bootstrap interval of its F1 (none for no posts)."""
        report = scores.report
        interval = (
            bootstrap_f1(scores.posts, level=level, resamples=resamples, seed=seed)
            if scores.posts
            else None
        )
        return cls(
            name=name,
            n_posts=report.n_posts,
            precision=report.precision,
            recall=report.recall,
            f1=report.f1,
            f1_interval=interval,
            champion_f1=None if champion is None else champion.f1,
            dataset_hash=dataset_hash,
            per_label=report.per_label,
        )


@dataclass(frozen=True, slots=True)
class ModelCard:
    """Everything the card says about one model version. ``decision`` is None when the
    version did not go through the gate; ``champion_version`` is the registered champion it
    was gated against (None for the first model or a cold-start baseline); ``limits`` are
    added to the automatic ones."""

    model_name: str
    version: str
    training: TrainingData
    recipe: Recipe
    evaluations: tuple[SetMetrics, ...]
    decision: GateDecision | None = None
    run_id: str | None = None
    champion_version: str | None = None
    limits: tuple[str, ...] = ()


# Known limits --------------------------------------------------------------------------------


def known_limits(card: ModelCard) -> list[str]:
    """The limits the card's own numbers show, then the caller's ``card.limits``.

    Named: the width of each F1 interval (differences smaller than it are noise), labels with
    fewer than :data:`SMALL_SUPPORT` gold spans, each gate rule that did not apply, and the
    absence of any evaluation set whose name contains "canary".
    """
    limits: list[str] = []
    for metrics in card.evaluations:
        interval = metrics.f1_interval
        if interval is not None and interval.upper > interval.lower:
            limits.append(
                f"{metrics.name}: {quantity(metrics.n_posts, 'post')}, F1 interval "
                f"{interval.upper - interval.lower:.3f} wide: smaller differences are noise"
            )
        thin = [s.label for s in metrics.per_label if 0 < s.support < SMALL_SUPPORT]
        if thin:
            limits.append(
                f"{metrics.name}: fewer than {SMALL_SUPPORT} gold spans for "
                f"{', '.join(thin)}: their F1 is unreliable"
            )
    if card.decision is not None:
        for verdict in card.decision.verdicts:
            if verdict.status is Status.NOT_APPLICABLE:
                limits.append(f"gate rule {verdict.rule} not applied: {verdict.reason}")
    if not any("canary" in m.name.lower() for m in card.evaluations):
        limits.append("no canary evaluation: older time windows and other sources not checked")
    return limits + list(card.limits)


# Rendering -----------------------------------------------------------------------------------


_cell = markdown_cell  # the card's own short name


def _headline(card: ModelCard) -> list[str]:
    title = f"# {card.model_name} version {card.version}"
    if card.champion_version is not None:
        title += f" (trained as the challenger of version {card.champion_version})"
    decision = card.decision
    if decision is None:
        return [title, "", "**Gate:** not gated (no promotion decision recorded)."]
    if decision.promote:
        return [title, "", "**Gate: promoted.** No rule of the gate refused."]
    refusals = "; ".join(f"`{v.rule}`: {v.reason}" for v in decision.refusals)
    return [title, "", f"**Gate: refused** (not promoted) by {refusals}"]


def _f1_cell(metrics: SetMetrics) -> str:
    interval = metrics.f1_interval
    if interval is None:
        return f"{metrics.f1:.3f}"
    return f"{metrics.f1:.3f} [{interval.lower:.3f}, {interval.upper:.3f}]"


def _metrics_section(card: ModelCard, label_rows: int | None) -> list[str]:
    levels = {m.f1_interval.level for m in card.evaluations if m.f1_interval is not None}
    level = f" ({', '.join(f'{x:.0%}' for x in sorted(levels))} bootstrap interval)"
    lines = [
        "",
        "## Metrics",
        "",
        f"| set | posts | precision | recall | F1{level if levels else ''} | champion F1 |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for m in card.evaluations:
        name = m.name if m.dataset_hash is None else f"{m.name} (`{m.dataset_hash[:12]}`)"
        champion = "-" if m.champion_f1 is None else f"{m.champion_f1:.3f}"
        lines.append(
            f"| {_cell(name)} | {m.n_posts} | {m.precision:.3f} | {m.recall:.3f} "
            f"| {_f1_cell(m)} | {champion} |"
        )
    for index, m in enumerate(card.evaluations):
        if m.per_label and (label_rows is None or index == 0):
            lines += _label_table(m, label_rows)
    return lines


def _label_table(metrics: SetMetrics, rows: int | None) -> list[str]:
    ordered = sorted(metrics.per_label, key=lambda s: (-s.support, s.label))
    shown = ordered if rows is None else ordered[:rows]
    lines = [
        "",
        f"Per label on {_cell(metrics.name)}:",
        "",
        "| label | precision | recall | F1 | gold spans |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {_cell(s.label)} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.support} |"
        for s in shown
    ]
    if len(shown) < len(ordered):
        lines.append(f"| ... {len(ordered) - len(shown)} more labels | | | | |")
    return lines


def _gate_section(decision: GateDecision | None) -> list[str]:
    if decision is None:
        return []
    lines = ["", "## Gate", "", "| rule | outcome | numbers and reason |", "|---|---|---|"]
    for v in decision.verdicts:
        lines.append(f"| {v.rule} | {v.status} | {_cell(v.reason)} |")
    return lines


def _bullets(title: str, items: Sequence[str], limit: int | None) -> list[str]:
    if not items:
        return []
    shown = list(items if limit is None else items[:limit])
    if len(shown) < len(items):
        shown.append(f"... and {len(items) - len(shown)} more")
    return ["", f"## {title}", "", *(f"- {item}" for item in shown)]


def _training_items(card: ModelCard) -> list[str]:
    data = card.training
    items = [
        f"training posts: {data.n_train:,}, and {data.n_dev:,} more held out as the dev "
        f"slice (epoch scores), dataset hash "
        f"`{data.dataset_hash}`",
        f"spans left out of training: {data.n_rejected_spans:,}{_named(data.left_out)}",
    ]
    if data.widened:
        items.append(
            f"spans trained widened to whole tokens (they cut a token, so no model of this "
            f"tokenizer predicts them exactly): {len(data.widened):,}{_named(data.widened)}"
        )
    if data.pull_note:
        items.append(data.pull_note)
    if data.source_uri:
        items.append(f"training pool: `{data.source_uri}`")
    if data.n_pool is not None and data.n_pool != data.n_train + data.n_dev:
        items.append(
            f"the pool holds {data.n_pool:,} labelled posts; the recipe drew the posts above "
            "from it (`negative_fraction` samples brand-less posts, `labelled_copies` "
            "repeats labelled ones)"
        )
    if data.n_rehearsed:
        items.append(
            f"rehearsal set (trained beside the pool, not part of it): {data.n_rehearsed:,} "
            f"posts of `{data.rehearsal_uri}`, hash `{data.rehearsal_hash}`"
        )
    if card.run_id:
        items.append(f"training run: `{card.run_id}`")
    return items


#: How a card names one post under an item (``  - <post id>: why``): what a forget removes.
NAMED_POST = "  - "


def _named(lines: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``lines`` (``post id: why``) as sub-items, one post each, and
    how many more; "" for none."""
    named = [f"\n{NAMED_POST}{_cell(line)}" for line in lines[:limit]]
    more = [f"\n{NAMED_POST}and {len(lines) - limit} more"] if len(lines) > limit else []
    return "".join(named + more)


_COUNTED = re.compile(r"^(- .*: )(\d[\d,]*)$")


def without_posts(card: str, post_ids: Collection[str]) -> str:
    """``card`` without the sub-items that name one of ``post_ids`` (:func:`_named`); the
    count of the item above each one removed goes down by one, so the card counts what it
    still holds."""
    starts = tuple(f"{NAMED_POST}{_cell(p)}: " for p in post_ids)
    kept: list[str] = []
    parent = -1
    for line in card.split("\n"):
        if not line.startswith(starts):
            parent = len(kept) if line.startswith("- ") else parent
            kept.append(line)
        elif parent >= 0 and (counted := _COUNTED.match(kept[parent])):
            left = int(counted[2].replace(",", "")) - 1
            kept[parent] = f"{counted[1]}{max(left, 0):,}"
    return "\n".join(kept)


def named_posts(card: str, post_ids: Collection[str]) -> set[str]:
    """Those of ``post_ids`` that a sub-item of ``card`` names: what :func:`without_posts`
    removes."""
    starts = {f"{NAMED_POST}{_cell(p)}: ": p for p in post_ids}
    return {
        post_id
        for line in card.split("\n")
        if line.startswith(NAMED_POST)
        for start, post_id in starts.items()
        if line.startswith(start)
    }


#: Recipe values shown as "none" (an unset map or list reads as an empty code span).
_EMPTY = frozenset({"", "{}", "[]"})


def _recipe_items(recipe: Recipe) -> list[str]:
    changed = ", ".join(f"`{knob}`" for knob in recipe.changed)
    named = f"{recipe.name}, changed from its defaults: {changed}" if changed else recipe.name
    items = [f"base model: `{recipe.base_model}`", f"recipe: {named}"]  # the demo's read "fast"
    items += [
        f"`{key}` = `{value}`" if str(value).strip() not in _EMPTY else f"`{key}`: none"
        for key, value in sorted(recipe.params.items())
    ]
    return items


def _render(card: ModelCard, *, compact: bool) -> str:
    rows = _COMPACT_ROWS if compact else None
    lines = _headline(card)
    lines += _metrics_section(card, rows)
    lines += _gate_section(card.decision)
    lines += _bullets("Training data", _training_items(card), None)
    lines += _bullets("Base model and recipe", _recipe_items(card.recipe), rows)
    lines += _bullets("Known limits", known_limits(card), rows)
    return "\n".join(lines) + "\n"


def render_model_card(card: ModelCard, max_chars: int = MLFLOW_DESCRIPTION_LIMIT) -> str:
    """The card as Markdown, at most ``max_chars`` characters (see the module docstring).

    Raises :class:`ValueError` when ``max_chars`` is too small to hold even the truncation
    note (under 200 characters).
    """
    if max_chars < 200:
        raise ValueError(f"max_chars must be at least 200, got {max_chars}")
    text = _render(card, compact=False)
    if len(text) <= max_chars:
        return text
    return _fit(_render(card, compact=True), max_chars)


def _fit(text: str, max_chars: int) -> str:
    """``text``, or its start cut at a line boundary with the truncation note, in
    ``max_chars`` characters."""
    if len(text) <= max_chars:
        return text
    room = max_chars - len(_TRUNCATED)
    cut = text.rfind("\n", 0, room + 1)
    return text[: cut if cut > 0 else room].rstrip() + _TRUNCATED


def manual_promotion_note(*, reason: str, actor: str, when: str) -> str:
    """The line :func:`with_alias_note` puts on a version made champion by hand
    (``brandloop promote``): ``when`` (UTC), ``actor``, ``reason``."""
    return f"{ALIAS_NOTES[0]} to @champion at {when} by {_cell(actor)}: {_cell(reason)}."


def rollback_note(*, reason: str, actor: str, when: str) -> str:
    """The line :func:`with_alias_note` puts on a champion that ``brandloop rollback`` moved
    away from."""
    return f"{ALIAS_NOTES[1]} from @champion at {when} by {_cell(actor)}: {_cell(reason)}."


def restored_note(*, reason: str, actor: str, when: str, from_version: str) -> str:
    """The line :func:`with_alias_note` puts on the version a rollback made champion again
    (away from ``from_version``)."""
    return (
        f"{ALIAS_NOTES[2]} to @champion at {when} by {_cell(actor)}, rolling back version "
        f"{_cell(from_version)}: {_cell(reason)}."
    )


def copied_note(*, source: str, env: str, when: str, f1: float, gold_hash: str) -> str:
    """The line :func:`with_alias_note` puts on a version copied from another environment
    (``source``, e.g. ``brand-ner-dev/1``) and scored ``f1`` on ``env``'s gold set."""
    return (
        f"{ALIAS_NOTES[3]} from {_cell(source)} at {when}: F1 {f1:.4f} on {_cell(env)}'s gold "
        f"set {gold_hash[:12]} (the card below is the source's: its scores are on the "
        "source's gold set)."
    )


def replaced_note(*, by_version: str, reason: str, when: str) -> str:
    """The line :func:`with_alias_note` puts on a champion a promotion moved away from:
    ``by_version`` took @champion at ``when`` for ``reason``."""
    return (
        f"{ALIAS_NOTES[4]} as @champion at {when} by version {_cell(by_version)}: {_cell(reason)}."
    )


def rescored_note(*, when: str, f1: float, gold_hash: str, card_gold_hash: str) -> str:
    """The line :func:`with_alias_note` puts on a version scored ``f1`` on gold set
    ``gold_hash`` (a revision: posts forgotten, withdrawn or relabelled) other than the one
    ``card_gold_hash`` its card's tables are on."""
    return (
        f"{ALIAS_NOTES[5]} at {when}: F1 {f1:.4f} on gold set {gold_hash[:12]} (the tables "
        f"below are on gold set {card_gold_hash[:12]}, the one it was trained against)."
    )


def without_alias_notes(card: str) -> str:
    """``card`` as written when its version was trained: the alias notes
    (:func:`with_alias_note`) and the line that introduces the card below them taken out.
    A copy in another environment starts from it (the notes are the source's history)."""
    lines = [ln for ln in card.splitlines() if not ln.startswith((*ALIAS_NOTES, BELOW_NOTES))]
    kept: list[str] = []
    for line in lines:  # no run of blank lines where the notes were
        if line.strip() or (kept and kept[-1].strip()):
            kept.append(line)
    return "\n".join(kept).rstrip()


def titled_as_copy(card: str, model_name: str, version: str) -> str:
    """``card`` of a source version (:func:`without_alias_notes`) titled as its copy:
    ``# brand-ner-prod version 2, a copy of brand-ner-staging version 1 (…)`` (a trial read
    the source's title on the copy's card as the copy's name); a card without the title
    :func:`render` writes is returned as it is."""
    first, sep, rest = card.partition("\n")
    if not first.startswith("# ") or " version " not in first:
        return card
    return f"# {_cell(model_name)} version {_cell(version)}, a copy of {first[2:]}{sep}{rest}"


def with_alias_note(card: str, note: str) -> str:
    """``card`` (a version's description) with ``note`` (:func:`manual_promotion_note`,
    :func:`rollback_note`, :func:`restored_note`, :func:`copied_note`,
    :func:`replaced_note`, :func:`rescored_note`) under its title,
    newest first: it replaces an earlier note of its own kind and keeps the other kinds'
    below it (a version promoted by hand, then rolled back, shows both); the gate's verdict
    recorded when it was trained stays below them. Kept within
    :data:`MLFLOW_DESCRIPTION_LIMIT` by cutting the card's end at a line boundary. Raises
    :class:`ValueError` for a note of no kind."""
    kinds = [start for start in ALIAS_NOTES if note.startswith(start)]
    if not kinds:
        raise ValueError(f"not an alias note: {note[:40]!r}")
    lines = card.splitlines()
    earlier = [ln for ln in lines if ln.startswith(ALIAS_NOTES) and not ln.startswith(kinds[0])]
    lines = [line for line in lines if not line.startswith(ALIAS_NOTES)]
    title = lines[:1] if lines and lines[0].startswith("# ") else []
    rest = lines[len(title) :]
    while rest and not rest[0].strip():
        rest = rest[1:]
    while rest and rest[0] == BELOW_NOTES:
        rest = rest[1:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    below = [BELOW_NOTES, ""] if rest else []
    notes = [line for n in (note, *earlier) for line in (n, "")]
    text = "\n".join([*title, *([""] if title else []), *notes, *below, *rest]).rstrip()
    return _fit(text, MLFLOW_DESCRIPTION_LIMIT)
