"""The process :func:`train_isolated` trains in: ``python -m ner.training_worker``.

The parent writes a :class:`TrainRequest` as JSON into a temporary folder and starts
``<python> -m ner.training_worker <folder>``; the child reads ``request.json``, calls
:func:`ner.training.train` and writes ``result.json``: the :class:`~ner.training.TrainResult`,
or the brandloop error it raised (its type and message). While it trains, spaCy's curve
logger appends one JSON line per dev-slice evaluation to ``curve.jsonl`` in the same folder,
which the parent follows (:class:`CurveTail`) to report progress. Started from this module entry
point, the child never imports the caller's ``__main__`` (as a ``multiprocessing`` spawn
does), so library calls work from a plain script. The child's temporary folders are made
inside the request folder, and a child whose parent is gone removes that folder and ends
(:func:`_end_with_parent`); a request folder a dead parent left is removed by the next
training (:func:`ner.tempfiles.owned_temp_dir`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ner import errors
from ner.models import BrandList
from ner.settings import TrainSettings
from ner.tempfiles import owned_temp_dir
from ner.training import EpochProgress, OnEpoch, TrainResult, train
from ner.types import Annotation, Rejected

log = logging.getLogger(__name__)

REQUEST = "request.json"
RESULT = "result.json"
CURVE = "curve.jsonl"
#: Seconds between two looks at the child (its curve, whether it ended), and of the child
#: at its parent.
POLL_S = 0.5
#: The child's exit status when it ended because its parent was gone.
ORPHANED = 3
#: How long an interrupted parent lets its training process clean up (SIGTERM) before it
#: kills it, in seconds.
STOP_GRACE_S = 5.0


class TrainRequest(BaseModel):
    """The arguments of :func:`ner.training.train`, as JSON."""

    annotations: list[dict[str, Any]]
    start_from: str
    output_dir: str
    labels: list[str]
    recipe: TrainSettings
    seed: int
    unlabelled: list[dict[str, Any]] = []
    rehearsal: list[dict[str, Any]] = []
    #: A team's own brand list (:class:`ner.models.BrandList`); None: the shipped lists.
    brands: list[str] | None = None
    brands_exact_case: list[str] = []
    #: The process that waits for the result; the child ends when it is gone.
    parent_pid: int | None = None


def run_in_subprocess(
    request: TrainRequest, on_curve: Callable[[dict[str, Any]], None] | None = None
) -> Any:
    """Run ``request`` in ``python -m ner.training_worker``; returns its
    :class:`~ner.training.TrainResult` or raises its error (see :func:`raise_child_error`).

    While the child trains, each line it appends to its curve (``curve.jsonl`` in the
    request folder) is passed to ``on_curve`` as a dict, within :data:`POLL_S` seconds."""
    with owned_temp_dir("brandloop-train-request-") as folder:
        request = request.model_copy(update={"parent_pid": os.getpid()})
        (folder / REQUEST).write_text(request.model_dump_json(), encoding="utf-8")
        package_root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        (folder / "tmp").mkdir()
        env["TMPDIR"] = str(folder / "tmp")  # the child's own temporary folders go with it
        tail = CurveTail(folder / CURVE)
        with (folder / "stderr.txt").open("w+", encoding="utf-8") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", "ner.training_worker", str(folder)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
            while True:
                finished = _wait(child, POLL_S)
                for row in tail.new_rows():
                    if on_curve is not None:
                        on_curve(row)
                if finished:
                    break
            stderr.seek(0)
            errors_text = stderr.read()
        result_path = folder / RESULT
        if not result_path.exists():
            raise errors.TrainingError(
                f"the training process died before it finished (exit {child.returncode}): "
                f"{errors_text[-2000:]}"
            )
        outcome = json.loads(result_path.read_text(encoding="utf-8"))
    if "error" in outcome:
        raise_child_error(outcome["error"])
    return _result_from_json(outcome["result"])


def _wait(child: subprocess.Popen[str], seconds: float) -> bool:
    """Whether ``child`` has ended within ``seconds``; a caller's interrupt (Ctrl-C, or the
    exception Prefect's engine raises on SIGTERM) ends it too: SIGTERM, on which it removes
    its request folder, then SIGKILL after :data:`STOP_GRACE_S`."""
    try:
        child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise
    return True


class CurveTail:
    """Follows a JSON-lines file another process appends to: :meth:`new_rows` returns the
    complete lines written since the previous call (none while the file does not exist)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def raise_child_error(error: dict[str, Any]) -> None:
    """Raise the brandloop error the child reported, with its type; an unknown type (or a
    non-brandloop exception) as :class:`TrainingError`."""
    cls = getattr(errors, str(error.get("type")), None)
    message = str(error.get("message", ""))
    if isinstance(cls, type) and issubclass(cls, errors.DataError):
        raise cls(error.get("record_id"), str(error.get("reason", message)))
    if isinstance(cls, type) and issubclass(cls, errors.BrandloopError):
        raise cls(message)
    raise errors.TrainingError(f"training failed: {error.get('type')}: {message}")


