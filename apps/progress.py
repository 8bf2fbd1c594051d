"""What a flow run is doing, one line per step, for the ``brandloop`` command line.

:class:`Narrator` listens to the run loggers of Prefect (``prefect.flow_runs``,
``prefect.task_runs``) while a flow runs in this process. A task that starts turns into a
spinner line ("training the challenger ... 0:00:41"); when it ends, one line stays on the
screen with its outcome and duration. What the flows log at INFO is printed as it comes,
so the narration follows the run's own log, the one the Prefect UI shows. Where the console
is not a terminal (output redirected to a file or a pipe) there is no spinner: a running
task's progress ("epoch 3/20 ...") is printed as a line instead, at most one per task every
:data:`PLAIN_EVERY` seconds, and its last one when the task ends (the final epoch's score).
On a terminal the spinner shows them, and the last one stays on screen when the task ends
(the split's accounting of every post, the final epoch).

The run's records still reach the Prefect API (the UI) at INFO and above; Prefect's own
console lines are hidden unless ``verbose`` (``--debug``). Warnings of the tasks and of the
library (``ner.*`` loggers) are narrated as ``! message`` lines, each on its own line.
"""

from __future__ import annotations

import ast
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

#: Task name -> what the step does, as the narration says it.
STEPS: dict[str, str] = {
    "fetch_posts": "fetched posts",
    "predict_posts": "predicted brands",
    "predict_shard": "predicted a shard",
    "select_for_labelling": "chose posts for labelling",
    "write_tasks": "wrote Label Studio import tasks",
    "send_to_label_studio": "imported tasks into Label Studio",
    "replay_labels": "replay annotator labelled the posts",
    "wait_for_exports": "waited for label exports",
    "wait_for_label_studio": "waited for labels in Label Studio",
    "pull_annotations": "pulled the annotations",
    "prepare_gold": "split the labels into the gold set and the training pool",
    "evaluate_on_gold": "evaluated on the gold set",
    "prepare_training": "read the training data and looked for a version trained on it",
    "train_challenger": "trained the challenger",
    "log_challenger": "logged the challenger to MLflow",
    "promote_if_better": "applied the promotion rule",
}
#: The same steps while they run (the spinner's text).
RUNNING: dict[str, str] = {
    "fetch_posts": "fetching posts",
    "predict_posts": "predicting brands",
    "predict_shard": "predicting a shard",
    "select_for_labelling": "choosing posts for labelling",
    "write_tasks": "writing Label Studio import tasks",
    "send_to_label_studio": "importing tasks into Label Studio",
    "replay_labels": "replay annotator labelling",
    "wait_for_exports": "waiting for label exports",
    "wait_for_label_studio": "waiting for labels in Label Studio",
    "pull_annotations": "pulling annotations",
    "prepare_gold": "splitting the labels into the gold set and the training pool",
    "evaluate_on_gold": "evaluating on the gold set",
    "prepare_training": "reading the training data",
    "train_challenger": "training the challenger",
    "log_challenger": "logging the challenger to MLflow",
    "promote_if_better": "applying the promotion rule",
}
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
#: The library's loggers: their warnings are narrated too (not printed raw by Prefect's
#: console handler between the step lines).
LIBRARY_LOGGER = "ner"

_CREATED = re.compile(r"^Created task run '.*' for task '(?P<task>[^']+)'")
_BEGIN_FLOW = re.compile(r"^Beginning (?:sub)?flow run '.*' for flow '(?P<flow>[^']+)'")
_FINISHED = re.compile(r"^Finished in state (?P<state>\w+)\((?P<message>.*)\)$", re.S)
#: Longest narrated log message: a flow may log a whole result dict, but a gate's reasons
#: (train-ner's last line) and apply's "no new posts" with every cause and its storage
#: addresses stay whole (at 480 a trial lost the --reread hint); the console wraps it.
MAX_LINE = 1200
#: "k/n" in a task's INFO message ("epoch 3/20", "predicted 512/2000 posts") fills its bar.
_FRACTION = re.compile(r"\b(?P<done>\d+)\s*/\s*(?P<total>\d+)\b")
_ENGINE_ERROR = "Encountered exception during execution"
_TASK_ERROR = "Task run encountered an exception "
_RETRY = re.compile(
    r"(?:failed with \w+: (?P<cause>.*) - )?Retry (?P<n>\d+)/(?P<of>\d+) will start", re.S
)
#: An exception's ``repr`` as Prefect logs a retry's cause: ``TimeoutError('read timed out')``.
_EXC_REPR = re.compile(r"(?P<kind>\w+)\((?P<args>.*)\)", re.S)
#: Seconds between two progress lines of one task when the console is not a terminal.
PLAIN_EVERY = 10.0


