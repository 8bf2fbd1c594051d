"""Real services on 127.0.0.1 for integration tests and benchmark scripts.

Every service runs as a subprocess in its own process group (its own session), with stdout
and stderr appended to a log file in the service's work directory. A :class:`ManagedServer`
starts it, polls its health URL, stops it (a polite signal to the whole group, then SIGKILL
after a timeout), and can ``pause()``/``resume()`` it (SIGSTOP/SIGCONT on the group) or
``kill()`` it and ``restart()`` it on the same port, so reliability tests can break a server
in the middle of a flow.

The services themselves (each a small dataclass holding the URL, credentials, the environment
a client needs, and the :class:`ManagedServer`):

* :func:`label_studio_service` - Label Studio 1.23.2 from its own virtualenv
  (:func:`ensure_label_studio_venv`), because its pins clash with prefect and mlflow.
* :func:`mlflow_service` - ``mlflow server`` on SQLite, artifacts proxied over HTTP.
* :func:`gcs_service` - ``gcp-storage-emulator`` (and :func:`in_process_gcs_emulator`).
* :func:`prefect_service` - ``prefect server start``, plus process workers.

Usable from pytest fixtures (``tests/integration/conftest.py``) and from plain scripts::

    with mlflow_service(Path("/tmp/mlf")) as mlf:
        client = mlflow.MlflowClient(tracking_uri=mlf.url, registry_uri=mlf.url)

Nothing here reads secrets from the environment or writes one to a log.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = PROJECT_ROOT / ".tools"
#: Bytecode cache for servers started from our venv (the venv itself holds no ``.pyc`` and
#: the environment may set PYTHONDONTWRITEBYTECODE); it halves MLflow's start-up time.
PYCACHE_DIR = TOOLS_DIR / "pycache"
LABEL_STUDIO_REQUIREMENTS = PROJECT_ROOT / "deployments" / "label-studio-requirements.txt"
LABEL_STUDIO_VENV = TOOLS_DIR / "label-studio-venv"
LABEL_STUDIO_TEMPLATE = TOOLS_DIR / "label-studio-data-template"
_VENV_MARKER = ".brandloop-requirements.sha256"
_TEMPLATE_MARKER = "brandloop-template.json"
# Bump when the way the Label Studio venv or its data template is built changes.
_BUILD_SCHEME = "1"

# Variables that would point a child at the wrong interpreter, profile or server.
_PYTHON_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
_PREFECT_CLIENT_ENV = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH",
    "PREFECT_HOME",
)


class ServerError(RuntimeError):
    """A local server could not be installed, started or stopped."""


class ServerStartError(ServerError):
    """A server exited or never became healthy; the message ends with its log's tail."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------
_ports_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free on ``host`` now and was not handed out before in this process.

    The port is released before returning, so another process could take it in between;
    remembering earlier answers avoids the common race of two servers launched together.
    """
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise ServerError(f"no free TCP port found on {host}")


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path | None, lines: int = 60, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log file (or a note saying why there are none)."""
    if path is None:
        return "(no log file)"
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError as exc:
        return f"(log file {path} unreadable: {exc})"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# Never send requests to 127.0.0.1 through a proxy configured in the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(
    url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None
) -> int | None:
    """HTTP status of a GET on ``url``, or None when nothing answered in time."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def http_post_json(url: str, payload: Any, timeout: float = 5.0) -> Any:
    """POST ``payload`` as JSON and return the decoded answer; None on any failure."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        return None


def wait_http(
    url: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    *,
    name: str | None = None,
    interval: float = 0.25,
) -> float:
    """Poll ``url`` until it answers 2xx; return the seconds waited.

    Raises :class:`ServerStartError` (with the tail of ``log_path``) as soon as ``proc``
    exits, or when ``timeout`` seconds pass without a healthy answer.
    """
    label = name or url
    started = time.monotonic()
    deadline = started + timeout
    status: int | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(
                f"{label} exited with code {proc.returncode} before {url} answered; "
                f"last lines of {log_path}:\n{log_tail(log_path)}"
            )
        remaining = deadline - time.monotonic()
        status = http_status(url, timeout=max(0.2, min(2.0, remaining)))
        if status is not None and 200 <= status < 300:
            if proc is not None and proc.poll() is not None:
                continue  # someone else answered on that port; report our exit above
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"{label} did not answer {url} with 2xx within {timeout:.0f} s "
                f"(last status: {status}); last lines of {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(interval)


