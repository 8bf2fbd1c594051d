"""apps.temporary_api: Prefect's temporary API started outside the command's process group,
through a launcher that ends it once the command is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.server.api import server as server_module

from apps import temporary_api


@pytest.fixture
def no_temporary_server() -> Any:
    """Prefect's registry of temporary servers without one for port None, restored after."""
    instances = server_module.SubprocessASGIServer._instances
    saved = instances.pop(None, None)
    yield instances
    instances.pop(None, None)
    if saved is not None:
        instances[None] = saved


def test_prefect_starts_its_temporary_api_through_the_launcher_in_a_new_session(
    no_temporary_server: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the command's hook installed, and Popen recorded instead of run
    started: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: started.append((args, kw)))
    temporary_api.use_own_session_api()
    # When Prefect builds its server command, as its start() does
    server = server_module.SubprocessASGIServer()
    server.port = 8123
    server._run_uvicorn_command()
    # Then the command runs uvicorn through the launcher, watching this process, in a new
    # session, with Prefect's own arguments and environment; the module's name is restored
    ((args, kwargs),) = started
    assert args[:5] == [sys.executable, "-m", "apps.temporary_api", str(os.getpid()), "-m"]
    assert args[5] == "uvicorn" and "prefect.server.api.server:create_app" in args
    assert args[args.index("--port") + 1] == "8123"
    assert kwargs["start_new_session"] is True
    assert kwargs["env"]["PREFECT__SERVER_EPHEMERAL"] == "1"
    assert server_module.subprocess is subprocess


def test_a_server_that_is_running_already_is_left_as_it_is(
    no_temporary_server: dict[Any, Any],
) -> None:
    running = server_module.SubprocessASGIServer()
    running.running = True
    temporary_api.use_own_session_api()
    assert no_temporary_server[None] is running
    running.running = False
    temporary_api.use_own_session_api()  # not started yet: replaced, once
    hooked = no_temporary_server[None]
    assert hooked is not running
    temporary_api.use_own_session_api()
    assert no_temporary_server[None] is hooked


def test_an_unexpected_server_command_is_refused() -> None:
    with pytest.raises(ValueError, match="unexpected Prefect server command"):
        temporary_api._popen_in_own_session(["uvicorn", "--port", "1"])


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_launched_process_ends_once_its_command_is_gone(tmp_path: Path) -> None:
    # Given a command (a shell) that starts a server through the launcher, then exits
    pid_file = tmp_path / "pid"
    launch = f"{sys.executable} -m apps.temporary_api $$ -m http.server 0 --bind 127.0.0.1"
    script = f"{launch} >/dev/null 2>&1 & echo $! > {pid_file}; sleep 3"
    with subprocess.Popen(["sh", "-c", script]) as command:
        deadline = time.monotonic() + 2
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server = int(pid_file.read_text())
        time.sleep(1)
        assert _running(server)  # serving while its command lives
        command.wait(timeout=10)
    # Then the server, re-parented, stops itself
    deadline = time.monotonic() + 15
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(server)


def test_the_launcher_refuses_a_command_it_cannot_run() -> None:
    with pytest.raises(SystemExit, match="usage"):
        temporary_api.main(["1", "uvicorn"])
    with pytest.raises(SystemExit) as ended:  # its command is gone already
        temporary_api.main([str(os.getpid() + 10**6), "-m", "http.server"])
    assert ended.value.code == 1