@dataclass
class _Running:
    label: str
    started: float
    progress_id: TaskID
    said: float = float("-inf")  # when its last progress line was printed (plain console)
    held: str | None = None  # its latest progress line not printed yet (plain console)
    last: str | None = None  # its latest line, kept on screen when it ends (terminal)
    warned: int = 0  # warnings it logged: its end is then marked "!" rather than "✓"


class Narrator(logging.Handler):
    """A logging handler that turns Prefect run records into one line per step."""

    def __init__(
        self, console: Console, progress: Progress, starting: str = "starting the flow run"
    ) -> None:
        super().__init__(level=logging.DEBUG)
        self.console = console
        self.progress = progress
        self.running: dict[str, _Running] = {}
        self.starting: TaskID | None = progress.add_task(starting, total=None)
        if not console.is_terminal:  # no spinner to show it: a slow start says what it waits on
            self.say(f"  [dim]{escape(starting)} …[/]")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._narrate(record)
        except Exception:  # a narration error must never fail the run
            self.handleError(record)

    def _narrate(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        task = getattr(record, "task_name", None)
        run_id = str(getattr(record, "task_run_id", "") or "")
        if task is None:
            self._flow_record(record, message)
        elif created := _CREATED.match(message):
            self._start(run_id, created["task"])
        elif finished := _FINISHED.match(message):
            self._finish(run_id, task, finished["state"], finished["message"])
        elif retry := _RETRY.search(message):  # a trial saw a retry, and 2 min, unexplained
            after = f" after {_cause(retry['cause'])}" if retry["cause"] else ""
            line = f"{task}: retry {retry['n']}/{retry['of']}{after}"
            self.say(f"[yellow]↻[/] {escape(_clip(line))}")
        elif record.levelno >= logging.WARNING:  # a line of its own, not spinner text
            running = self.running.get(run_id)
            if running is not None:
                running.warned += 1
                self._say_held(running)
            self.warn(f"{running.label}: {message}" if running else message)
        elif record.levelno >= logging.INFO and run_id in self.running:
            self._task_message(self.running[run_id], message)

    def _task_message(self, running: _Running, message: str) -> None:
        """A running task's INFO line becomes its spinner's text; "k/n" fills its bar."""
        fraction = _FRACTION.search(message)
        if not self.console.is_terminal:
            self._plain_progress(running, message)
        else:  # the spinner shows it; its last one stays when the task ends
            running.last = f"  [dim]{escape(running.label)}: {escape(_clip(message))}[/]"
        self.progress.update(
            running.progress_id,
            description=f"{running.label}: {escape(_clip(message, 100))}",
            completed=int(fraction["done"]) if fraction else None,
            total=int(fraction["total"]) if fraction else None,
        )

    def _plain_progress(self, running: _Running, message: str) -> None:
        """Without a spinner to show it, a task's progress is a line, :data:`PLAIN_EVERY`
        seconds apart at most (a long step still says it is alive, a fast one does not flood)."""
        now = time.monotonic()
        line = f"  [dim]{escape(running.label)}: {escape(_clip(message))}[/]"
        running.held = None if now - running.said >= PLAIN_EVERY else line
        if running.held is None:
            running.said = now
            self.say(line)

    def _say_held(self, running: _Running) -> None:
        """Say the progress line ``running`` holds back (plain console), so what the task
        logged before a warning comes before it (a trial saw a wait's last "5 s left" after
        its timeout warning)."""
        if running.held is not None:
            self.say(running.held)
            running.held, running.said = None, time.monotonic()

    def _flow_record(self, record: logging.LogRecord, message: str) -> None:
        if self.starting is not None:
            self.progress.remove_task(self.starting)
            self.starting = None
        if begun := _BEGIN_FLOW.match(message):
            self.say(f"[bold]▶ {escape(begun['flow'])}[/]")
        elif finished := _FINISHED.match(message):
            if finished["state"] not in ("Completed", "Cached"):
                flow = getattr(record, "flow_name", "flow")
                self.say(f"[red]✗ {escape(flow)} {finished['state'].lower()}[/]")
        elif message.startswith(_ENGINE_ERROR):
            return  # the failed task's line, and the command's error line, say it
        elif record.levelno >= logging.WARNING:
            self.warn(message)
        elif record.levelno >= logging.INFO:
            self.say(f"  [dim]{escape(_clip(message))}[/]")

    def _start(self, run_id: str, task: str) -> None:
        label = RUNNING.get(task, task.replace("_", " "))
        progress_id = self.progress.add_task(label, total=None)
        self.running[run_id] = _Running(label, time.monotonic(), progress_id)

    def _finish(self, run_id: str, task: str, state: str, message: str) -> None:
        running = self.running.pop(run_id, None)
        seconds, warned = 0.0, running.warned if running is not None else 0
        if running is not None:
            self.progress.remove_task(running.progress_id)
            seconds = time.monotonic() - running.started
            if running.held is not None:  # where the task got to, e.g. its last epoch
                self.say(running.held)
            elif running.last is not None:  # a terminal: the spinner's last text, kept
                self.say(running.last)
        if state in ("Completed", "Cached"):
            if task in STEPS:
                mark = "[yellow]![/]" if warned else "[green]✓[/]"
                after = (
                    f", see its {'warnings' if warned > 1 else 'warning'} above" if warned else ""
                )
                self.say(f"{mark} {STEPS[task]} [dim]({seconds:.1f} s{after})[/]")
        elif state == "AwaitingRetry":
            said = _state_message(message)[:200]
            self.say(f"[yellow]↻[/] {escape(task)} failed, will retry: {escape(said)}")
        else:
            reason = _state_message(message).removeprefix(_TASK_ERROR)
            self.say(f"[red]✗[/] {escape(task)} {state.lower()}: {escape(_clip(reason))}")

    def say(self, line: str) -> None:
        self.progress.console.print(line, highlight=False)

    def warn(self, message: str) -> None:
        """A warning as one narrated line: ``! message`` (clipped, markup escaped)."""
        self.say(f"[yellow]![/] {escape(_clip(message))}")


def _state_message(shown: str) -> str:
    """The message of a state as Prefect's ``State.__str__`` shows it (``'the message'`` or
    ``"..."``, its ``repr``, then ``, type=SCHEDULED`` when the name is not the type), as
    written: a trial read ``bucket \\'nosuchbucket\\'``."""
    quoted = re.sub(r", type=[A-Z_]+$", "", shown.strip())
    try:
        message = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        return quoted.strip("'\"")
    return message if isinstance(message, str) else quoted


def _cause(shown: str) -> str:
    """``TimeoutError: read timed out`` for the ``repr`` ``TimeoutError('read timed out')``
    of a retried task's exception; anything else as logged."""
    found = _EXC_REPR.fullmatch(shown.strip())
    if found is None:
        return shown
    try:
        args = ast.literal_eval(f"({found['args']},)") if found["args"] else ()
    except (ValueError, SyntaxError):
        return shown
    said = "; ".join(str(a) for a in args)
    return f"{found['kind']}: {said}" if said else found["kind"]


def _clip(message: str, width: int = MAX_LINE) -> str:
    """``message`` on one line (its lines joined by a space), cut at ``width``. Spaces within
    a line are kept: a post id ``'  sp-1 '`` was shown ``' sp-1 '`` (trial BB)."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return line if len(line) <= width else f"{line[: width - 1]}…"


class _LibraryWarnings(logging.Handler):
    """The library's warnings and errors as narrated lines (``! message``)."""

    def __init__(self, narrator: Narrator) -> None:
        super().__init__(level=logging.WARNING)
        self.narrator = narrator

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.narrator.warn(record.getMessage())
        except Exception:  # a narration error must never fail the run
            self.handleError(record)


class _BelowInfo(logging.Filter):
    """Keeps DEBUG records away from the Prefect API (its UI shows INFO and above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


@contextmanager
def narrated(
    console: Console, *, verbose: bool = False, starting: str = "starting the flow run"
) -> Iterator[Narrator]:
    """Narrate the flow runs started inside the block on ``console``; ``starting`` is the
    spinner's text until the first run begins.

    Prefect's run loggers are set to DEBUG meanwhile (task starts are DEBUG records), and
    restored after; DEBUG records do not reach the Prefect API.
    """
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    narrator = Narrator(console, progress, starting)
    quiet = _BelowInfo()
    saved = []
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.DEBUG)
        logger.propagate = verbose
        logger.addHandler(narrator)
        for handler in logger.handlers:
            if handler is not narrator:
                handler.addFilter(quiet)
    library, warnings = logging.getLogger(LIBRARY_LOGGER), _LibraryWarnings(narrator)
    library_propagate = library.propagate
    if not verbose:  # verbose: Prefect's console handler prints them, as every other line
        library.addHandler(warnings)
        library.propagate = False
    try:
        with progress:
            yield narrator
    finally:
        library.removeHandler(warnings)
        library.propagate = library_propagate
        for logger, level, propagate in saved:
            logger.removeHandler(narrator)
            for handler in logger.handlers:
                handler.removeFilter(quiet)
            logger.setLevel(level)
            logger.propagate = propagate
