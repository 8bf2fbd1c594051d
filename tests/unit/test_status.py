"""apps.status: how one MLflow run becomes a row of ``brandloop status``'s evaluations."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from apps.status import _evaluation_row


def run(start_ms: int, end_ms: int | None) -> Any:
    """An evaluation run as MLflow's client returns it (the fields status reads)."""
    tags = {
        "brandloop.kind": "evaluation",
        "brandloop.role": "champion",
        "brandloop.model_version": "brand-ner/3",
        "brandloop.gold_hash": "abc123",
    }
    info = SimpleNamespace(start_time=start_ms, end_time=end_ms, run_id="r1", run_name="eval")
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, metrics={"gold_f1": 0.8}))


def test_an_evaluation_is_dated_when_its_run_ended() -> None:
    # Given a run that started at t=1,000 s and ended (scored) 600 s later
    row = _evaluation_row(None, run(1_000_000, 1_600_000))  # type: ignore[arg-type]
    assert row is not None
    # Then its row carries the end, when the score existed
    assert row.at == 1_600.0
    assert (row.role, row.model, row.gold_hash) == ("champion", "brand-ner/3", "abc123")


def test_a_run_still_going_is_dated_by_its_start() -> None:
    row = _evaluation_row(None, run(1_000_000, None))  # type: ignore[arg-type]
    assert row is not None and row.at == 1_000.0
