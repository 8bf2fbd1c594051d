"""``python -m ner.dask_local WORKERS``: a Dask ``LocalCluster`` in a process of its own.

Dask starts its worker processes with ``spawn``, which imports the parent's ``__main__``
again in each of them: a user's script without an ``if __name__ == "__main__":`` guard ran
its flows once more per worker. Started from this module entry point
(:func:`ner.parallel.local_cluster`), the workers import this module instead, and never the
caller's script (the training worker does the same: :mod:`ner.training_worker`).

Prints the scheduler's address on one line, then runs until its standard input closes (the
parent ends the block, or dies), and stops the cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """Start ``argv[0]`` single-threaded worker processes, print the scheduler address, wait
    for standard input to close, stop them. Exit 2 for a bad argument."""
    import dask.config
    from distributed import LocalCluster

    from ner.parallel import local_cluster_config, no_inherited_trim_threshold

    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) < 1:
        print(f"usage: python -m ner.dask_local WORKERS (got {list(argv)})", file=sys.stderr)
        return 2
    with dask.config.set(local_cluster_config()), no_inherited_trim_threshold():
        cluster = LocalCluster(
            n_workers=int(argv[0]), threads_per_worker=1, processes=True, dashboard_address=None
        )
    with cluster:
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
