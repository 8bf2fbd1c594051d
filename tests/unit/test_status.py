"""apps.status: how one MLflow run becomes a row of ``brandloop status``'s evaluations."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from apps.status import _evaluation_row, label_studio_counts


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


def test_a_label_studio_nobody_runs_is_named_with_the_setting_to_check() -> None:
    from ner.errors import LabelStudioError
    from ner.settings import load_settings
    from tests.support.servers import free_port

    # Given a Label Studio URL where nothing listens
    url = f"http://127.0.0.1:{free_port()}"
    settings = load_settings({"label_studio_url": url, "label_studio_api_key": "k" * 40})
    # When its counts are asked for, the error names the server and what to check, no key
    with pytest.raises(LabelStudioError) as raised:
        label_studio_counts(settings)
    text = str(raised.value)
    assert text.startswith(f"Label Studio at {url}: ConnectError: ")
    assert text.endswith("(is Label Studio running there? NER_LABEL_STUDIO_URL names it)")
    assert "k" * 40 not in text
