"""Prefect's temporary API for one ``brandloop`` command, outside the command's process group
and ended with the command.

Without ``PREFECT_API_URL`` Prefect starts a local API server as a child process on first
use (``prefect.server.api.server.SubprocessASGIServer``), in the command's process group.
A SIGTERM to that group (``kill -- -PGID``) then stopped the API first, and Prefect's engine
retried reporting the ended run to it for about 150 s; a SIGKILL of the command alone left
the API running with no parent.

:func:`use_own_session_api` makes Prefect start it in a session of its own, through this
module's ``__main__``, which runs the server's module and ends it (SIGTERM to itself, as
``stop`` would) once the command that started it is gone. The command's own SIGINT/SIGTERM
handling (:mod:`apps.signals`) stops it last. (A stop of every process of a systemd unit,
its control group, still reaches it: :mod:`apps.signals` bounds that case.)
"""

from __future__ import annotations

import functools
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

#: How often the API's process checks that its command is alive, in seconds.
WATCH_EVERY_S = 0.5
#: After asking itself to stop (SIGTERM), how long the API's process waits before it ends
#: hard, in seconds (Prefect's own ``stop`` waits 5 s before SIGKILL).
STOP_GRACE_S = 10.0


def _popen_in_own_session(args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start Prefect's server command ``args`` (``[python, "-m", module, ...]``) through
    this module, in a new session, watching this process."""
    if len(args) < 3 or args[1] != "-m":
        raise ValueError(f"unexpected Prefect server command: {args[:3]!r}")
    command = [args[0], "-m", __name__, str(os.getpid()), *args[1:]]
    return subprocess.Popen(command, start_new_session=True, **kwargs)


@functools.cache
def _own_session_server() -> type[Any]:
    """A ``SubprocessASGIServer`` whose command starts through :func:`_popen_in_own_session`
    (Prefect calls ``subprocess.Popen`` from its server module; that name is swapped for
    the length of the call, in this thread, before any flow runs)."""
    from prefect.server.api import server as server_module

    class OwnSessionServer(server_module.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            real = server_module.subprocess
            server_module.subprocess = SimpleNamespace(Popen=_popen_in_own_session)  # type: ignore[assignment]
            try:
                return super()._run_uvicorn_command()
            finally:
                server_module.subprocess = real

    return OwnSessionServer


def use_own_session_api() -> None:
    """Have Prefect's temporary API, when it starts in this process, start in a session of
    its own and end with this process. Call before the first flow run; a server already
    started is left as it is. Relies on ``SubprocessASGIServer`` keeping one instance per
    port (``None``: the temporary API) and starting it in ``_run_uvicorn_command`` with
    ``subprocess.Popen``, as Prefect 3.8 does (checked by ``tests/unit/test_temporary_api.py``)."""
    server_class = _own_session_server()
    instances = server_class._instances
    current = instances.get(None)
    if current is not None and (current.running or isinstance(current, server_class)):
        return
    instances.pop(None, None)
    server_class()


def _watch_parent(parent: int) -> None:
    """Once ``parent`` is gone (this process re-parented), SIGTERM this process, and end it
    hard after :data:`STOP_GRACE_S` if it is still there."""
    while os.getppid() == parent:
        time.sleep(WATCH_EVERY_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_S)
    os._exit(1)


def main(argv: list[str]) -> None:
    """``python -m apps.temporary_api PARENT_PID -m MODULE ARG...``: run ``MODULE`` as
    ``__main__`` with ``ARG...`` while ``PARENT_PID`` lives."""
    if len(argv) < 3 or argv[1] != "-m":
        raise SystemExit("usage: python -m apps.temporary_api PARENT_PID -m MODULE [ARG...]")
    parent, module = int(argv[0]), argv[2]
    if os.getppid() != parent:  # the command ended before this process started
        raise SystemExit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    sys.argv = [module, *argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
