"""The library called from a plain script, as a user writes one: no ``__main__`` guard, no
``make``, no Prefect variable set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ner.replay import demo_gold_path
from ner.storage import open_storage

SCRIPT = """
from flows.train_ner import train_ner
from prefect.settings import get_current_settings

print("SCRIPT STARTED", flush=True)
print("STARTUP TIMEOUT", get_current_settings().server.ephemeral.startup_timeout_seconds)
summary = train_ner(
    source="storage",
    overrides={
        "storage_uri": "store",
        "mlflow_tracking_uri": "sqlite:///mlflow.db",
        "cold_start": "gazetteer",
        "threshold": 0.99,
        "train": {"max_epochs": 1},
    },
)
print("SUMMARY", summary.model_dump_json())
"""


DASK_SCRIPT = """
from flows.apply_ner import apply_ner

print("SCRIPT STARTED", flush=True)
result = apply_ner(
    source="jsonl",
    input_uri="posts.jsonl",
    model="gazetteer",
    executor="dask",
    workers=2,
    overrides={"storage_uri": "store", "mlflow_tracking_uri": "sqlite:///mlflow.db"},
)
print("POSTS", result.n_posts, result.delivered.predicted.n_shards)
"""


def run_script(folder: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``python script.py`` in ``folder``, as a user runs one: without NER_, MLFLOW_ or
    PREFECT_ variables (Prefect's ephemeral API, a private PREFECT_HOME)."""
    script = folder / "script.py"
    script.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NER_", "MLFLOW_", "PREFECT_"))}
    env.update(PREFECT_HOME=str(folder / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_a_script_without_main_guard_predicts_once_on_a_local_dask_cluster(
    tmp_path: Path,
) -> None:
    # Given posts and a script that predicts them on Dask without a scheduler address: Dask
    # spawned its LocalCluster's workers from the script's process, each imported the script
    # again, and a trial's flows ran three times (with --reread, until Dask gave up)
    posts = [{"id": f"p{i}", "text": f"new glossier drop number {i}"} for i in range(10)]
    lines = "".join(json.dumps(post) + "\n" for post in posts)
    (tmp_path / "posts.jsonl").write_text(lines, encoding="utf-8")
    # When it runs as `python script.py`
    done = run_script(tmp_path, DASK_SCRIPT)
    # Then it predicted every post in 2 shards, running the script once
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.splitlines().count("SCRIPT STARTED") == 1, done.stdout
    assert "POSTS 10 2" in done.stdout.splitlines(), done.stdout


def test_a_script_without_main_guard_trains_once(tmp_path: Path) -> None:
    # Given labelled posts in storage, and a script that calls train_ner at module level
    export = json.loads(demo_gold_path().read_text(encoding="utf-8"))[:80]
    open_storage(str(tmp_path / "store"), "dev").write_json("exports/labels.json", export)
    # When it runs as `python script.py`
    done = run_script(tmp_path, SCRIPT)
    # Then it completed, running the script once (the training process did not re-run it)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert lines.count("SCRIPT STARTED") == 1, done.stdout
    # And Prefect's ephemeral API got brandloop's start-up timeout without any variable
    assert "STARTUP TIMEOUT 180" in lines
    # And a challenger was trained and evaluated (the threshold keeps it from promotion)
    [summary] = [json.loads(line.removeprefix("SUMMARY ")) for line in lines if "SUMMARY" in line]
    assert summary["status"] == "not_promoted", summary
    assert summary["challenger_version"] == "1" and summary["challenger_f1"] is not None
    assert (tmp_path / "mlflow.db").exists()
