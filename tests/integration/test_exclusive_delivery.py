"""Two apply-ner runs at once on one storage deliver each batch once (issue 11, item 5).

Both runs are separate Python processes reporting to a real Prefect server, started at the
same instant over one storage (a local folder; a bucket on fake-gcs-server) holding batches
that earlier runs fetched but never delivered, each run also fetching a batch of its own.
Without the batch lease both runs finish left-over batches (their import JSON written
twice); with it, each batch is delivered by exactly one run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ner import leases
from ner.replay import demo_posts_path
from ner.storage import LocalStorage, open_storage
from tests.support.fake_gcs import fake_gcs_service
from tests.support.servers import PROJECT_ROOT, GcsService, PrefectService

LEFT_OVER = 6
PER_BATCH = 20

#: One apply-ner run: argv = storage root, its JSONL input, where to write its summary.
RUN = """
import json, sys
from flows.apply_ner import apply_ner

settings = {"storage_uri": sys.argv[1], "mlflow_tracking_uri": sys.argv[4]}
summary = apply_ner(source="jsonl", input_uri=sys.argv[2], model="gazetteer", overrides=settings)
open(sys.argv[3], "w").write(summary.model_dump_json())
"""


def outputs(tmp_path: Path, run: int) -> list[str]:
    """Where run ``run`` writes its summary, and its MLflow tracking URI."""
    return [str(tmp_path / f"{run}.json"), f"sqlite:///{tmp_path / f'mlflow-{run}.db'}"]


def delivered(summary: dict[str, Any]) -> list[str]:
    """Posts keys whose tasks this run wrote (left-over batches and its own)."""
    keys = [
        r["posts_key"]
        for r in summary["recovered"]
        if r.get("delivered") and r["delivered"].get("tasks_key")
    ]
    if summary.get("delivered") and summary["delivered"].get("tasks_key"):
        keys.append(summary["fetched"]["posts_key"])
    return keys


@pytest.fixture(scope="module")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsService]:
    with fake_gcs_service(tmp_path_factory.mktemp("fake-gcs")) as service:
        yield service


@pytest.fixture(params=["local", "gcs"])
def storage_root(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The storage URI both runs share: a local folder, or a bucket on fake-gcs-server (GCS
    preconditions honoured; reached through STORAGE_EMULATOR_HOST like a deployment would)."""
    if request.param == "local":
        return str(tmp_path / "store")
    gcs: GcsService = request.getfixturevalue("fake_gcs")
    bucket = f"apply-{uuid.uuid4().hex[:10]}"
    gcs.client().create_bucket(bucket)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
    return f"gs://{bucket}/loop"


def test_two_apply_runs_at_once_deliver_each_batch_once(
    prefect_server: PrefectService, storage_root: str, tmp_path: Path
) -> None:
    # Given batches that earlier runs fetched but never delivered, and a new file per run
    lines = demo_posts_path().read_text(encoding="utf-8").splitlines()
    root = storage_root
    storage = open_storage(root, "dev")
    left_over = [f"posts/20260101T00000{i}Z-earlier.jsonl" for i in range(LEFT_OVER)]
    for i, key in enumerate(left_over):
        storage.write_text(key, "\n".join(lines[i * PER_BATCH : (i + 1) * PER_BATCH]) + "\n")
    inputs = []
    for run in range(2):
        start = (LEFT_OVER + run) * PER_BATCH
        inputs.append(tmp_path / f"new-{run}.jsonl")
        inputs[-1].write_text("\n".join(lines[start : start + PER_BATCH]) + "\n", "utf-8")
    # When two apply-ner runs start at the same instant, as separate processes
    env = {**os.environ, **prefect_server.env()}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, root, str(inputs[run]), *outputs(tmp_path, run)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in range(2)
    ]
    errors = [run.communicate(timeout=600)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    summaries = [json.loads((tmp_path / f"{run}.json").read_text()) for run in range(2)]
    # Then every batch, left over or new, was delivered by exactly one of the runs
    batches = sorted(k for k in storage.list("posts") if k.endswith(".jsonl"))
    assert len(batches) == LEFT_OVER + 2
    deliveries = delivered(summaries[0]) + delivered(summaries[1])
    assert sorted(deliveries) == batches
    # And each batch has one import file holding exactly its posts
    for key in batches:
        stamp = key.removeprefix("posts/").removesuffix(".jsonl")
        tasks = storage.read_json(f"tasks/{stamp}.json")
        posts = [json.loads(x)["id"] for x in storage.iter_lines(key)]
        assert [t["data"]["post_id"] for t in tasks] == posts
        # and no lease is left: a delivered batch's lease is retired (its epochs piled up)
        assert leases.current(storage, stamp) is None and storage.list(f"leases/{stamp}") == []
        if isinstance(storage, LocalStorage):  # nor its folder (trial AF found them empty)
            assert not (storage.root / "leases" / stamp).exists()
    print("deliveries per run:", [len(delivered(s)) for s in summaries])
    print(
        "skipped per run:", [sum(bool(r.get("skipped")) for r in s["recovered"]) for s in summaries]
    )
