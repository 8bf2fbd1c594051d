"""Running ``brandloop`` (``python -m apps.cli``) in a process of its own, as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def plain_env(home: Path) -> dict[str, str]:
    """An environment with nothing but this interpreter's folder on PATH, the project on
    PYTHONPATH, and ``home`` as HOME with Prefect's home under it (no ``PREFECT_API_URL``:
    flows run on Prefect's temporary API)."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(home / "prefect"),
        "HOME": str(home),
    }


def run_cli(
    env: dict[str, str], *args: str, cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m apps.cli ARGS`` in ``cwd`` with ``env`` (and nothing else)."""
    return subprocess.run(
        [sys.executable, "-m", "apps.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
