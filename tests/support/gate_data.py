"""Tiny scored evaluation sets for tests of the gate and the model card (pure data)."""

from __future__ import annotations

from collections.abc import Sequence

from ner.gate import SetScores, score_spans
from ner.types import Span

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