def _result_to_json(result: Any) -> dict[str, Any]:
    return {
        "model_dir": str(result.model_dir),
        "start_from": result.start_from,
        "train_size": result.train_size,
        "dev_size": result.dev_size,
        "rejected": [{"record_id": r.record_id, "reason": r.reason} for r in result.rejected],
        "dev_scores": result.dev_scores,
        "curve": list(result.curve),
        "seconds": result.seconds,
        "hard_negatives": result.hard_negatives,
        "rehearsed": result.rehearsed,
    }


def _result_from_json(data: dict[str, Any]) -> Any:
    return TrainResult(
        model_dir=Path(data["model_dir"]),
        start_from=data["start_from"],
        train_size=int(data["train_size"]),
        dev_size=int(data["dev_size"]),
        rejected=tuple(Rejected(r["record_id"], r["reason"]) for r in data["rejected"]),
        dev_scores={k: float(v) for k, v in data["dev_scores"].items()},
        curve=tuple(data["curve"]),
        seconds=float(data["seconds"]),
        hard_negatives=int(data.get("hard_negatives", 0)),
        rehearsed=int(data.get("rehearsed", 0)),
    )


def _error_to_json(exc: Exception) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, errors.DataError):
        error.update(record_id=exc.record_id, reason=exc.reason)
    return error


def train_isolated(
    annotations: Sequence[Annotation],
    *,
    start_from: str,
    output_dir: Path,
    labels: Sequence[str] = ("BRAND",),
    recipe: TrainSettings | None = None,
    seed: int = 17,
    on_epoch: OnEpoch | None = None,
    unlabelled: Sequence[Annotation] = (),
    rehearsal: Sequence[Annotation] = (),
    brands: BrandList | None = None,
) -> TrainResult:
    """:func:`train` in a fresh Python process; same arguments, same result.

    spaCy's training loop draws from the process-wide ``random`` and ``numpy.random``
    generators, seeded once at its start. In a long-lived process (a Prefect flow run, with
    its API, log and event threads) anything else that draws from them meanwhile changes the
    batches and dropout masks, so one seed gave dev F1 from 0.12 to 0.16 on WNUT-17 across
    runs. A process of its own makes the model a function of the data, the recipe and the
    seed, and returns its memory when done. The child is ``python -m ner.training_worker``,
    a module entry point: unlike a ``multiprocessing`` spawn it never re-imports the
    caller's ``__main__``, so a plain script needs no ``if __name__ == "__main__"`` guard.

    ``unlabelled``: posts nobody labelled, the pool of ``recipe.hard_negatives``;
    ``rehearsal``: labelled posts of a general source (both: see :func:`ner.training.train`).

    ``on_epoch`` is called here, in the caller's thread, with each dev-slice evaluation
    (:class:`EpochProgress`) as the child appends it to its curve: progress while it trains.

    An error of the child is raised here with its type (:class:`TrainingError`, or another
    brandloop error); a child that dies (killed, out of memory) raises :class:`TrainingError`.
    """
    recipe = recipe or TrainSettings()
    request = TrainRequest(
        annotations=[a.to_dict() for a in annotations],
        start_from=start_from,
        output_dir=str(output_dir),
        labels=list(labels),
        recipe=recipe,
        seed=seed,
        unlabelled=[a.to_dict() for a in unlabelled],
        rehearsal=[a.to_dict() for a in rehearsal],
        brands=None if brands is None else list(brands.names),
        brands_exact_case=[] if brands is None else list(brands.exact_case),
    )
    on_row = None if on_epoch is None else _progress_of_rows(on_epoch, recipe.epochs)
    return run_in_subprocess(request, on_curve=on_row)


