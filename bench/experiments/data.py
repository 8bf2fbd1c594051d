"""The evaluation sets of the recipe experiments: WNUT-17 and the demo's beauty gold.

* ``wnut("train" | "dev")`` - WNUT-17, corporation + product = BRAND (:mod:`bench.support`);
* ``beauty()`` - the 453 synthetic beauty posts of ``ner/resources/demo/gold_export.json``;
* ``beauty_split()`` - the same posts split by a hash of the post id: 70 % to train the
  beauty model on, 30 % held out to score it (the WNUT-trained model is scored on all).
* ``folds(train, k)`` - 3-fold cross-validation over WNUT-17 train (position modulo 3).
* ``entity_folds(train, k)`` - the same, but split by brand: no brand of the held-out fold
  occurs as a brand in its training part (WNUT-17 dev's brands are unseen too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from ner.datasets import split_point
from ner.types import Annotation, Span

BEAUTY_SALT = "h6-beauty-split"
ENTITY_SALT = "entity-folds"


def wnut(split: str) -> list[Annotation]:
    from bench.support import wnut as load

    return load(split)


def beauty() -> list[Annotation]:
    """The demo gold export as annotations (BRAND spans; offsets are code points)."""
    path = Path(str(resources.files("ner") / "resources" / "demo" / "gold_export.json"))
    tasks = json.loads(path.read_text(encoding="utf-8"))
    out: list[Annotation] = []
    for task in tasks:
        text = task["data"]["text"]
        spans = []
        for result in task["annotations"][0]["result"]:
            value = result["value"]
            start, end = value["start"], value["end"]
            spans.append(Span(start, end, value["labels"][0], text[start:end]))
        out.append(Annotation(post_id=str(task["data"]["post_id"]), text=text, spans=tuple(spans)))
    return out


def beauty_split(fraction: float = 0.3) -> tuple[list[Annotation], list[Annotation]]:
    """(train, held-out) parts of :func:`beauty`, by a hash of the post id."""
    posts = beauty()
    held = [a for a in posts if split_point(a.post_id, BEAUTY_SALT) < fraction]
    rest = [a for a in posts if split_point(a.post_id, BEAUTY_SALT) >= fraction]
    return rest, held


def folds(train: Sequence[Annotation], k: int) -> tuple[list[Annotation], list[Annotation]]:
    """(train part, held-out fold) of fold ``k`` of 3 over ``train``."""
    held = [a for i, a in enumerate(train) if i % 3 == k]
    rest = [a for i, a in enumerate(train) if i % 3 != k]
    return rest, held


def entity_folds(train: Sequence[Annotation], k: int) -> tuple[list[Annotation], list[Annotation]]:
    """(train part, held-out fold) of fold ``k`` of 3 split by brand: each brand text
    (lower-cased) belongs to one fold by a hash of it; a post goes to fold ``k`` when all
    its brands do and to the training part when none does (a post with brands of both is
    in neither). Posts without a brand are split by position, as in :func:`folds`."""
    rest: list[Annotation] = []
    held: list[Annotation] = []
    for i, post in enumerate(train):
        if not post.spans:
            (held if i % 3 == k else rest).append(post)
            continue
        owners = {_brand_fold(span.text) for span in post.spans}
        if owners == {k}:
            held.append(post)
        elif k not in owners:
            rest.append(post)
    return rest, held


def _brand_fold(text: str) -> int:
    return int(split_point(text.lower(), ENTITY_SALT) * 3)
