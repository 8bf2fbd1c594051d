"""Ctrl-C while a flow command runs (``apps.signals.end_on_signals``): the command's
clean-up runs, and the command ends regardless after a grace period or on a second Ctrl-C.

Real processes and real signals; the block stands in for a flow run."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from apps import signals

ROOT = Path(__file__).resolve().parents[2]

#: argv[1]: the grace period in seconds; argv[2]: what the interrupted block does: "clean"
#: (clean up, then let the interrupt go on) or "hang" (a clean-up that never ends).
COMMAND = textwrap.dedent(
    """
    import sys, time
    import apps.signals as signals

    signals.GRACE_S = float(sys.argv[1])
    with signals.end_on_signals(False):
        try:
            print("ready", flush=True)
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("cleaning up", flush=True)
            if sys.argv[2] == "hang":
                while True:
                    time.sleep(0.05)
            raise
    """
)


def _start(grace: float, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(grace), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.parametrize(("grace", "mode"), [(600, "clean"), (1, "hang")])
def test_ctrl_c_lets_the_clean_up_run_then_ends_the_command(grace: float, mode: str) -> None:
    # Given a command in a flow run; when Ctrl-C arrives
    proc = _start(grace, mode)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    # Then its clean-up ran, and the command ended (a hung clean-up after the grace period,
    # which the line says)
    assert "cleaning up" in out
    assert proc.returncode == 130, err[-2000:]
    cut_short = "; its flow runs may be left Running in Prefect" if mode == "hang" else ""
    assert err.rstrip().endswith(f"interrupted (SIGINT): this command stopped{cut_short}")


def test_a_second_ctrl_c_ends_the_command_at_once() -> None:
    # Given a command whose clean-up after Ctrl-C does not end (and a grace of 10 minutes)
    proc = _start(600, "hang")
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None and proc.stdout.readline() == "cleaning up\n"
    # When Ctrl-C arrives again
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # Then the command ends without waiting for it, and says the run may not be recorded
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted (SIGINT): this command stopped; its flow runs may be left Running" in err


def test_sigterm_ends_the_command_at_once() -> None:
    proc = _start(600, "hang")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "cleaning up" not in out
    assert "interrupted (SIGTERM): this command stopped" in err


#: A command whose SIGTERM handler (Prefect's, while a flow runs: it raises
#: ``TerminationSignal``) runs inside a finaliser, where Python reports its exception and goes
#: on; argv[1]: SIGTERM or SIGINT, the signal the handler stands for.
LOST_IN_FINALISER = textwrap.dedent(
    """
    import signal, sys, time
    import apps.signals as signals
    from prefect.exceptions import TerminationSignal

    signals.GRACE_S = 600.0
    signum = getattr(signal, sys.argv[1])

    class Slow:
        def __del__(self) -> None:
            print("in finaliser", flush=True)
            start = time.monotonic()
            while time.monotonic() - start < 3:
                pass

    with signals.end_on_signals(False):
        if signum == signal.SIGTERM:
            def prefect_like(number, frame):
                raise TerminationSignal(signal=number)
            signal.signal(signal.SIGTERM, prefect_like)
        try:
            print("ready", flush=True)
            Slow()  # finalised at once
            print("after the finaliser", flush=True)
            start = time.monotonic()
            while time.monotonic() - start < 20:
                time.sleep(0.01)
            print("finished", flush=True)
        except (TerminationSignal, KeyboardInterrupt) as exc:
            print(f"stopped by {type(exc).__name__}", flush=True)
            raise SystemExit(3)
    """
)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_lost_in_a_finaliser_is_delivered_again(name: str) -> None:
    # Given a command whose signal handler will run inside a finaliser (a trial's SIGTERM
    # was lost so, and its train run went on to the gate and exited 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", LOST_IN_FINALISER, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    assert proc.stdout.readline() == "in finaliser\n"
    # When the signal arrives while the finaliser runs
    proc.send_signal(getattr(signal, name))
    out, err = proc.communicate(timeout=60)
    # Then the handler's exception, lost there, reaches the code that runs after it
    assert "Exception ignored in" in err
    stopped = "TerminationSignal" if name == "SIGTERM" else "KeyboardInterrupt"
    assert out.splitlines() == ["after the finaliser", f"stopped by {stopped}"], err[-2000:]
    assert proc.returncode == 3


#: A command of ``brandloop``'s command group that runs no flow and waits.
PLAIN_COMMAND = textwrap.dedent(
    """
    import signal, time
    import typer
    from apps.cli import BrandloopGroup

    # as in a terminal (a background job of a non-interactive shell, such as CI's, starts
    # with SIGINT ignored, and Python then keeps it so)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    app = typer.Typer(cls=BrandloopGroup)

    @app.command()
    def wait() -> None:
        print("ready", flush=True)
        while True:
            time.sleep(0.05)

    @app.command()
    def other() -> None:
        pass

    app()
    """
)


def test_ctrl_c_in_a_command_without_a_flow_says_so() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PLAIN_COMMAND, "wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip() == "interrupted (SIGINT): this command stopped"


def _record(message: str, error: BaseException | None) -> logging.LogRecord:
    info = (type(error), error, None) if error is not None else None
    return logging.LogRecord("prefect.flow_runs", logging.DEBUG, "", 0, message, (), info)


def test_an_interrupt_prefect_dropped_is_raised_again_once_armed() -> None:
    dropped = signals._RaiseDroppedInterrupt()
    record = _record(signals.DROPPED, KeyboardInterrupt())
    assert dropped.filter(record)  # no Ctrl-C being handled: let through
    dropped.armed = True
    with pytest.raises(KeyboardInterrupt):
        dropped.filter(record)
    assert dropped.filter(_record(signals.DROPPED, ValueError("other")))
    assert dropped.filter(_record("Finished in state Completed()", None))


#: Inside the command's signal handling, a forked child (a process-pool worker) that gets a
#: SIGTERM of its own; prints whether the command saw a signal.
FORKED_CHILD = textwrap.dedent(
    """
    import os, signal, time
    from apps import signals

    seen = []
    with signals._watching(seen.append):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            os._exit(1)
        os.waitpid(pid, 0)
        time.sleep(1)
    print(seen, flush=True)
    """
)


def test_a_forked_child_s_signal_is_not_the_command_s() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FORKED_CHILD], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
