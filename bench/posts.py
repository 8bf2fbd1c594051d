"""Deterministic synthetic posts for the benchmarks.

Posts are built from the demo posts shipped in ``ner/resources/demo/posts.jsonl``: each one
takes a demo post, tops it up to about 25 words with the start of another, gives it fresh
links and handles, sometimes names a brand from ``ner/resources/brands.txt`` or changes case,
and gets a new unique id and timestamp. The same ``(n, seed)`` always gives the same posts,
and the first ``n`` posts of a longer run are the ``n`` posts of a shorter one.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from ner.storage import Storage

FIRST_ID = 2_100_000_000_000_000_000
START = datetime(2026, 10, 1, tzinfo=UTC)
_LINK = re.compile(r"https://t\.co/\w+")
_HANDLE = re.compile(r"@\w+")
_MENTIONS = (
    "also obsessed with {b} rn",
    "{b} did it again",
    "anyone tried the new {b} drop?",
    "swapped to {b} and never going back",
    "{b} haul incoming",
    "why is {b} always sold out",
)


def demo_texts() -> list[str]:
    """Texts of the demo posts bundled with brandloop."""
    path = resources.files("ner") / "resources" / "demo" / "posts.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def _brands() -> list[str]:
    path = resources.files("ner") / "resources" / "brands.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _token(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def generate_posts(n: int, seed: int = 17) -> Iterator[dict[str, Any]]:
    """Yield ``n`` post records (``id``, ``text``, ``created_at``, ...) deterministically."""
    rng = random.Random(seed)
    texts = demo_texts()
    brands = _brands()
    post_id = FIRST_ID
    created = START
    for _ in range(n):
        words = rng.choice(texts).split()
        target = rng.randint(18, 32)
        while len(words) < target:
            extra = rng.choice(texts).split()
            words += extra[: target - len(words)]
        text = " ".join(words)
        if rng.random() < 0.3:
            text += " " + rng.choice(_MENTIONS).format(b=rng.choice(brands))
        if rng.random() < 0.15:
            text = text.lower()
        text = _LINK.sub(lambda _: "https://t.co/" + _token(rng, 10), text)
        text = _HANDLE.sub(lambda _: "@" + _token(rng, rng.randint(5, 12)).lower(), text)
        post_id += rng.randint(10_000, 5_000_000_000)
        created += timedelta(seconds=rng.randint(1, 30))
        yield {
            "id": str(post_id),
            "text": text,
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "author_id": str(rng.randint(10**17, 10**18)),
            "lang": "en",
            "source": "bench",
            "query": "beauty",
        }


def write_posts(storage: Storage, key: str, n: int, seed: int = 17) -> str:
    """Write ``n`` generated posts to ``key`` as JSONL (the fetch step's format)."""
    lines = (json.dumps(post, ensure_ascii=False) for post in generate_posts(n, seed))
    return storage.write_lines(key, lines)
