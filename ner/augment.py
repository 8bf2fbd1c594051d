"""Slot negatives for the demo champion (issue 9, session 40): a lever of
``bench.experiments.demo_rehearsal --slot-negatives``, not part of ``make bench``.

The demo's posts put brands in a few sentence patterns ("slept on X for so long"), and the
demo champion learns the pattern: any word of a tweet in X's place is a brand. This spaCy
augmenter adds, for a share of the training posts that hold a span, a copy in which every
span is replaced by one word that is not a brand, with no span at all: the place alone no
longer makes a brand. The words are those of WNUT-17 train
(``ner/resources/demo/other_gold_export.json``, CC-BY 4.0) outside its brand spans:
alphabetic, three letters or more, not a name of the shipped brand list, half of the draws
among capitalised words and half among the rest. The copy keeps its words' case; the posts
themselves are lower-cased as ``spacy.lower_case.v1`` does (``lower``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from functools import cache, partial
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.training.augment import create_lower_casing_augmenter

EXPORT = Path(__file__).resolve().parent / "resources" / "demo" / "other_gold_export.json"
BRANDS = Path(__file__).resolve().parent / "resources" / "brands.txt"

Augmenter = Callable[[Language, Example], Iterator[Example]]


@cache
def vocabulary() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(capitalised words, other words) of WNUT-17 train outside its brand spans, sorted."""
    listed = {
        line.strip().lower()
        for line in BRANDS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    words: set[str] = set()
    for task in json.loads(EXPORT.read_text(encoding="utf-8")):
        text = task["data"]["text"]
        spans = [
            (r["value"]["start"], r["value"]["end"])
            for a in task["annotations"]
            for r in a["result"]
        ]
        at = 0
        for word in text.split(" "):
            start, at = at, at + len(word) + 1
            inside = any(s < start + len(word) and start < e for s, e in spans)
            if not inside and word.isalpha() and len(word) >= 3 and word.lower() not in listed:
                words.add(word)
    upper = tuple(sorted(w for w in words if w[0].isupper()))
    lower = tuple(sorted(w for w in words if not w[0].isupper()))
    return upper, lower


@spacy.registry.augmenters("brandloop.slot_negatives.v1")
def slot_negatives_augmenter(lower: float, share: float) -> Augmenter:
    """Each training post as spaCy's lower-casing augmenter gives it (``lower``, 0-1), and,
    with probability ``share`` (0-1) for a post holding a span, a span-less copy (above)."""
    return partial(_augment, lowercase=create_lower_casing_augmenter(lower), share=share)


def _augment(
    nlp: Language, example: Example, *, lowercase: Augmenter, share: float
) -> Iterator[Example]:
    yield from lowercase(nlp, example)
    if example.reference.ents and random.random() < share:
        yield _negative(nlp, example)


def _negative(nlp: Language, example: Example) -> Example:
    upper, lower = vocabulary()
    ref = example.reference
    words: list[str] = []
    spaces: list[bool] = []
    i = 0
    while i < len(ref):
        token = ref[i]
        ent = next((e for e in ref.ents if e.start == i), None)
        if ent is None:
            words.append(token.text)
            spaces.append(bool(token.whitespace_))
            i += 1
            continue
        words.append(random.choice(upper if random.random() < 0.5 else lower))
        spaces.append(bool(ref[ent.end - 1].whitespace_))
        i = ent.end
    reference = Doc(nlp.vocab, words=words, spaces=spaces, ents=["O"] * len(words))
    predicted = Doc(nlp.vocab, words=words, spaces=spaces)
    return Example(predicted, reference)