def _venv_script(name: str) -> str:
    """A console script of the running interpreter's environment (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name!r} is not installed next to {sys.executable} nor on PATH")
    return found


def _bytecode_env() -> dict[str, str]:
    """Environment for a child from our venv: bytecode cached under ``.tools/pycache``,
    and no usage telemetry (tests talk to 127.0.0.1 only)."""
    PYCACHE_DIR.mkdir(parents=True, exist_ok=True)
    return {"PYTHONPYCACHEPREFIX": str(PYCACHE_DIR), "DO_NOT_TRACK": "true"}


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():  # not Linux: ask the kernel whether the group exists
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return sorted(members)


def _death_signal_preexec(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies.

    The kernel ties this to the *thread* that forked, so it is only used from the main
    thread; elsewhere the server would die when that thread ends.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)

    return preexec


# --------------------------------------------------------------------------------------
# ManagedServer
# --------------------------------------------------------------------------------------
_live_lock = threading.Lock()
_live_servers: set[ManagedServer] = set()


class _StartedOnEntry:
    """``with it:`` starts it unless it runs already, and stops it when the block ends."""

    def _is_running(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if not self._is_running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedServer(_StartedOnEntry):
    """One server subprocess: launch, health wait, stop, kill, restart, pause, resume.

    Args:
        name: short name used in log messages and the log file name.
        argv: the command line.
        workdir: folder for the log file (``{name}.log``); also the default cwd.
        port: the port the server listens on (kept across restarts).
        health_url: polled until it answers 2xx; None means "ready once launched".
        ready_check: optional extra condition, called after the health URL answers
            (e.g. "the worker has registered"); it must not raise.
        env: variables added to (a copy of) this process's environment.
        unset_env: variables removed from that environment.
        stop_signal: the polite signal :meth:`stop` sends to the process group.
        startup_timeout: seconds :meth:`wait_ready` waits for health by default.
        stop_timeout: seconds :meth:`stop` waits before it sends SIGKILL.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        workdir: Path,
        port: int,
        health_url: str | None,
        ready_check: Callable[[], bool] | None = None,
        env: Mapping[str, str] | None = None,
        unset_env: Sequence[str] = (),
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        startup_timeout: float = 120.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.workdir = Path(workdir)
        self.port = port
        self.health_url = health_url
        self.ready_check = ready_check
        self.env = dict(env or {})
        self.unset_env = tuple(unset_env)
        self.cwd = Path(cwd) if cwd is not None else self.workdir
        self.stop_signal = stop_signal
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_path = self.workdir / f"{name}.log"
        #: Seconds from the last launch to a healthy answer (None before the first one).
        self.startup_seconds: float | None = None
        #: How many times the server has been launched.
        self.launches = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._ready = False
        self._launched_at = 0.0

    # -- state ---------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Pid of the launched process (also its process-group id), or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the launched process is alive (paused counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def group_pids(self) -> list[int]:
        """Live processes of the server's process group (empty when it is gone)."""
        if self._proc is None:
            return []
        self._proc.poll()  # reap the leader if it exited
        return process_group_members(self._proc.pid)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<ManagedServer {self.name} port={self.port} pid={self.pid} {state}>"

    # -- lifecycle -------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process without waiting for it to become healthy.

        When called from the main thread on Linux, the kernel also sends ``stop_signal``
        to the server if this process dies without stopping it (SIGKILL, ``os._exit``).
        """
        if self.running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        if port_in_use(self.port):
            raise ServerStartError(
                f"cannot start {self.name}: something already listens on {LOCALHOST}:{self.port}"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cwd.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for key in self.unset_env:
            env.pop(key, None)
        env.update(self.env)
        self.launches += 1
        with self.log_path.open("ab") as logfile:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            logfile.write(
                f"\n=== {stamp} launch #{self.launches} of {self.name}: "
                f"{' '.join(self.argv)}\n".encode()
            )
            logfile.flush()
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_death_signal_preexec(self.stop_signal),
            )
        self._launched_at = time.monotonic()
        self._paused = False
        self._ready = False
        with _live_lock:
            _live_servers.add(self)
        log.info(
            "launched %s (pid %s, port %s, log %s)", self.name, self.pid, self.port, self.log_path
        )

    @property
    def ready(self) -> bool:
        """Whether the current launch has answered its health check."""
        return self._ready and self.running

    def poll_ready(self) -> bool:
        """One non-blocking health check of the current launch.

        Returns True once healthy (and records :attr:`startup_seconds`); raises
        :class:`ServerStartError` with the log's tail if the process has exited.
        """
        proc = self._proc
        if proc is None:
            raise ServerError(f"{self.name} was never launched")
        if self._ready and proc.poll() is None:
            return True
        if proc.poll() is None and self.health_url is not None:
            status = http_status(self.health_url, timeout=1.0)
            healthy = status is not None and 200 <= status < 300
        else:
            healthy = self.health_url is None
        if healthy and self.ready_check is not None:
            healthy = self.ready_check()
        if proc.poll() is not None:
            self.stop(timeout=5)  # reap it and anything it left in its group
            raise ServerStartError(
                f"{self.name} exited with code {proc.returncode}"
                f"{'' if self._ready else ' before it became healthy'}; "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            )
        if healthy:
            self._ready = True
            self.startup_seconds = time.monotonic() - self._launched_at
            log.info("%s healthy after %.1f s", self.name, self.startup_seconds)
        return healthy

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait for the health URL; return the seconds from launch to healthy.

        On failure (exit or timeout) the server is stopped and :class:`ServerStartError`
        raised with the tail of its log.
        """
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if time.monotonic() >= deadline:
                self.stop(timeout=5)
                raise ServerStartError(
                    f"{self.name} did not answer {self.health_url} with 2xx within "
                    f"{timeout:.0f} s; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        assert self.startup_seconds is not None
        return self.startup_seconds

    def start(self, timeout: float | None = None) -> Self:
        """Launch and wait until healthy."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def _wait_group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not self.group_pids():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop the whole process group; return the leader's exit code.

        Sends ``stop_signal`` (and SIGCONT, in case it is paused), waits up to ``timeout``
        seconds for every process of the group to exit, then SIGKILLs what is left.
        Safe to call twice, or after :meth:`kill`.
        """
        proc = self._proc
        if proc is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        if self.group_pids():
            self._signal_group(self.stop_signal)
            self._signal_group(signal.SIGCONT)
            if not self._wait_group_gone(timeout):
                log.warning(
                    "%s did not stop within %.0f s of %s; killing its process group",
                    self.name,
                    timeout,
                    signal.Signals(self.stop_signal).name,
                )
                self._signal_group(signal.SIGKILL)
                if not self._wait_group_gone(10.0):
                    log.error("%s: processes %s survived SIGKILL", self.name, self.group_pids())
        self._paused = False
        with _live_lock:
            _live_servers.discard(self)
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"{self.name} (pid {proc.pid}) would not exit") from exc

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, as seen by clients)."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        if not self._wait_group_gone(10.0):
            log.error("%s: processes %s survived SIGKILL", self.name, self.group_pids())
        self._proc.wait(timeout=5)
        self._paused = False
        with _live_lock:
            _live_servers.discard(self)

    def restart(self, timeout: float | None = None) -> Self:
        """Stop (if needed) and start again on the same port, with the same data."""
        if self.group_pids():
            self.stop()
        return self.start(timeout)

    def pause(self) -> None:
        """Freeze every process of the group (SIGSTOP): connections hang, nothing answers."""
        if not self.running:
            raise ServerError(f"cannot pause {self.name}: it is not running")
        self._signal_group(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        self._signal_group(signal.SIGCONT)
        self._paused = False

    def _is_running(self) -> bool:
        return self.running


@atexit.register
def _stop_leftovers() -> None:
    """Last resort when a caller forgot to stop a server: stop it at interpreter exit."""
    with _live_lock:
        leftovers = list(_live_servers)
    for server in leftovers:
        try:
            server.stop(timeout=5)
        except (OSError, ServerError) as exc:  # keep stopping the others
            log.error("could not stop %s at exit: %s", server.name, exc)


# --------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------
@dataclass
class Service(_StartedOnEntry):
    """A started (or startable) server and what a client needs to reach it."""

    server: ManagedServer
    url: str

    def env(self) -> dict[str, str]:
        """Environment variables that point brandloop and its SDKs at this service."""
        return {}

    def check(self) -> None:
        """Extra readiness check after the health URL answers (default: none)."""

    def wait_ready(self, timeout: float | None = None) -> float:
        seconds = self.server.wait_ready(timeout)
        self.check()
        return seconds

    def start(self, timeout: float | None = None) -> Self:
        self.server.launch()
        self.wait_ready(timeout)
        return self

    def restart(self, timeout: float | None = None) -> Self:
        self.server.restart(timeout)
        self.check()
        return self

    def stop(self) -> None:
        self.server.stop()

    def _is_running(self) -> bool:
        return self.server.running


# -- MLflow ------------------------------------------------------------------------------
@dataclass
class MlflowService(Service):
    """``mlflow server`` on SQLite; artifacts are uploaded through the server (HTTP)."""

    backend_store_uri: str
    artifacts_dir: Path

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.url, "NER_MLFLOW_TRACKING_URI": self.url}


