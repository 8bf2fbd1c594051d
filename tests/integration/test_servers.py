"""The server harness against the real servers: each one answers a real client.

Also checks the harness itself: health-wait errors carry the log, stop() leaves no
process behind, pause/resume and kill/restart behave as reliability tests expect.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from google.api_core import exceptions as gexc

from ner.storage import open_storage
from tests.support.servers import (
    GcsService,
    LabelStudioService,
    ManagedServer,
    MlflowService,
    PrefectService,
    ServerStartError,
    free_port,
    gcs_service,
    http_status,
    process_group_members,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABEL_CONFIG = (
    '<View><Labels name="label" toName="text"><Label value="BRAND"/></Labels>'
    '<Text name="text" value="$text"/></View>'
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- Label Studio ---------------------------------------------------------------------
def test_label_studio_project_tasks_round_trip(label_studio: LabelStudioService) -> None:
    from label_studio_sdk import ImportApiRequest, LabelStudio

    # Given an SDK client with the token the harness created
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    # When a project is created and two tasks are imported
    project = client.projects.create(title=unique("smoke"), label_config=LABEL_CONFIG)
    assert project.id is not None
    texts = ["Loving my new Glossier balm", "Fenty Beauty restock today"]
    imported = client.projects.import_tasks(
        project.id,
        request=[ImportApiRequest(data={"text": t}) for t in texts],
        return_task_ids=True,
    )
    # Then both tasks are listed back with their text, and the label config is kept
    assert imported.task_count == 2
    tasks: list[Any] = list(client.tasks.list(project=project.id, fields="all"))
    assert sorted(str((t.data or {})["text"]) for t in tasks) == sorted(texts)
    task_ids = (imported.model_extra or {}).get("task_ids")
    assert sorted(t.id for t in tasks) == sorted(task_ids or [])
    assert "BRAND" in (client.projects.get(id=project.id).label_config or "")


def test_label_studio_rejects_a_wrong_token(label_studio: LabelStudioService) -> None:
    # Given the running server, when a request carries a token that is not the harness's
    status = http_status(
        f"{label_studio.url}/api/current-user/whoami",
        headers={"Authorization": "Token " + "0" * 40},
    )
    # Then it is refused (so the smoke test above really authenticated)
    assert status == 401


# --- MLflow ---------------------------------------------------------------------------
def test_mlflow_metric_artifact_and_alias(mlflow_server: MlflowService, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    # Given an experiment and a run on the server
    experiment_id = client.create_experiment(unique("smoke"))
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    # When a metric and an artifact are logged over HTTP
    client.log_metric(run_id, "f1", 0.42, step=3)
    note = tmp_path / "note.txt"
    note.write_text("hello from the harness\n")
    client.log_artifact(run_id, str(note), artifact_path="notes")
    client.set_terminated(run_id)
    # Then both read back, and the artifact went through the server to its destination
    history = client.get_metric_history(run_id, "f1")
    assert [(m.value, m.step) for m in history] == [(0.42, 3)]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    downloaded = Path(client.download_artifacts(run_id, "notes/note.txt", str(tmp_path / "dl")))
    assert downloaded.read_text() == "hello from the harness\n"
    stored = list(mlflow_server.artifacts_dir.rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == note.read_text()

    # And a registered model version can carry an alias
    name = unique("smoke-model")
    client.create_registered_model(name)
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/notes", run_id=run_id
    )
    client.set_registered_model_alias(name, "champion", version.version)
    assert client.get_model_version_by_alias(name, "champion").version == version.version


def test_paused_server_times_out_then_recovers(mlflow_server: MlflowService) -> None:
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    experiment = unique("paused")
    client.create_experiment(experiment)
    # Given a healthy server, when every process of it is frozen
    mlflow_server.server.pause()
    try:
        assert mlflow_server.server.paused
        # Then a request hangs and times out (the kernel still accepts the connection)
        with pytest.raises(requests.exceptions.Timeout):
            requests.get(f"{mlflow_server.url}/health", timeout=1.0)
    finally:
        mlflow_server.server.resume()
    # And after resume the same server answers, with its data intact
    assert http_status(f"{mlflow_server.url}/health", timeout=10.0) == 200
    assert client.get_experiment_by_name(experiment) is not None


# --- GCS emulator ---------------------------------------------------------------------
def test_gcs_bucket_upload_list_download(gcs_emulator: GcsService) -> None:
    client = gcs_emulator.client()
    # Given a new bucket
    bucket = client.create_bucket(unique("smoke"))
    # When two objects are uploaded
    bucket.blob("a/one.txt").upload_from_string(b"one")
    bucket.blob("a/two.json").upload_from_string(b'{"n": 2}', content_type="application/json")
    # Then they are listed under their prefix and download byte for byte
    assert sorted(b.name for b in client.list_blobs(bucket, prefix="a/")) == [
        "a/one.txt",
        "a/two.json",
    ]
    assert bucket.blob("a/two.json").download_as_bytes() == b'{"n": 2}'
    with pytest.raises(gexc.NotFound):
        bucket.blob("a/missing").download_as_bytes()


def test_gcs_through_ner_storage(gcs_emulator: GcsService) -> None:
    # Given the project's storage on a bucket of the emulator (found via STORAGE_EMULATOR_HOST)
    bucket = unique("ner")
    gcs_emulator.client().create_bucket(bucket)
    storage = open_storage(f"gs://{bucket}/brandloop", "dev")
    # When JSON and JSONL objects are written
    uri = storage.write_json("tasks/batch-1.json", [{"data": {"text": "hi"}}])
    storage.write_lines("posts/p.jsonl", ['{"id": "1"}', '{"id": "2"}'])
    # Then they read back, list under the env prefix and land where the URI says
    assert uri == f"gs://{bucket}/brandloop/dev/tasks/batch-1.json"
    assert storage.read_json("tasks/batch-1.json") == [{"data": {"text": "hi"}}]
    assert list(storage.iter_lines("posts/p.jsonl")) == ['{"id": "1"}', '{"id": "2"}']
    assert storage.list() == ["posts/p.jsonl", "tasks/batch-1.json"]
    names = [b.name for b in gcs_emulator.client().list_blobs(bucket)]
    assert sorted(names) == ["brandloop/dev/posts/p.jsonl", "brandloop/dev/tasks/batch-1.json"]
    storage.delete("posts/p.jsonl")
    assert not storage.exists("posts/p.jsonl")


def test_killed_server_restarts_on_same_port_with_its_data(tmp_path: Path) -> None:
    # Given a dedicated emulator (on-disk data) holding one object
    with gcs_service(tmp_path / "gcs") as gcs:
        port = gcs.server.port
        bucket = gcs.client().bucket(gcs.default_bucket or "")
        bucket.blob("keep.txt").upload_from_string(b"kept")
        # When it is SIGKILLed
        gcs.server.kill()
        # Then nothing answers and no process of it is left
        assert http_status(f"{gcs.url}/", timeout=1.0) is None
        assert gcs.server.group_pids() == []
        # And after a restart on the same port the object is still there
        gcs.restart()
        assert gcs.server.port == port and gcs.server.launches == 2
        assert gcs.client().bucket(bucket.name).blob("keep.txt").download_as_bytes() == b"kept"
    assert gcs.server.group_pids() == []


# --- Prefect --------------------------------------------------------------------------
HELLO_FLOW = """
from pathlib import Path

