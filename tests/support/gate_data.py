"""Tiny scored evaluation sets for tests of the gate and the model card, and labelled posts
of two time windows for train-ner runs that freeze a canary set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ner import layout
from ner.gate import SetScores, score_spans
from ner.storage import Storage
from ner.types import Span
from tests.support.ls_json import result, span, task

TEXT = "x" * 200
"""Every post's text: one-character spans at even offsets never overlap."""


def unit_span(slot: int, label: str = "BRAND") -> Span:
    """A one-character span at ``2 * slot`` of :data:`TEXT`."""
    return Span(2 * slot, 2 * slot + 1, label, "x")


def scored(counts: Sequence[tuple[int, int, int]], prefix: str = "p") -> SetScores:
    """A scored set whose post ``{prefix}{i:03d}`` has exactly ``counts[i] = (tp, fp, fn)``."""
    gold: dict[str, list[Span]] = {}
    pred: dict[str, list[Span]] = {}
    for i, (tp, fp, fn) in enumerate(counts):
        post_id = f"{prefix}{i:03d}"
        gold[post_id] = [unit_span(k) for k in range(tp + fn)]
        pred[post_id] = [unit_span(k) for k in range(tp)] + [unit_span(50 + k) for k in range(fp)]
    return score_spans(gold, pred, ["BRAND"])


def gold_win() -> tuple[SetScores, SetScores]:
    """(challenger, champion) on 20 gold posts of one span each: the champion finds 14
    (F1 28/34 = 0.8235), the challenger all 20 (F1 1)."""
    champion = scored([(1, 0, 0)] * 14 + [(0, 0, 1)] * 6, "g")
    challenger = scored([(1, 0, 0)] * 20, "g")
    return challenger, champion


def canary(found: int, total: int = 10) -> SetScores:
    """A canary set of ``total`` one-span posts of which the model finds ``found``."""
    return scored([(1, 0, 0)] * found + [(0, 0, 1)] * (total - found), "c")


NEW_BRANDS = ["Glossier", "Fenty", "Kosas", "Tower28", "Ilia", "Saie", "Merit", "Rhode"]
NEW_TEMPLATES = [
    "just tried the new {b} gloss and wow",
    "{b} blush is my holy grail this week",
    "obsessed with my {b} haul #makeup",
    "is {b} worth the hype? asking for a friend",
    "restocked {b} concealer today",
    "the {b} launch sold out in minutes",
    "wearing {b} lip oil for the party tonight",
    "{b} skin tint review coming soon",
    "my sister stole my {b} palette again",
    "cannot stop buying {b} this month",
]
OLD_BRANDS = ["Revlon", "Maybelline", "Clinique", "Lancome", "Nivea", "Avon"]
OLD_TEMPLATES = [
    "Throwback review: {b} foundation from the archives",
    "my mom swore by {b} cold cream",
    "{b} used to sell this in every drugstore",
    "found an old {b} compact in the drawer",
]
FORUM_TEMPLATE = "Forum thread: does anyone still stock {b} powder?"


def labelled_posts() -> list[tuple[dict[str, Any], str]]:
    """``(post, brand)``: 80 posts of this week (source x), 24 from August (source x) and
    6 undated forum posts (another source)."""
    out: list[tuple[dict[str, Any], str]] = []
    for i, (b, t) in enumerate((b, t) for t in NEW_TEMPLATES for b in NEW_BRANDS):
        when = f"2026-11-{20 + i % 3:02d}T{i % 24:02d}:00:00Z"
        out.append(({"id": f"new{i:03d}", "text": t.format(b=b), "created_at": when}, b))
    for i, (b, t) in enumerate((b, t) for t in OLD_TEMPLATES for b in OLD_BRANDS):
        when = f"2026-08-{1 + i % 28:02d}T10:00:00Z"
        out.append(({"id": f"old{i:03d}", "text": t.format(b=b), "created_at": when}, b))
    for i, b in enumerate(OLD_BRANDS):
        post = {"id": f"forum{i:02d}", "text": FORUM_TEMPLATE.format(b=b), "source": "forum"}
        out.append((post, b))
    return [({"source": "x", **post}, brand) for post, brand in out]


def write_two_windows(storage: Storage) -> None:
    """The posts as a fetched batch and their annotations as one export snapshot."""
    labelled = labelled_posts()
    storage.write_lines(
        layout.posts_batch("20261122T000000Z"), (json.dumps(p) for p, _ in labelled)
    )
    tasks = []
    for number, (post, brand) in enumerate(labelled, start=1):
        sp = span(post["text"], brand)
        results = [result(sp.start, sp.end, sp.text)]
        tasks.append(task(number, post["text"], results, post_id=post["id"]))
    storage.write_json("exports/20261122T000000Z-gold.json", tasks)