def mlflow_service(
    workdir: Path,
    *,
    port: int | None = None,
    workers: int = 1,
    job_execution: bool = False,
    backend_store_uri: str | None = None,
    startup_timeout: float = 120.0,
) -> MlflowService:
    """An MLflow tracking server (not started yet) storing everything under ``workdir``.

    ``--serve-artifacts`` makes clients upload artifacts through the server, as in
    production. ``job_execution=False`` skips MLflow's job runner (8 extra processes,
    ~450 MB) that only the GenAI features use. ``backend_store_uri`` replaces the SQLite
    file (a PostgreSQL database from :func:`postgres_service`, as in production).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    backend = backend_store_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    artifacts = workdir / "artifacts"
    url = f"http://{LOCALHOST}:{port}"
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = {
        **_bytecode_env(),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if job_execution else "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    server = ManagedServer(
        "mlflow",
        argv,
        workdir=workdir,
        port=port,
        health_url=f"{url}/health",
        env=env,
        unset_env=("PYTHONDONTWRITEBYTECODE", "MLFLOW_TRACKING_URI"),
        stop_signal=signal.SIGTERM,
        startup_timeout=startup_timeout,
    )
    return MlflowService(server, url, backend_store_uri=backend, artifacts_dir=artifacts)


# -- GCS emulator ------------------------------------------------------------------------
@dataclass
class GcsService(Service):
    """``gcp-storage-emulator``; clients find it through STORAGE_EMULATOR_HOST."""

    project: str
    default_bucket: str | None
    data_dir: Path | None

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url}

    def client(self) -> Any:
        """A google-cloud-storage client bound to this emulator (anonymous credentials)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )


