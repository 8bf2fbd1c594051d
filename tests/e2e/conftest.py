"""Fixtures for end-to-end runs of the flows (Prefect's ephemeral API, local MLflow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def prefect_ephemeral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A throw-away Prefect home: flows run against the ephemeral API, nothing shared."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings(
        updates={
            PREFECT_HOME: str(home),
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
            # a first start on a cold, busy 2-core machine can take longer than the 20 s default
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180,
        },
        set_defaults={},
        restore_defaults={PREFECT_API_URL},
    ):
        yield


@pytest.fixture
def loop_settings(tmp_path: Path) -> dict[str, object]:
    """Settings for a short loop in a private folder and MLflow store."""
    return {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "mlflow_artifact_location": (tmp_path / "mlartifacts").as_uri(),
        "train": {"max_epochs": 6},
        "seed": 7,
    }
