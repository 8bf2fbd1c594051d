"""An apply run killed during prediction leaves a temporary file; the next run removes it
(issue 11, item 11), and finishes the batch the killed run left.

The killed run is a real apply-ner process on a real Prefect server, sent SIGKILL while its
predict step streams into ``predictions/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ner.replay import demo_posts_path
from ner.storage import LocalStorage
from ner.tempfiles import STALE_AFTER_S
from tests.support.flows import prefect_api
from tests.support.servers import PROJECT_ROOT, PrefectService

#: Enough posts that the gazetteer predicts for several seconds.
N_POSTS = 30_000

RUN = """
import sys
from flows.apply_ner import apply_ner

settings = {"storage_uri": sys.argv[1], "mlflow_tracking_uri": sys.argv[2]}
apply_ner(
    source="jsonl", input_uri=sys.argv[3], model="gazetteer", max_posts=int(sys.argv[4]),
    overrides=settings,
)
"""


def many_posts(path: Path) -> None:
    demo = [json.loads(x) for x in demo_posts_path().read_text("utf-8").splitlines()]
    with path.open("w", encoding="utf-8") as out:
        for i in range(N_POSTS):
            out.write(json.dumps({**demo[i % len(demo)], "id": str(10**12 + i)}) + "\n")


def settings(tmp_path: Path) -> dict[str, str]:
    """The runs' settings (in this order: the killed run's argv)."""
    return {
        "storage_uri": str(tmp_path / "store"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }


def test_the_next_run_removes_the_temp_of_a_run_killed_during_prediction(
    prefect_server: PrefectService, tmp_path: Path
) -> None:
    from flows.apply_ner import apply_ner

    # Given an apply run killed while it writes its predictions
    many_posts(tmp_path / "posts.jsonl")
    cfg = settings(tmp_path)
    posts = str(tmp_path / "posts.jsonl")
    run = subprocess.Popen(
        [sys.executable, "-c", RUN, *cfg.values(), posts, str(N_POSTS)],
        cwd=PROJECT_ROOT,
        env={**os.environ, **prefect_server.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    predictions = tmp_path / "store" / "dev" / "predictions"
    deadline = time.monotonic() + 300
    while not list(predictions.glob(".*.tmp")) and run.poll() is None:
        assert time.monotonic() < deadline, "the run never started predicting"
        time.sleep(0.05)
    run.kill()
    assert run.wait(timeout=60) == -9, "the run finished before it could be killed"
    (left,) = predictions.glob(".*.tmp")
    storage = LocalStorage(tmp_path / "store" / "dev")
    [batch] = [k for k in storage.list("posts") if k.endswith(".jsonl")]
    assert storage.list("predictions") == [] and storage.list("tasks") == []
    # When the next run comes (later than the stale age) with nothing new to fetch
    then = time.time() - STALE_AFTER_S - 60
    os.utime(left, (then, then))
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with prefect_api(prefect_server):
        summary = apply_ner(
            source="jsonl",
            input_uri=str(tmp_path / "empty.jsonl"),
            model="gazetteer",
            overrides=cfg,
        )
    # Then the killed run's temporary file is gone, and its batch was finished whole
    assert list(predictions.glob(".*.tmp")) == []
    [recovered] = summary.recovered
    assert recovered.delivered is not None and recovered.delivered.tasks_key is not None
    assert recovered.posts_key == batch and recovered.delivered.n_predictions == N_POSTS
    assert len(storage.read_json(recovered.delivered.tasks_key)) == N_POSTS
