"""Flow parameters refused by name before anything runs (Python callers have no typer)."""

from __future__ import annotations

import pytest

from ner.errors import ConfigError


def test_a_count_below_one_is_refused_and_none_takes_the_setting() -> None:
    from flows.context import require_counts

    require_counts(max_rounds=None, posts_per_round=1)
    with pytest.raises(ConfigError, match=r"^max_rounds=0, n_shards=-2: must be at least 1"):
        require_counts(max_rounds=0, workers=3, n_shards=-2)


@pytest.mark.parametrize(
    ("flow", "parameters", "named"),
    [
        # a trial's max_rounds=0 ran the setting's 3 rounds, and -1 returned "budget spent"
        ("flows.feedback_loop:feedback_loop", {"max_rounds": 0}, "max_rounds=0"),
        ("flows.feedback_loop:feedback_loop", {"posts_per_round": -1}, "posts_per_round=-1"),
        ("flows.feedback_loop:feedback_loop", {"poll_interval_s": 0}, "^poll_interval_s=0: must"),
        ("flows.feedback_loop:feedback_loop", {"wait_timeout_s": -5}, "wait_timeout_s=-5"),
        ("flows.apply_ner:apply_ner", {"max_posts": 0}, "max_posts=0"),
        ("flows.apply_ner:apply_ner", {"workers": 0}, "workers=0"),
    ],
)
def test_the_flows_refuse_counts_and_waits_out_of_range_before_running(
    flow: str, parameters: dict[str, int], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import flows.context

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the flow ran")

    monkeypatch.setattr(flows.context, "run_context", no_run)  # nothing may open
    module, name = flow.split(":")
    loaded = importlib.import_module(module)
    monkeypatch.setattr(loaded, "run_context", no_run)
    with pytest.raises(ConfigError, match=named):
        getattr(loaded, name).fn(source="jsonl", input_uri="posts.jsonl", **parameters)