from prefect import flow


@flow
def hello(out: str) -> None:
    Path(out).write_text("ran")
"""


def test_prefect_pool_deployment_and_worker(prefect_server: PrefectService, tmp_path: Path) -> None:
    pool = unique("smoke-pool")
    # Given a process work pool created with the CLI against the server
    prefect_server.cli("work-pool", "create", pool, "--type", "process")
    response = requests.get(f"{prefect_server.api_url}/work_pools/{pool}", timeout=10)
    assert response.status_code == 200 and response.json()["type"] == "process"
    # And a deployment of a flow with one run requested
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello.py").write_text(HELLO_FLOW)
    marker = tmp_path / "marker.txt"
    name = unique("d")
    prefect_server.cli("deploy", "hello.py:hello", "--name", name, "--pool", pool, cwd=project)
    prefect_server.cli("deployment", "run", f"hello/{name}", "--param", f"out={marker}")
    deployment = requests.get(f"{prefect_server.api_url}/deployments/name/hello/{name}", timeout=10)
    assert deployment.status_code == 200
    # When a run-once worker polls the pool
    done = prefect_server.run_worker(pool, timeout=180)
    # Then it ran the flow to completion and exited cleanly
    assert done.returncode == 0, done.stdout[-2000:]
    assert marker.read_text() == "ran"
    runs = requests.post(f"{prefect_server.api_url}/flow_runs/filter", json={}, timeout=10)
    ours = [r for r in runs.json() if r["deployment_id"] == deployment.json()["id"]]
    assert [r["state_type"] for r in ours] == ["COMPLETED"]

    # And a long-running worker registers with the pool, then stops without leftovers
    with prefect_server.worker(pool, tmp_path / "worker", name="smoke-worker") as worker:
        assert "smoke-worker" in prefect_server.worker_names(pool)
        assert worker.running
    assert worker.group_pids() == []


# --- The harness itself -----------------------------------------------------------------
def test_wait_reports_the_log_of_a_server_that_died(tmp_path: Path) -> None:
    # Given a "server" that prints a marker and exits with an error
    port = free_port()
    server = ManagedServer(
        "crasher",
        [sys.executable, "-c", "import sys; print('boom-marker', flush=True); sys.exit(3)"],
        workdir=tmp_path,
        port=port,
        health_url=f"http://127.0.0.1:{port}/",
        startup_timeout=30,
    )
    # When it is started, then the error names the exit code and shows its log
    with pytest.raises(ServerStartError, match="code 3") as caught:
        server.start()
    assert "boom-marker" in str(caught.value)
    assert server.group_pids() == []


def test_wait_times_out_and_stops_a_silent_server(tmp_path: Path) -> None:
    # Given a process that never listens
    port = free_port()
    server = ManagedServer(
        "silent",
        [sys.executable, "-c", "import time; time.sleep(300)"],
        workdir=tmp_path,
        port=port,
        health_url=f"http://127.0.0.1:{port}/",
    )
    started = time.monotonic()
    # When its health wait times out
    with pytest.raises(ServerStartError, match="did not answer"):
        server.start(timeout=1.5)
    # Then it fails promptly and the process was stopped
    assert time.monotonic() - started < 30
    assert server.group_pids() == [] and not server.running


def test_stop_kills_a_group_that_ignores_the_polite_signal(tmp_path: Path) -> None:
    # Given a server that ignores SIGTERM and has a child process
    script = textwrap.dedent(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("child", child.pid, flush=True)
        time.sleep(300)
        """
    )
    server = ManagedServer(
        "stubborn",
        [sys.executable, "-c", script],
        workdir=tmp_path,
        port=free_port(),
        health_url=None,
        stop_timeout=1.0,
    )
    server.start()
    deadline = time.monotonic() + 20
    while len(server.group_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.group_pids()) == 2
    # When it is stopped, then SIGKILL ends the leader and its child
    returncode = server.stop()
    assert returncode == -9
    assert server.group_pids() == []


def test_servers_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    # Given a process that starts a server and then dies abruptly (no finalizers, no atexit)
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from tests.support.servers import ManagedServer, free_port
        server = ManagedServer(
            "orphan-candidate",
            [sys.executable, "-c", "import time; time.sleep(300)"],
            workdir=Path({str(tmp_path)!r}),
            port=free_port(),
            health_url=None,
        ).start()
        print(server.pid, flush=True)
        os._exit(1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    pid = int(done.stdout.split()[0])
    # When the kernel notices, then the server is gone too
    deadline = time.monotonic() + 15
    while process_group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_group_members(pid) == []
