"""Retraining when an export lands: ``python -m deployments.export_watcher`` against a real
Prefect server, on a local folder and on a GCS bucket (the emulator).

One export file dropped into ``exports/`` queues exactly one ``train-ner`` run; a burst of
ten files queues one more, not ten. Runs stay queued (the deployment has no work pool), so
the tests count them on the server.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from deployments.export_watcher import RUN_TAG
from ner.storage import Storage, open_storage
from tests.support.servers import PROJECT_ROOT, GcsService, ManagedServer, PrefectService
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET_S = 2.0


def create_train_deployment(prefect: PrefectService, name: str) -> str:
    """A deployment of ``train-ner`` named ``name`` with no work pool (runs stay queued)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: prefect.api_url}),
        get_client(sync_client=True) as client,
    ):
        flow_id = client.create_flow_from_name("train-ner")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=name, entrypoint="flows/train_ner.py:train_ner"
        )
    return str(deployment_id)


def runs_of(prefect: PrefectService, deployment_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: prefect.api_url}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[uuid.UUID(deployment_id)])
            )
        )


def watcher(
    prefect: PrefectService,
    storage_uri: str | None,
    deployment: str,
    workdir: Path,
    env: dict[str, str],
) -> ManagedServer:
    """The export watcher of dev on ``storage_uri`` (None: no ``NER_STORAGE_URI`` at all)."""
    own = {} if storage_uri is None else {"NER_STORAGE_URI": storage_uri}
    server: ManagedServer
    server = ManagedServer(
        "export-watcher",
        [
            sys.executable,
            "-m",
            "deployments.export_watcher",
            "--env",
            "dev",
            "--deployment",
            f"train-ner/{deployment}",
            "--interval",
            "0.3",
            "--quiet",
            str(QUIET_S),
        ],
        workdir=workdir,
        cwd=PROJECT_ROOT,
        port=0,
        health_url=None,
        ready_check=lambda: "watching" in server.log_path.read_text(errors="replace"),
        env={**prefect.env(), **env, **own},
        unset_env=() if own else ("NER_STORAGE_URI",),
        startup_timeout=90,
    )
    return server


def drop_exports(storage: Storage, names: list[str]) -> None:
    for name in names:
        storage.write_json(f"exports/{name}.json", [])


def check_one_file_one_run_and_a_burst_one_more(
    prefect: PrefectService,
    storage: Storage,
    storage_uri: str | None,
    tmp: Path,
    env: dict[str, str],
) -> str:
    """The watcher's log, once it queued one run for a file and one more for a burst."""
    name = f"watch-{uuid.uuid4().hex[:8]}"
    deployment_id = create_train_deployment(prefect, name)
    with watcher(prefect, storage_uri, name, tmp / "watcher", env) as running:
        drop_exports(storage, ["first"])
        eventually(lambda: len(runs_of(prefect, deployment_id)) == 1, "one run for one file")
        (run,) = runs_of(prefect, deployment_id)
        assert run.parameters == {"source": "storage"} and RUN_TAG in run.tags
        drop_exports(storage, [f"burst-{n}" for n in range(10)])
        eventually(lambda: len(runs_of(prefect, deployment_id)) == 2, "one run for the burst")
        time.sleep(3 * QUIET_S)  # nothing else is queued once the burst is over
        assert len(runs_of(prefect, deployment_id)) == 2
        log_text = running.log_path.read_text(errors="replace")
    assert "11 new export" not in log_text and "10 new export(s)" in log_text
    return log_text


def test_local_folder(prefect_server: PrefectService, tmp_path: Path) -> None:
    uri = str(tmp_path / "storage")
    storage = open_storage(uri, "dev")
    check_one_file_one_run_and_a_burst_one_more(prefect_server, storage, uri, tmp_path, {})


def test_gcs_bucket(
    prefect_server: PrefectService, gcs_emulator: GcsService, tmp_path: Path
) -> None:
    bucket = f"watch-{uuid.uuid4().hex[:10]}"
    gcs_emulator.client().create_bucket(bucket)
    uri = f"gs://{bucket}/brandloop"
    storage = open_storage(uri, "dev")
    # the bucket named only as dev's deployments get it (prefect.yaml): a trial's watcher
    # for a gs:// environment watched the local default folder
    env = {**gcs_emulator.env(), "BRANDLOOP_DEV_STORAGE_URI": uri}
    said = check_one_file_one_run_and_a_burst_one_more(prefect_server, storage, None, tmp_path, env)
    assert f"dev's storage: {uri} (BRANDLOOP_DEV_STORAGE_URI)" in said
    assert f"watching {uri}/dev/exports" in said
