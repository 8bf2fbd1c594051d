"""Importing ``flows`` gives Prefect two defaults a plain script needs, and keeps the
environment's own values (``flows/__init__.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "PREFECT_SERVER_ANALYTICS_ENABLED")
PROBE = f"""
import json, os, flows
from prefect.settings import get_current_settings
server = get_current_settings().server
values = [os.environ.get(name) for name in {NAMES!r}]
print(json.dumps(values + [server.ephemeral.startup_timeout_seconds, server.analytics_enabled]))
"""


def _import_flows(**env: str) -> list[object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_importing_flows_sets_the_startup_timeout_and_turns_telemetry_off() -> None:
    # when a plain script imports the flows with no Prefect variable set
    # then Prefect's ephemeral API gets 180 s to start and the server sends no telemetry
    assert _import_flows() == ["180", "false", 180, False]


@pytest.mark.slow
def test_the_environment_keeps_its_own_prefect_values() -> None:
    # when the environment sets both itself, importing the flows changes neither
    values = _import_flows(
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="30",
        PREFECT_SERVER_ANALYTICS_ENABLED="true",
    )
    assert values == ["30", "true", 30, True]
