"""Start ``train-ner`` when export files land in ``{storage}/{env}/exports/``.

An export dropped into the environment's ``exports/`` folder (by a person, or by a Label
Studio export storage) queues exactly one ``train-ner/<env>`` run (the snapshots a
``source=label_studio`` run writes there are not exports that landed: they are left
alone); a burst of files queues one run too. The watcher lists the folder every
``--interval`` seconds (a local folder or a ``gs://`` bucket, through :mod:`ner.storage`)
and fires once the burst has been quiet for ``--quiet`` seconds, so a half-copied set of
files never starts a run that misses its end::

    python -m deployments.export_watcher --env dev [--interval 5] [--quiet 30]

The keys it has already acted on are kept in storage (``checkpoints/export-watch.json``), so
a restart fires only for files that landed while it was away. In production on GCS, the
bucket's object-finalize notifications can replace the polling: see the README ("Retraining
when an export lands").

Configuration: the usual ``NER_`` settings (storage, environment); ``PREFECT_API_URL`` names
the Prefect server that queues the run (required, as for the label trigger: without it the
runs would go to a temporary local database that no worker reads).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from deployments.label_trigger import (
    check_prefect_api,
    deployment_name,
    prefect_api_url,
    prefect_errors,
)
from flows.context import RunContext, deployment_settings
from ner import layout
from ner.errors import BrandloopError, StorageError
from ner.layout import EXPORTS
from ner.storage import Storage

log = logging.getLogger("brandloop.export_watcher")

#: Where the watcher keeps the export keys it has already acted on.
CHECKPOINT_KEY = layout.export_watch_checkpoint()
#: Tag on the runs it starts, so they can be told from scheduled ones.
RUN_TAG = "export-watcher"


@dataclass
class Burst:
    """Debounce of landed files: fire once the new keys have stopped changing for ``quiet``
    seconds. Times are ``time.monotonic()`` seconds; pure, so it is tested without a clock."""

    quiet: float
    acted: set[str] = field(default_factory=set)
    pending: frozenset[str] = frozenset()
    changed_at: float | None = None

    def observe(self, keys: Iterable[str], now: float) -> frozenset[str]:
        """Record the folder's current ``keys``; return the keys to act on now (or none)."""
        new = frozenset(k for k in keys if k not in self.acted)
        if new != self.pending:
            self.pending, self.changed_at = new, now
        if not new or self.changed_at is None or now - self.changed_at < self.quiet:
            return frozenset()
        self.acted |= new
        self.pending, self.changed_at = frozenset(), None
        return new


def export_keys(storage: Storage) -> list[str]:
    """The export files in ``exports/`` (JSON; temporary or hidden names left out, and the
    snapshots a ``train-ner`` run of ``source=label_studio`` writes there itself,
    ``…-ls-<project>.json``: acting on those would start a second run for every such run)."""
    return [
        key
        for key in storage.list(EXPORTS)
        if layout.is_export(key)
        and not key.rsplit("/", 1)[-1].startswith(".")
        and layout.export_snapshot_project(key) is None
    ]


def load_acted(storage: Storage) -> set[str]:
    if not storage.exists(CHECKPOINT_KEY):
        return set()
    return {str(key) for key in storage.read_json(CHECKPOINT_KEY).get("acted", [])}


def watch(
    storage: Storage,
    on_burst: Callable[[frozenset[str]], object],
    *,
    interval: float,
    quiet: float,
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Poll ``exports/`` until ``stop`` is set; call ``on_burst`` once per quiet burst of new
    files, then record them in the checkpoint. Returns how many bursts fired.

    A listing that fails (storage unreachable) is logged and tried again next interval;
    a failing ``on_burst`` leaves the burst unrecorded, so it fires again.
    """
    burst = Burst(quiet=quiet, acted=load_acted(storage))
    fired = 0
    while not stop.is_set():
        try:
            ready = burst.observe(export_keys(storage), clock())
        except StorageError as exc:
            log.warning("cannot list %s/: %s", EXPORTS, exc)
            ready = frozenset()
        if ready:
            try:
                on_burst(ready)
            except BrandloopError as exc:
                log.error(
                    "could not start training for %d file(s), kept pending for the next quiet "
                    "listing: %s",
                    len(ready),
                    exc,
                )
                burst.acted -= ready
            else:
                storage.write_json(CHECKPOINT_KEY, {"acted": sorted(burst.acted)})
                fired += 1
        stop.wait(interval)
    return fired


def start_training(deployment: str) -> Callable[[frozenset[str]], str]:
    """An ``on_burst`` that queues one run of ``deployment`` on the exports in storage."""

    def trigger(keys: frozenset[str]) -> str:
        from prefect.deployments import run_deployment

        run: object = run_deployment
        with prefect_errors(deployment):  # unreachable API: the keys are retried (watch)
            flow_run = run(  # type: ignore[operator]
                deployment,
                parameters={"source": "storage"},
                timeout=0,
                tags=[RUN_TAG],
                as_subflow=False,
                _sync=True,
            )
        log.info(
            "%d new export(s) %s: queued flow run %s of %s",
            len(keys),
            sorted(keys),
            flow_run.id,
            deployment,
        )
        return str(flow_run.id)

    return trigger


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m deployments.export_watcher",
        description="Start train-ner when export files land in the environment's exports/.",
    )
    root.add_argument("--env", required=True, choices=("dev", "staging", "prod"))
    root.add_argument("--deployment", default=None, help="default: train-ner/<env>")
    root.add_argument("--interval", type=float, default=5.0, help="seconds between listings")
    root.add_argument(
        "--quiet", type=float, default=30.0, help="seconds without new files that end a burst"
    )
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # force: importing flows.context has let Prefect configure the root logger already
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    for noisy in ("httpx", "httpcore"):  # every request of Prefect's client, at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        api = prefect_api_url("this watcher")
        check_prefect_api(api, "this watcher")
        settings = deployment_settings({"env": args.env}, log.info)
        storage = RunContext.open(settings).storage
        deployment = deployment_name(settings.env, args.deployment)
        log.info(
            "watching %s every %.0f s; a quiet burst starts %s on %s",
            storage.uri(EXPORTS),
            args.interval,
            deployment,
            api,
        )
        watch(
            storage, start_training(deployment), interval=args.interval, quiet=args.quiet, stop=stop
        )
    except BrandloopError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
