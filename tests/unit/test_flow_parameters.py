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


@pytest.mark.parametrize(
    ("flow", "name", "bound"),
    [
        ("flows.feedback_loop:feedback_loop", "max_rounds", {"minimum": 1}),
        ("flows.feedback_loop:feedback_loop", "posts_per_round", {"minimum": 1}),
        ("flows.feedback_loop:feedback_loop", "poll_interval_s", {"exclusiveMinimum": 0}),
        ("flows.feedback_loop:feedback_loop", "wait_timeout_s", {"minimum": 0}),
        ("flows.apply_ner:apply_ner", "max_posts", {"minimum": 1}),
        ("flows.apply_ner:apply_ner", "workers", {"minimum": 1}),
        ("flows.apply_ner:apply_ner", "n_shards", {"minimum": 1}),
    ],
)
def test_the_bounds_are_in_the_parameter_schema_a_deployment_enforces(
    flow: str, name: str, bound: dict[str, int]
) -> None:
    import importlib

    from prefect.utilities.callables import parameter_schema

    module, attr = flow.split(":")
    schema = parameter_schema(getattr(importlib.import_module(module), attr).fn).model_dump()
    prop = schema["properties"][name]
    shapes = prop.get("anyOf", [prop])  # a count may also be null (the setting's value)
    assert any(bound.items() <= shape.items() for shape in shapes), prop