def _progress_of_rows(on_epoch: OnEpoch, max_epochs: int) -> Callable[[dict[str, Any]], None]:
    """Turn curve rows, in order, into :class:`EpochProgress` calls (each knows the step of
    the row before it)."""
    previous: list[int] = []

    def on_row(row: dict[str, Any]) -> None:
        progress = EpochProgress.from_curve(row, max_epochs, previous[-1] if previous else None)
        previous.append(progress.step)
        on_epoch(progress)

    return on_row


def _end_with_parent(folder: Path, parent_pid: int) -> None:
    """Wait while ``parent_pid`` is this process's parent; once it is not (the parent ended
    without ending this process: the CLI's exit on a signal, a SIGKILL), remove the request
    folder (the training posts, this process's temporary folders) and end at once, exit
    :data:`ORPHANED`: nobody is left to take the model (trial AR saw an orphan train on at
    97 % of a core)."""
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    _remove_request(folder)
    os._exit(ORPHANED)


def _end_on_signal(folder: Path, signum: int, frame: object) -> None:
    """SIGINT or SIGTERM (Ctrl-C or a stop reaches the whole process group): remove the
    request folder and end at once, exit 128 + ``signum``. The command ends on the same
    signal without clean-up, so the training posts stayed in ``/tmp`` (trial AS); a parent
    still there reads the end as a training that died."""
    for other in (signal.SIGINT, signal.SIGTERM):  # one clean-up: Ctrl-C, then the parent's
        signal.signal(other, signal.SIG_IGN)
    _remove_request(folder)
    os._exit(128 + signum)


#: Run by :func:`_remove_request` in a process of its own: wait (30 s at most) until the
#: process ``argv[2]`` has ended, then remove the folder ``argv[1]``.
_REMOVER = (
    "import os, shutil, sys, time\n"
    "deadline = time.monotonic() + 30\n"
    "while os.path.exists(f'/proc/{sys.argv[2]}') and time.monotonic() < deadline:\n"
    "    time.sleep(0.1)\n"
    "shutil.rmtree(sys.argv[1], ignore_errors=True)\n"
)


#: Held while the request folder is being removed: the watch of the parent and a signal may
#: both end the process, and the second must not end it before the first has started the
#: remover.
_REMOVING = threading.Lock()


def _remove_request(folder: Path) -> None:
    """Remove the request folder of this process, which is about to end: the training posts
    at once, the rest (its temporary folders, which the training thread may still write
    into: a CI run saw them outlast a second of retries) by a process of its own once this
    one has ended. A second call (the other of watch and signal) waits for the first and
    does nothing more."""
    gone = folder.with_name(f"{folder.name}.orphaned")
    with _REMOVING:
        if gone.exists() or not folder.exists():
            return
        try:  # out of the training thread's way first: it writes on by the old paths
            folder.rename(gone)
        except OSError:
            gone = folder
        (gone / REQUEST).unlink(missing_ok=True)
        subprocess.Popen(
            [sys.executable, "-c", _REMOVER, str(gone), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Child side: train what ``<folder>/request.json`` asks, answer in ``result.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ner.training_worker <request folder>", file=sys.stderr)
        return 2
    folder = Path(args[0])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    request = TrainRequest.model_validate_json((folder / REQUEST).read_text(encoding="utf-8"))
    if request.parent_pid is not None:
        watch = threading.Thread(target=_end_with_parent, args=(folder, request.parent_pid))
        watch.daemon = True
        watch.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, functools.partial(_end_on_signal, folder))
    try:
        result = train(
            [Annotation.from_dict(a) for a in request.annotations],
            start_from=request.start_from,
            output_dir=Path(request.output_dir),
            labels=tuple(request.labels),
            recipe=request.recipe,
            seed=request.seed,
            curve_path=folder / CURVE,
            unlabelled=[Annotation.from_dict(a) for a in request.unlabelled],
            rehearsal=[Annotation.from_dict(a) for a in request.rehearsal],
            brands=None
            if request.brands is None
            else BrandList(tuple(request.brands), tuple(request.brands_exact_case)),
        )
        outcome: dict[str, Any] = {"result": _result_to_json(result)}
    except errors.BrandloopError as exc:
        outcome = {"error": _error_to_json(exc)}
    (folder / RESULT).write_text(json.dumps(outcome), encoding="utf-8")
    return 0 if "result" in outcome else 1


if __name__ == "__main__":
    raise SystemExit(main())
