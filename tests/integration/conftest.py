"""Session fixtures that run real servers on 127.0.0.1 for integration tests.

``label_studio``, ``mlflow_server``, ``gcs_emulator`` and ``prefect_server`` each yield a
service dataclass from :mod:`tests.support.servers` (``.url``, ``.env()``, credentials,
and ``.server``, the :class:`~tests.support.servers.ManagedServer` a reliability test can
pause, kill or restart). A server that cannot start fails the test; nothing is skipped.

The first time one of them is requested, every server that the collected tests need is
launched at once, so their start-ups overlap (Label Studio's venv and data template are
prepared on a background thread meanwhile). All of them are stopped at the end of the
session, whether tests passed or not. Tests using these fixtures are marked
``integration`` and ``slow`` automatically.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.flows import prefect_api
from tests.support.servers import (
    GcsService,
    LabelStudioService,
    MlflowService,
    PrefectService,
    ServerStartError,
    Service,
    ensure_label_studio_template,
    ensure_label_studio_venv,
    gcs_service,
    label_studio_service,
    mlflow_service,
    prefect_service,
)

log = logging.getLogger(__name__)

SERVICE_FIXTURES = ("label_studio", "mlflow_server", "gcs_emulator", "prefect_server")
#: Start-up seconds of each server in this session (printed in the terminal summary).
STARTUP_SECONDS: dict[str, float] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use a server fixture are ``integration`` and ``slow``."""
    for item in items:
        if set(getattr(item, "fixturenames", ())) & set(SERVICE_FIXTURES):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STARTUP_SECONDS:
        parts = ", ".join(f"{name} {secs:.1f} s" for name, secs in STARTUP_SECONDS.items())
        terminalreporter.write_line(f"server start-up: {parts}")


