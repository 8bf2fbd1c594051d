"""Temporary files of interrupted local writes are removed by the next write (issue 11).

The writers here are real processes: one is killed with SIGKILL in the middle of a streamed
write (as a kill during prediction does), another stays alive and blocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ner.storage import LocalStorage
from ner.tempfiles import (
    FOLDER_GRACE_S,
    OWNER_LOCK,
    STALE_AFTER_S,
    sweep_orphan_dirs,
    sweep_stale_temps,
)

#: A writer that streams one line into ``predictions/run.jsonl`` and then blocks on stdin.
WRITER = textwrap.dedent(
    """
    import sys
    from ner.storage import LocalStorage

    def lines():
        yield '{"post_id": "1", "spans": []}'
        print("writing", flush=True)
        sys.stdin.readline()  # blocked until the test says go (or kills us)

    LocalStorage(sys.argv[1]).write_lines("predictions/run.jsonl", lines())
    """
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store" / "dev"


@pytest.fixture
def writer(root: Path) -> Iterator[subprocess.Popen[str]]:
    """A live writer process in the middle of ``predictions/run.jsonl``."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "writing\n"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_killed_writers_temp_is_removed_by_the_next_write(
    root: Path, writer: subprocess.Popen[str]
) -> None:
    # Given a writer killed in the middle of writing predictions (it leaves its temp file)
    (left,) = temps(root / "predictions")
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert left.exists() and not (root / "predictions" / "run.jsonl").exists()
    # And the next run comes later than the stale age
    age(left, STALE_AFTER_S + 60)
    storage = LocalStorage(root)
    # When it writes into the same folder
    storage.write_lines("predictions/next.jsonl", ['{"post_id": "2", "spans": []}'])
    # Then the dead writer's temp is gone, and only real objects remain
    assert temps(root / "predictions") == []
    assert storage.list("predictions") == ["predictions/next.jsonl"]


def test_a_live_writers_temp_is_kept_however_old(root: Path, writer: subprocess.Popen[str]) -> None:
    # Given a live writer blocked for longer than the stale age (an X rate-limit wait)
    (live,) = temps(root / "predictions")
    age(live, STALE_AFTER_S * 10)
    storage = LocalStorage(root)
    # When another writer writes into the same folder, and an exclusive create happens there
    storage.write_json("predictions/other.json", {"n": 1})
    assert storage.create_exclusive("predictions/once.json", b"{}")
    # Then the live writer's temp is untouched, and its write completes
    assert live.exists()
    assert writer.stdin is not None
    writer.stdin.write("go\n")
    writer.stdin.flush()
    assert writer.wait(timeout=30) == 0
    assert list(storage.iter_lines("predictions/run.jsonl")) == ['{"post_id": "1", "spans": []}']
    assert temps(root / "predictions") == []


def test_a_fresh_unlocked_temp_and_other_hidden_files_are_kept(tmp_path: Path) -> None:
    # Given a temp that was just created (its writer may not hold its lock yet), an old
    # one, and hidden files that are not temps
    fresh, old = tmp_path / ".a.jsonl.x1.tmp", tmp_path / ".b.jsonl.x2.tmp"
    keep, folder = tmp_path / ".keep", tmp_path / ".cache.tmp"
    for path in (fresh, old, keep):
        path.write_bytes(b"")
    folder.mkdir()
    for path in (old, keep, folder):
        age(path, STALE_AFTER_S + 1)
    # When swept, then only the old unlocked temp is removed
    assert sweep_stale_temps(tmp_path) == [old]
    assert fresh.exists() and keep.exists() and folder.is_dir()
    # And a missing folder is an empty sweep
    assert sweep_stale_temps(tmp_path / "missing") == []


#: A process that makes a training folder in the temporary folder it is given, prints its
#: path and blocks on stdin (as a command blocked in training).
FOLDER_OWNER = textwrap.dedent(
    """
    import sys, tempfile
    from ner.tempfiles import owned_temp_dir

    tempfile.tempdir = sys.argv[1]
    with owned_temp_dir("brandloop-train-request-") as folder:
        (folder / "request.json").write_text('{"annotations": ["posts"]}')
        print(folder, flush=True)
        sys.stdin.readline()
    """
)


def test_a_killed_commands_training_folder_is_removed_by_the_next_training(
    tmp_path: Path,
) -> None:
    # Given two commands in training, each with its folder, one then killed (the CLI's exit
    # on a signal: trial AR found the training posts left in /tmp)
    owners = [
        subprocess.Popen(
            [sys.executable, "-c", FOLDER_OWNER, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for _ in range(2)
    ]
    try:
        dead, live = (Path(p.stdout.readline().strip()) for p in owners if p.stdout)
        owners[0].send_signal(signal.SIGKILL)
        owners[0].wait(timeout=30)
        # And a folder of another program with the same prefix
        other = tmp_path / "brandloop-train-request-other"
        other.mkdir()
        # When the next training sweeps (past the grace of a folder just made)
        removed = sweep_orphan_dirs("brandloop-train-request-", tmp_path, older_than_s=0)
        # Then only the dead command's folder is gone, posts and all
        assert removed == [dead] and not dead.exists()
        assert (live / "request.json").exists() and other.is_dir()
        # And once its owner is dead too, a folder made within the grace is kept (its owner
        # may not hold the lock yet), and removed after it
        owners[1].kill()
        owners[1].wait(timeout=30)
        age(live / OWNER_LOCK, 0)
        assert sweep_orphan_dirs("brandloop-train-request-", tmp_path) == []
        age(live / OWNER_LOCK, FOLDER_GRACE_S + 1)
        assert sweep_orphan_dirs("brandloop-train-request-", tmp_path) == [live]
    finally:
        for process in owners:
            process.kill()
            process.wait(timeout=30)
