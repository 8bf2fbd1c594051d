"""How a flow command ends on Ctrl-C (SIGINT) or SIGTERM: :func:`end_on_signals`.

Three things stand between a signal and a command that ends with its run recorded:

* CPython runs a signal's Python handler in the main thread, between two bytecodes, while the
  kernel delivers a signal sent to the process to any of its threads. A main thread asleep in
  a system call (the loop's wait for labels sleeps its poll interval, 60 s by default) ran the
  handler only once the call returned. A thread reading the signal wakeup socket forwards each
  arrival to the main thread as a real-time signal whose handler does nothing: the blocked
  call returns, the pending handler runs (and a call no handler interrupts is resumed, PEP 475).
* Prefect's flow engine drops a ``KeyboardInterrupt`` that arrives after a subflow's own code
  has finished (it logs "BaseException was raised after user code finished executing" at
  DEBUG and returns), so the parent flow went on waiting. :class:`_RaiseDroppedInterrupt`
  raises it again from that very log record.
* A signal whose handler raised inside a finaliser (``__del__``, a garbage-collection
  callback) is lost: Python reports the exception as unraisable and goes on. A trial's SIGTERM
  (Prefect's ``TerminationSignal``) was lost so, and the run went on to its gate.
  :func:`_redelivering` sends such a signal to the main thread again.
* A clean-up that hangs, or a Prefect API that is gone (a stop that reaches every process of
  a systemd unit stops Prefect's temporary API too, and the engine then retries reporting
  for minutes): :data:`GRACE_S` after the first signal the command ends regardless.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, NoReturn

#: After the first Ctrl-C or SIGTERM, how long the command lets Prefect's engine record the run
#: as crashed and the flow clean up (leases, temporary folders) before it ends regardless, in
#: seconds.
GRACE_S = 15.0
#: What Prefect 3.8's flow engine logs (DEBUG, ``prefect.flow_runs``) when it drops an
#: exception raised after a flow's code has finished (``flow_engine.FlowRunEngine.run_context``).
DROPPED = "BaseException was raised after user code finished executing"
ENDING = (signal.SIGINT, signal.SIGTERM)


def end_command(
    temporary_api: bool, signum: int, frame: Any = None, *, cut_short: bool = False
) -> NoReturn:
    """Stop Prefect's temporary API (when the command started one), say so, and end this
    process at once, exit 128 + ``signum``. ``cut_short``: ended before the run could be
    recorded (a second Ctrl-C, or :data:`GRACE_S` passed), which the line says."""
    if temporary_api:
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(getattr(SubprocessASGIServer, "_instances", {}).values()):
            server.stop()
    name = signal.Signals(signum).name
    what = "Prefect's temporary API and this command" if temporary_api else "this command"
    left = "; its flow runs may be left Running in Prefect" if cut_short else ""
    sys.stdout.flush()
    sys.stderr.write(f"\ninterrupted ({name}): {what} stopped{left}\n")
    sys.stderr.flush()
    os._exit(128 + signum)


class _RaiseDroppedInterrupt(logging.Filter):
    """A filter of Prefect's flow-run logger that raises ``KeyboardInterrupt`` again where the
    engine logs that it dropped one, once :attr:`armed` (a Ctrl-C is being handled); it lets
    every record through. The record is logged in the main thread, inside the subflow's
    engine, so the exception goes on to the parent flow's code. (A logger's own filter: the
    narration adds a filter to the logger's handlers that keeps DEBUG records from them.)"""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def filter(self, record: logging.LogRecord) -> bool:
        dropped = record.exc_info[1] if record.exc_info else None
        if self.armed and isinstance(dropped, KeyboardInterrupt) and record.msg == DROPPED:
            raise KeyboardInterrupt
        return True


#: ``watching``: whether :func:`_watching` has set this process's signal wakeup socket (a
#: plain flag: a forked child reads it without taking any lock).
_STATE = SimpleNamespace(watching=False)


def _forget_in_child() -> None:
    """In a process forked while :func:`_watching` is active (a worker of the apply flow's
    process pool), signals must not reach the parent's wakeup socket: a pool that broke
    terminates its other workers with SIGTERM, which the parent would take for its own."""
    if _STATE.watching:
        _STATE.watching = False
        signal.set_wakeup_fd(-1)


@functools.cache
def _register_fork_hook() -> None:
    """Register :func:`_forget_in_child` to run in every forked child, once per process."""
    os.register_at_fork(after_in_child=_forget_in_child)


def _ignore(signum: int, frame: Any) -> None:
    """The forwarded signal's handler: its arrival is all that is needed."""


