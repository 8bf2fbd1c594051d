"""Waiting for servers that answer asynchronously."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until ``check()`` holds, polling every 0.2 s; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)