class _Launcher:
    """Launches the session's servers early and in parallel; stops them all at the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._services: dict[str, Service] = {}
        self._healthy: set[str] = set()  # answered their health check
        self._ready: set[str] = set()  # and passed Service.check()
        self._errors: dict[str, Exception] = {}
        self._ls_thread: threading.Thread | None = None
        self._ls_venv: Path | None = None
        self._ls_started = 0.0

    def _workdir(self, name: str) -> Path:
        return self._tmp.mktemp(name.replace("_", "-"), numbered=True)

    def _prepare_label_studio(self) -> None:
        try:
            venv = ensure_label_studio_venv()
            ensure_label_studio_template(venv)
            self._ls_venv = venv
        except Exception as exc:  # reported by the fixture that needs Label Studio
            self._errors["label_studio"] = exc

    def launch(self, name: str) -> None:
        """Begin starting ``name`` without waiting for it (idempotent)."""
        if name in self._services or name in self._errors:
            return
        if name == "label_studio":
            if self._ls_thread is None:
                self._ls_started = time.monotonic()
                self._ls_thread = threading.Thread(
                    target=self._prepare_label_studio, name="label-studio-prep", daemon=True
                )
                self._ls_thread.start()
            return
        factories: dict[str, Callable[[Path], Service]] = {
            "mlflow_server": mlflow_service,
            "gcs_emulator": gcs_service,
            "prefect_server": prefect_service,
        }
        try:
            service = factories[name](self._workdir(name))
            service.server.launch()
        except Exception as exc:  # reported by the fixture that needs this server
            self._errors[name] = exc
            return
        self._services[name] = service

    def get(self, name: str) -> Service:
        """The server ``name``, healthy; raises if it could not start."""
        self.launch(name)
        if name == "label_studio" and name not in self._services and name not in self._errors:
            assert self._ls_thread is not None
            self._ls_thread.join()
            if self._ls_venv is not None:
                try:
                    studio = label_studio_service(self._workdir(name), venv=self._ls_venv)
                    studio.server.launch()  # from the main thread: dies with pytest
                    self._services[name] = studio
                except Exception as exc:
                    self._errors[name] = exc
        if name in self._errors:
            raise ServerStartError(f"{name} could not start: {self._errors[name]}") from (
                self._errors[name]
            )
        service = self._services[name]
        if name not in self._ready:
            try:
                self._wait_healthy(name, service)
                service.wait_ready()  # returns at once when healthy; runs service.check()
            except Exception as exc:
                self._errors[name] = exc
                raise
            self._ready.add(name)
            if name == "label_studio":
                STARTUP_SECONDS["label_studio incl. venv+template check"] = (
                    time.monotonic() - self._ls_started
                )
        return service

    def _wait_healthy(self, name: str, service: Service) -> None:
        """Wait for ``name``, polling the other launched servers too (to time them)."""
        deadline = time.monotonic() + service.server.startup_timeout
        while True:
            for other_name, other in self._services.items():
                if other_name in self._healthy or other_name in self._errors:
                    continue
                try:
                    healthy = other.server.poll_ready()
                except ServerStartError as exc:
                    if other_name == name:
                        raise
                    self._errors[other_name] = exc
                    continue
                if healthy and other.server.startup_seconds is not None:
                    self._healthy.add(other_name)
                    STARTUP_SECONDS[other_name] = other.server.startup_seconds
            if name in self._healthy:
                return
            if time.monotonic() >= deadline:
                return  # service.wait_ready() reports the timeout with the log's tail
            time.sleep(0.2)

    def close(self) -> None:
        """Stop every server, all at once (each stop waits for its own process group)."""
        if self._ls_thread is not None:
            self._ls_thread.join(timeout=300)
        services = list(self._services.items())
        self._services.clear()
        if not services:
            return
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            stops = [(name, pool.submit(service.stop)) for name, service in services]
            for name, stop in stops:
                try:
                    stop.result()
                except Exception as exc:  # keep stopping the others, then report
                    log.error("could not stop %s: %s", name, exc)


@pytest.fixture(scope="session")
def _launcher(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Launcher]:
    launcher = _Launcher(tmp_path_factory)
    needed = {
        name
        for item in request.session.items
        for name in getattr(item, "fixturenames", ())
        if name in SERVICE_FIXTURES
    }
    with pytest.MonkeyPatch.context() as mp:
        # SDKs must never reach 127.0.0.1 through a proxy from the environment.
        for var in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(var, "")
            mp.setenv(var, ",".join(p for p in (current, "127.0.0.1", "localhost") if p))
        try:
            # Slowest first: Label Studio prepares on a thread while the others boot.
            for name in ("label_studio", "prefect_server", "mlflow_server", "gcs_emulator"):
                if name in needed:
                    launcher.launch(name)
            yield launcher
        finally:
            launcher.close()


@pytest.fixture(scope="session")
def label_studio(_launcher: _Launcher) -> LabelStudioService:
    """Label Studio 1.23.2 (own venv): ``.url``, ``.token``, ``.credentials``, ``.server``."""
    service = _launcher.get("label_studio")
    assert isinstance(service, LabelStudioService)
    return service


@pytest.fixture(scope="session")
def mlflow_server(_launcher: _Launcher) -> MlflowService:
    """``mlflow server`` on SQLite with proxied artifacts: ``.url``, ``.artifacts_dir``."""
    service = _launcher.get("mlflow_server")
    assert isinstance(service, MlflowService)
    return service


@pytest.fixture(scope="session")
def gcs_emulator(_launcher: _Launcher) -> Iterator[GcsService]:
    """The GCS emulator; STORAGE_EMULATOR_HOST points at it for the rest of the session."""
    service = _launcher.get("gcs_emulator")
    assert isinstance(service, GcsService)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in service.env().items():
            mp.setenv(key, value)
        yield service


@pytest.fixture(scope="session")
def prefect_server(_launcher: _Launcher) -> PrefectService:
    """A Prefect API server: ``.api_url``, ``.env()``, ``.cli()``, ``.run_worker()``."""
    service = _launcher.get("prefect_server")
    assert isinstance(service, PrefectService)
    return service


@pytest.fixture
def prefect(prefect_server: PrefectService) -> Iterator[PrefectService]:
    """Flows called in this process report to the session's Prefect server."""
    with prefect_api(prefect_server):
        yield prefect_server
