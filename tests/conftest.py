"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (WNUT-17, gazetteers). Missing is an error, not a skip."""
    path = Path(os.environ.get("BRANDLOOP_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        raise FileNotFoundError(
            f"shared data folder {path} is missing: tests need ../shared/data "
            "(or BRANDLOOP_SHARED_DATA)"
        )
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No NER_/MLFLOW_ variables leak into a test."""
    for name in list(os.environ):
        if name.startswith(("NER_", "MLFLOW_")):
            monkeypatch.delenv(name)
    yield