def gcs_service(
    workdir: Path,
    *,
    port: int | None = None,
    default_bucket: str | None = "brandloop-test",
    project: str = "brandloop-test",
    in_memory: bool = False,
    startup_timeout: float = 30.0,
) -> GcsService:
    """The GCS emulator as a subprocess (not started yet), data under ``workdir/data``.

    On-disk storage (the default) survives :meth:`ManagedServer.restart`; ``in_memory``
    does not.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    data_dir = None if in_memory else workdir / "data"
    url = f"http://{LOCALHOST}:{port}"
    argv = [sys.executable, "-m", "gcp_storage_emulator"]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    argv += ["start", "--host", LOCALHOST, "--port", str(port)]
    if default_bucket:
        argv += ["--default-bucket", default_bucket]
    if in_memory:
        argv.append("--in-memory")
    server = ManagedServer(
        "gcs-emulator",
        argv,
        workdir=workdir,
        port=port,
        health_url=f"{url}/",
        env=_bytecode_env(),
        unset_env=("PYTHONDONTWRITEBYTECODE",),
        stop_signal=signal.SIGTERM,  # it ignores SIGINT
        startup_timeout=startup_timeout,
    )
    return GcsService(
        server, url, project=project, default_bucket=default_bucket, data_dir=data_dir
    )


@contextlib.contextmanager
def in_process_gcs_emulator(
    *, port: int | None = None, default_bucket: str | None = None, data_dir: Path | None = None
) -> Iterator[str]:
    """The GCS emulator on a thread of this process; yields its URL (in memory by default).

    Cheaper than :func:`gcs_service` (no interpreter start) but it cannot be paused or
    killed, and it shares this process's GIL.
    """
    from gcp_storage_emulator.server import create_server

    port = port or free_port()
    server = create_server(
        LOCALHOST,
        port,
        in_memory=data_dir is None,
        default_bucket=default_bucket,
        data_dir=str(data_dir) if data_dir is not None else None,
    )
    server.start()
    try:
        url = f"http://{LOCALHOST}:{port}"
        wait_http(f"{url}/", 10.0, name="in-process GCS emulator")
        yield url
    finally:
        server.stop()


# -- PostgreSQL --------------------------------------------------------------------------
#: System user the server runs as when we are root (PostgreSQL refuses to run as root).
POSTGRES_SYSTEM_USER = "brandloop-pg"


def _postgres_bin() -> Path:
    """The PostgreSQL server binaries: ``$BRANDLOOP_POSTGRES_BIN``, else the newest Debian
    ``postgresql`` package's (``make install-postgres`` installs it; Label Studio needs its
    contrib extension ``pg_trgm``). Missing is an error, never a skip."""
    if os.environ.get("BRANDLOOP_POSTGRES_BIN"):
        return Path(os.environ["BRANDLOOP_POSTGRES_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise ServerStartError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: run "
            "`make install-postgres` (Debian's postgresql package) or set BRANDLOOP_POSTGRES_BIN"
        )
    return found[-1].parent


def _as_postgres_user(argv: Sequence[str | os.PathLike[str]]) -> list[str | os.PathLike[str]]:
    """``argv`` run as :data:`POSTGRES_SYSTEM_USER` when we are root, else as it is."""
    if os.geteuid() != 0:
        return list(argv)
    return ["runuser", "-u", POSTGRES_SYSTEM_USER, "--", *argv]


def _prepare_postgres_user(folder: Path) -> None:
    """As root: create the system user the server runs as and give it ``folder``."""
    if os.geteuid() != 0:
        return
    import pwd

    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER],
            check=True,
            capture_output=True,
            timeout=30,
        )
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    for path in (folder.parent, folder):
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class PostgresDatabase:
    """One database on a :class:`PostgresService`, with the URLs each client wants."""

    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)

    def url(self, driver: str = "postgresql") -> str:
        """``driver://user:password@host:port/name`` (``postgresql+asyncpg`` for Prefect)."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"

    def django_env(self) -> dict[str, str]:
        """Label Studio's variables for this database, as ``deployments/compose.yaml`` sets."""
        return {
            "DJANGO_DB": "default",
            "POSTGRE_NAME": self.name,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.password,
            "POSTGRE_HOST": self.host,
            "POSTGRE_PORT": str(self.port),
        }