def _watch(reader: socket.socket, wake: int | None, on_first: Callable[[int], None]) -> None:
    """Read signal numbers from the wakeup socket until it closes; for each Ctrl-C or SIGTERM
    send ``wake`` to the main thread, and call ``on_first`` with the first one."""
    first = True
    main = threading.main_thread().ident
    while data := reader.recv(64):
        for number in (n for n in data if n in ENDING):
            if wake is not None and main is not None:
                signal.pthread_kill(main, wake)
            if first:
                first = False
                on_first(number)


@contextmanager
def _watching(on_first: Callable[[int], None]) -> Iterator[None]:
    """While in the block, Ctrl-C and SIGTERM wake a blocked main thread (where the system has
    real-time signals: not on macOS) and the first one is passed to ``on_first`` from a
    thread of its own."""
    wake = signal.SIGRTMIN + 1 if hasattr(signal, "SIGRTMIN") else None
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    _register_fork_hook()
    previous_wake = signal.signal(wake, _ignore) if wake is not None else None
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    _STATE.watching = True
    watcher = threading.Thread(
        target=_watch, args=(reader, wake, on_first), name="brandloop-signals", daemon=True
    )
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        _STATE.watching = False
        writer.close()  # the watcher reads the end and stops
        watcher.join(timeout=1)
        reader.close()
        if wake is not None and not watcher.is_alive():  # else it may still forward one
            signal.signal(wake, previous_wake)


def _lost_signal(exc: BaseException | None) -> int | None:
    """The signal an exception stands for, when it is one a handler raised: Prefect's
    ``TerminationSignal`` (its ``signal``) or ``KeyboardInterrupt`` (SIGINT); else None."""
    from prefect.exceptions import TerminationSignal

    if isinstance(exc, TerminationSignal):
        return int(exc.signal)
    return signal.SIGINT if isinstance(exc, KeyboardInterrupt) else None


def _send_to_main(signum: int) -> None:
    """Send ``signum`` to the main thread (its Python handler runs there)."""
    main = threading.main_thread().ident
    if main is not None:
        signal.pthread_kill(main, signum)


@contextmanager
def _redelivering(rearm_interrupt: Callable[[], object]) -> Iterator[None]:
    """While in the block, a signal lost in a finaliser (its handler's exception reported as
    unraisable) is sent to the main thread again, 50 ms later, from a timer: out of the
    finaliser by then, its handler's exception reaches the code that was running. A lost
    Ctrl-C first calls ``rearm_interrupt`` (in the main thread), so that it is taken again as
    a first Ctrl-C, not as the second that ends the command at once."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if (signum := _lost_signal(unraisable.exc_value)) is not None:
            if signum == signal.SIGINT and threading.current_thread() is threading.main_thread():
                rearm_interrupt()
            timer = threading.Timer(0.05, _send_to_main, args=(signum,))
            timer.daemon = True
            timer.start()
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _after_grace(end: Callable[[int], NoReturn], signum: int) -> None:
    """End the command :data:`GRACE_S` after the first signal ``signum``, from a timer."""
    timer = threading.Timer(GRACE_S, end, args=(signum,))
    timer.daemon = True
    timer.start()


@contextmanager
def end_on_signals(temporary_api: bool) -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM ends the command within seconds, exit 128 + the signal's
    number, its last line ``interrupted (NAME): ...``.

    Ctrl-C raises ``KeyboardInterrupt``: Prefect's engine records the run as crashed and the
    flow's clean-up runs (leases, temporary folders); a second Ctrl-C ends the command at
    once. On SIGTERM, Prefect's engine, whose handler replaces this one while a flow runs,
    records the run as crashed and hands the signal on to this one. Either way the command
    ends :data:`GRACE_S` after the first signal at the latest. Prefect's temporary API runs
    in a session of its own (:mod:`apps.temporary_api`), so a signal to the command's process
    group leaves it there to record the run; it is stopped last. Does nothing outside the
    main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum: int, frame: Any = None) -> NoReturn:
        end_command(temporary_api, signum)

    def cut_short(signum: int, frame: Any = None) -> NoReturn:
        end_command(temporary_api, signum, cut_short=True)

    dropped = _RaiseDroppedInterrupt()

    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, cut_short)
        dropped.armed = True
        raise KeyboardInterrupt

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, interrupt)}
    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, end)
    flow_runs = logging.getLogger("prefect.flow_runs")
    flow_runs.addFilter(dropped)
    try:
        with (
            _watching(lambda signum: _after_grace(cut_short, signum)),
            _redelivering(lambda: signal.signal(signal.SIGINT, interrupt)),
        ):
            yield
    except KeyboardInterrupt:
        end(signal.SIGINT)
    finally:
        flow_runs.removeFilter(dropped)
        for number, handler in previous.items():
            signal.signal(number, handler)
