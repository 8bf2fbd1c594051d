"""The run context (flows.context) without a Prefect server: built once, shared, frozen.

With Secret blocks and a real Prefect server: tests/integration/test_run_context_servers.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flows.context import RunContext, run_context
from ner.errors import ConfigError
from ner.settings import load_settings


def test_a_nested_run_with_the_same_overrides_shares_the_context(
    clean_env: None, tmp_path: Path
) -> None:
    overrides = {"storage_uri": str(tmp_path), "threshold": 0.4}
    with run_context(overrides) as outer:
        # Then a nested run with the same overrides gets the very same context
        with run_context(dict(overrides)) as inner:
            assert inner is outer
        # And one with other overrides gets its own
        with run_context({**overrides, "threshold": 0.5}) as other:
            assert other is not outer and other.settings.threshold == 0.5
    # And after the run, a new run builds a new context
    with run_context(overrides) as later:
        assert later is not outer
    assert outer.settings.threshold == 0.4 and outer.storage.uri() == (tmp_path / "dev").as_uri()
    assert outer.registry.model_name == outer.settings.registered_model_name


def test_the_context_is_frozen_and_bad_overrides_fail(clean_env: None, tmp_path: Path) -> None:
    ctx = RunContext.open(load_settings(storage_uri=str(tmp_path)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.settings = ctx.settings  # type: ignore[misc]
    with pytest.raises(ConfigError, match="NER_THRESHOLD"), run_context({"threshold": 2}):
        pass