@dataclass
class PostgresService(Service):
    """A PostgreSQL server (Debian's package) on 127.0.0.1 with password auth."""

    user: str
    password: str = field(repr=False)
    data_dir: Path

    def database(self, name: str) -> PostgresDatabase:
        return PostgresDatabase(LOCALHOST, self.server.port, name, self.user, self.password)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql over TCP; returns its unaligned output (raises on error)."""
        done = subprocess.run(
            [
                str(_postgres_bin() / "psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                self.database(database).url(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise ServerError(f"psql failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout.strip()

    def create_database(self, name: str) -> PostgresDatabase:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.database(name)

    def stop(self) -> None:
        """Stop the server and remove its cluster folder."""
        self.server.stop()
        shutil.rmtree(self.data_dir.parent.parent, ignore_errors=True)

    def accepts_connections(self) -> bool:
        done = subprocess.run(
            [str(_postgres_bin() / "pg_isready"), "-h", LOCALHOST, "-p", str(self.server.port)],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return done.returncode == 0


def postgres_service(
    workdir: Path, *, port: int | None = None, startup_timeout: float = 60.0
) -> PostgresService:
    """A PostgreSQL server (not started yet) with its cluster in a fresh folder.

    The cluster is created here (``initdb``, scram-sha-256 password auth for TCP, as the
    compose stack's ``postgres`` image does); as root, it belongs to a system user of its
    own. The server listens on 127.0.0.1 only; its socket lives in its own folder.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # /tmp/pytest-of-root is private to root: the cluster gets a folder the server may reach.
    cluster = Path(tempfile.mkdtemp(prefix="brandloop-pg-")) / "cluster"
    cluster.mkdir()
    _prepare_postgres_user(cluster)
    password = secrets.token_hex(12)
    pwfile = cluster.parent / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        os.chown(pwfile, cluster.stat().st_uid, cluster.stat().st_gid)
    initdb = _as_postgres_user(
        [
            _postgres_bin() / "initdb",
            "-D",
            cluster / "data",
            "-U",
            "brandloop",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-locale",
        ]
    )
    done = subprocess.run(
        [str(a) for a in initdb], capture_output=True, text=True, timeout=120, check=False
    )
    pwfile.unlink()
    if done.returncode != 0:
        raise ServerStartError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
    port = port or free_port()
    argv = _as_postgres_user(
        [
            _postgres_bin() / "postgres",
            "-D",
            cluster / "data",
            "-h",
            LOCALHOST,
            "-p",
            str(port),
            "-k",
            cluster,
        ]
    )
    service: PostgresService
    server = ManagedServer(
        "postgres",
        argv,
        workdir=workdir,
        port=port,
        health_url=None,
        ready_check=lambda: service.accepts_connections(),
        stop_signal=signal.SIGINT,  # "fast" shutdown
        startup_timeout=startup_timeout,
    )
    service = PostgresService(
        server,
        f"postgresql://{LOCALHOST}:{port}",
        user="brandloop",
        password=password,
        data_dir=cluster / "data",
    )
    return service


# -- Prefect -----------------------------------------------------------------------------
def _worker_argv(pool: str, *options: str) -> list[str]:
    """``prefect worker start --pool POOL OPTIONS…`` as an argv (no prompts)."""
    return [_venv_script("prefect"), "--no-prompt", "worker", "start", "--pool", pool, *options]


@dataclass
class PrefectService(Service):
    """``prefect server start`` with its own PREFECT_HOME; clients use :attr:`api_url`."""

    api_url: str
    home: Path
    client_home: Path

    def env(self) -> dict[str, str]:
        """Client settings: the API URL, a private PREFECT_HOME, analytics off."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.client_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def _client_env(self, extra_env: Mapping[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        for key in _PREFECT_CLIENT_ENV:
            env.pop(key, None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(_bytecode_env())
        env.update(self.env())
        env.update(extra_env or {})
        return env

    def worker_names(self, pool: str) -> list[str]:
        """Names of the workers the server knows for ``pool`` (empty if unreachable)."""
        body = http_post_json(f"{self.api_url}/work_pools/{pool}/workers/filter", {})
        if not isinstance(body, list):
            return []
        return [str(w.get("name")) for w in body if isinstance(w, dict)]

    def cli(
        self,
        *args: str,
        timeout: float = 120.0,
        cwd: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``prefect --no-prompt <args>`` against this server; raise on failure."""
        argv = [_venv_script("prefect"), "--no-prompt", *args]
        done = _run_group(argv, self._client_env(extra_env), timeout, cwd or self.client_home)
        if done.returncode != 0:
            raise ServerError(
                f"`prefect {' '.join(args)}` failed with code {done.returncode}:\n"
                f"{done.stdout[-4000:]}"
            )
        return done

    def run_worker(
        self,
        pool: str,
        *,
        timeout: float = 300.0,
        cwd: Path | None = None,
        work_queues: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``prefect worker start --pool POOL --run-once`` to completion.

        The worker picks up the runs that are due, executes them and exits. Its output is
        returned (``stdout``, stderr merged in); a non-zero exit is not raised, so tests
        can assert on it. On timeout the worker's process group is stopped and
        :class:`ServerError` raised.
        """
        argv = _worker_argv(pool, "--run-once")
        for queue in work_queues:
            argv += ["--work-queue", queue]
        return _run_group(argv, self._client_env(extra_env), timeout, cwd or self.client_home)

    def worker(
        self,
        pool: str,
        workdir: Path,
        *,
        name: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> ManagedServer:
        """A long-running process worker (not started yet; ``with`` starts and stops it).

        ``start()`` returns once its health check answers and the server lists it among
        the pool's workers. SIGINT stops it (it ignores SIGTERM for a while). Stop workers
        before the server. ``name`` defaults to a unique one.
        """
        port = free_port()
        name = name or f"{pool}-worker-{secrets.token_hex(4)}"
        argv = _worker_argv(pool, "--name", name, "--with-healthcheck")
        env = {
            **self.env(),
            **_bytecode_env(),
            **(extra_env or {}),
            "PREFECT_WORKER_WEBSERVER_HOST": LOCALHOST,
            "PREFECT_WORKER_WEBSERVER_PORT": str(port),
        }
        return ManagedServer(
            f"prefect-worker-{name}",
            argv,
            workdir=Path(workdir),
            port=port,
            health_url=f"http://{LOCALHOST}:{port}/health",
            ready_check=lambda: name in self.worker_names(pool),
            env=env,
            unset_env=(*_PREFECT_CLIENT_ENV, "PYTHONDONTWRITEBYTECODE"),
            stop_signal=signal.SIGINT,
            startup_timeout=startup_timeout,
        )


def _run_group(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; on timeout stop the whole group."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        text = out.decode("utf-8", errors="replace")
        raise ServerError(
            f"`{' '.join(argv)}` did not finish within {timeout:.0f} s:\n{text[-4000:]}"
        ) from exc
    leftovers = process_group_members(proc.pid)
    if leftovers:  # children that outlived the command would be orphans
        log.warning("killing %s left behind by %s", leftovers, argv[0])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(
        list(argv), proc.returncode, out.decode("utf-8", errors="replace"), None
    )


def prefect_service(
    workdir: Path,
    *,
    port: int | None = None,
    ui: bool = False,
    database_url: str | None = None,
    startup_timeout: float = 120.0,
) -> PrefectService:
    """A Prefect API server (not started yet) with its SQLite DB in ``workdir/home``, or on
    ``database_url`` (``postgresql+asyncpg://...`` from :func:`postgres_service`)."""
    workdir = Path(workdir)
    home = workdir / "home"
    client_home = workdir / "client-home"
    home.mkdir(parents=True, exist_ok=True)
    client_home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://{LOCALHOST}:{port}"
    argv = [
        _venv_script("prefect"),
        "--no-prompt",
        "server",
        "start",
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--analytics-off",
        "--ui" if ui else "--no-ui",
    ]
    env = {
        **_bytecode_env(),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true" if ui else "false",
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    server = ManagedServer(
        "prefect-server",
        argv,
        workdir=workdir,
        port=port,
        health_url=f"{url}/api/health",
        env=env,
        unset_env=(
            *_PREFECT_CLIENT_ENV,
            "PYTHONDONTWRITEBYTECODE",
            "PREFECT_API_DATABASE_CONNECTION_URL",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        ),
        stop_signal=signal.SIGTERM,  # SIGINT during start-up takes 10 s or more
        startup_timeout=startup_timeout,
    )
    return PrefectService(server, url, api_url=f"{url}/api", home=home, client_home=client_home)


# -- Label Studio ------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelStudioCredentials:
    """The first user Label Studio creates on an empty data dir, and its API token."""

    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)

    @classmethod
    def generate(cls) -> LabelStudioCredentials:
        return cls(
            username="admin@brandloop.test",
            password=secrets.token_urlsafe(16),
            token=secrets.token_hex(20),  # 40 characters, the legacy token length
        )


@dataclass
class LabelStudioService(Service):
    """Label Studio (own venv) with a user and a legacy API token ready to use."""

    credentials: LabelStudioCredentials
    data_dir: Path

    @property
    def token(self) -> str:
        return self.credentials.token

    def env(self) -> dict[str, str]:
        return {"NER_LABEL_STUDIO_URL": self.url, "NER_LABEL_STUDIO_API_KEY": self.token}

    def check(self) -> None:
        """The API accepts the token (a 401 here means legacy tokens are off)."""
        status = http_status(
            f"{self.url}/api/current-user/whoami",
            timeout=10.0,
            headers={"Authorization": f"Token {self.token}"},
        )
        if status != 200:
            raise ServerStartError(
                f"Label Studio at {self.url} is up but rejects the API token "
                f"(GET /api/current-user/whoami -> {status}); last lines of "
                f"{self.server.log_path}:\n{self.server.log_tail()}"
            )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two sessions never build the same venv at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_uv() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    private = TOOLS_DIR / "bin" / "uv"
    return str(private) if private.exists() else None


def _requirements_key(requirements: Path) -> str:
    digest = hashlib.sha256()
    digest.update(requirements.read_bytes())
    digest.update(f"|python{sys.version_info[0]}.{sys.version_info[1]}|{_BUILD_SCHEME}".encode())
    return digest.hexdigest()


def _run_logged(
    argv: Sequence[str | os.PathLike[str]], logfile: Path, env: Mapping[str, str]
) -> None:
    with logfile.open("ab") as out:
        out.write(f"\n$ {' '.join(str(a) for a in argv)}\n".encode())
        out.flush()
        done = subprocess.run(
            [str(a) for a in argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if done.returncode != 0:
        raise ServerError(
            f"`{' '.join(str(a) for a in argv)}` failed with code {done.returncode}; "
            f"last lines of {logfile}:\n{log_tail(logfile)}"
        )


def ensure_label_studio_venv(
    venv_dir: Path = LABEL_STUDIO_VENV,
    requirements: Path = LABEL_STUDIO_REQUIREMENTS,
    *,
    python: str | None = None,
) -> Path:
    """Create (once) the separate Label Studio virtualenv and return its folder.

    Reused when its marker file holds the hash of ``requirements`` (and of the Python
    version); rebuilt from scratch otherwise. Uses ``uv`` when it is on PATH or at
    ``.tools/bin/uv``, else ``python -m venv`` + pip. Bytecode is compiled at install time,
    which saves ~10 s on every Label Studio start. The install log is
    ``{venv_dir}.install.log``.
    """
    venv_dir = Path(venv_dir)
    requirements = Path(requirements)
    key = _requirements_key(requirements)
    marker = venv_dir / _VENV_MARKER
    executable = venv_dir / "bin" / "label-studio"

    def ready() -> bool:
        return executable.exists() and marker.is_file() and marker.read_text().strip() == key

    if ready():
        return venv_dir
    with _file_lock(venv_dir.with_name(venv_dir.name + ".lock")):
        if ready():
            return venv_dir
        started = time.monotonic()
        install_log = venv_dir.with_name(venv_dir.name + ".install.log")
        install_log.write_text("")
        shutil.rmtree(venv_dir, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in _PYTHON_ENV}
        env["UV_PYTHON_DOWNLOADS"] = "never"
        base_python = python or sys.executable
        venv_python = venv_dir / "bin" / "python"
        uv = _find_uv()
        log.info("building the Label Studio venv at %s (%s)", venv_dir, "uv" if uv else "pip")
        if uv:
            _run_logged(
                [uv, "venv", "--quiet", "--python", base_python, venv_dir], install_log, env
            )
            _run_logged(
                [
                    uv,
                    "pip",
                    "install",
                    "--python",
                    venv_python,
                    "--compile-bytecode",
                    "-r",
                    requirements,
                ],
                install_log,
                env,
            )
        else:
            _run_logged([base_python, "-m", "venv", venv_dir], install_log, env)
            _run_logged(
                [
                    venv_python,
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-r",
                    requirements,
                ],
                install_log,
                env,
            )
            _run_logged(
                [venv_python, "-m", "compileall", "-q", "-j", "0", venv_dir / "lib"],
                install_log,
                env,
            )
        if not executable.exists():
            raise ServerError(f"{executable} missing after install; see {install_log}")
        marker.write_text(key + "\n")
        log.info("Label Studio venv ready in %.1f s", time.monotonic() - started)
        return venv_dir


def label_studio_env(data_dir: Path, credentials: LabelStudioCredentials) -> dict[str, str]:
    """The environment a test Label Studio starts with (the README's local block sets the
    same switches: ``tests/e2e/test_readme_blocks.py``)."""
    return {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "DO_NOT_TRACK": "true",
        # Label Studio reports errors and 2 % of traces to its vendor's Sentry by default.
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_USERNAME": credentials.username,
        "LABEL_STUDIO_PASSWORD": credentials.password,
        "LABEL_STUDIO_USER_TOKEN": credentials.token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "SSRF_PROTECTION_ENABLED": "false",  # webhooks to 127.0.0.1
        "ML_BLOCK_LOCAL_IP": "false",  # ML backends on 127.0.0.1 (its own switch, on by default)
    }


def _label_studio_server(
    venv: Path,
    workdir: Path,
    data_dir: Path,
    credentials: LabelStudioCredentials,
    port: int,
    startup_timeout: float,
) -> ManagedServer:
    env = label_studio_env(data_dir, credentials)
    argv: list[str | os.PathLike[str]] = [
        venv / "bin" / "label-studio",
        "start",
        "--no-browser",
        "--internal-host",
        LOCALHOST,
        "--port",
        str(port),
    ]
    return ManagedServer(
        "label-studio",
        argv,
        workdir=workdir,
        port=port,
        health_url=f"http://{LOCALHOST}:{port}/health",
        env=env,
        unset_env=(*_PYTHON_ENV, "DJANGO_SETTINGS_MODULE"),
        stop_signal=signal.SIGTERM,  # SIGINT is lost while it imports
        startup_timeout=startup_timeout,
    )


def ensure_label_studio_template(
    venv: Path, template_dir: Path = LABEL_STUDIO_TEMPLATE, *, startup_timeout: float = 240.0
) -> tuple[Path, LabelStudioCredentials]:
    """A migrated, empty Label Studio data dir (with its user and token), built once.

    A fresh data dir costs ~35 s of database migrations on every start; a copy of this
    template starts in ~5 s. Returns ``(data_dir, credentials)``; copy ``data_dir``
    before use, never start a server on it. Rebuilt when the venv's requirements change.
    """
    template_dir = Path(template_dir)
    marker = template_dir / _TEMPLATE_MARKER
    key = (Path(venv) / _VENV_MARKER).read_text().strip()

    def load() -> tuple[Path, LabelStudioCredentials] | None:
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != key:
            return None
        creds = LabelStudioCredentials(meta["username"], meta["password"], meta["token"])
        return template_dir / "data", creds

    found = load()
    if found:
        return found
    with _file_lock(template_dir.with_name(template_dir.name + ".lock")):
        found = load()
        if found:
            return found
        started = time.monotonic()
        shutil.rmtree(template_dir, ignore_errors=True)
        for stale in template_dir.parent.glob(f"{template_dir.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a build that crashed
        building = template_dir.with_name(f"{template_dir.name}.building-{os.getpid()}")
        credentials = LabelStudioCredentials.generate()
        service = LabelStudioService(
            _label_studio_server(
                venv, building, building / "data", credentials, free_port(), startup_timeout
            ),
            url="",
            credentials=credentials,
            data_dir=building / "data",
        )
        service.url = f"http://{LOCALHOST}:{service.server.port}"
        try:
            service.start()
        finally:
            service.stop()
        meta = {
            "key": key,
            **{k: getattr(credentials, k) for k in ("username", "password", "token")},
        }
        (building / _TEMPLATE_MARKER).write_text(json.dumps(meta))
        os.chmod(building / _TEMPLATE_MARKER, 0o600)
        os.replace(building, template_dir)
        log.info("Label Studio data template built in %.1f s", time.monotonic() - started)
    found = load()
    if found is None:
        raise ServerError(f"Label Studio template {template_dir} unreadable after build")
    return found


def label_studio_service(
    workdir: Path,
    *,
    port: int | None = None,
    venv: Path | None = None,
    use_template: bool = True,
    database: PostgresDatabase | None = None,
    startup_timeout: float = 240.0,
) -> LabelStudioService:
    """Label Studio (not started yet) with its data under ``workdir/data``.

    Builds the venv if needed (:func:`ensure_label_studio_venv`). With ``use_template``
    the data dir starts as a copy of a migrated empty one (:func:`ensure_label_studio_template`),
    which starts in seconds; otherwise it is created from scratch with new credentials.
    With ``database`` it runs on PostgreSQL as the compose stack configures it
    (``DJANGO_DB=default``, ``POSTGRE_*``); the SQLite template does not apply then.
    """
    workdir = Path(workdir)
    use_template = use_template and database is None
    workdir.mkdir(parents=True, exist_ok=True)
    venv = venv or ensure_label_studio_venv()
    data_dir = workdir / "data"
    if use_template:
        template_data, credentials = ensure_label_studio_template(venv)
        if data_dir.exists():
            raise ServerError(f"{data_dir} already exists; give each server its own workdir")
        shutil.copytree(template_data, data_dir)
    else:
        credentials = LabelStudioCredentials.generate()
    port = port or free_port()
    server = _label_studio_server(venv, workdir, data_dir, credentials, port, startup_timeout)
    if database is not None:
        server.env.update(database.django_env())
    return LabelStudioService(
        server, f"http://{LOCALHOST}:{port}", credentials=credentials, data_dir=data_dir
    )
