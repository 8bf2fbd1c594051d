"""Case augmentation of training posts: capitals stop being the sign of a brand.

Labelled posts of one narrow stream (the demo's beauty posts) write nearly every brand with a
capital and few other words so; a model trained on them calls any capitalised word of other
posts a brand. :func:`case_augmenter` lower-cases a share of the training posts (as spaCy's
``spacy.lower_case.v1``) and, independently, capitalises words outside the spans in another
share, so that a word's case says nothing about whether it is a brand. Registered as the
spaCy augmenter ``brandloop.case.v1``; :class:`ner.settings.TrainSettings` chooses it when
``titlecase`` > 0 (bench/README.md, "Demo champion: capitalised words outside the spans").
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import partial

import spacy
from spacy.language import Language
from spacy.training import Example
from spacy.training.iob_utils import doc_to_biluo_tags

#: Each word outside the spans of a capitalised post is capitalised with this probability.
WORD_SHARE = 0.5

Augmenter = Callable[[Language, Example], Iterator[Example]]


@spacy.registry.augmenters("brandloop.case.v1")
def case_augmenter(lower: float, titlecase: float) -> Augmenter:
    """An augmenter for spaCy's corpus reader: each training post is lower-cased with
    probability ``lower`` (0-1), then has its words outside spans capitalised (each with
    :data:`WORD_SHARE`) with probability ``titlecase`` (0-1). Token boundaries and spans are
    kept; the draws come from Python's ``random``, which spaCy seeds per run."""
    return partial(_augment, lower=lower, titlecase=titlecase)


def _augment(
    nlp: Language, example: Example, *, lower: float, titlecase: float
) -> Iterator[Example]:
    words = [token.text for token in example.reference]
    if random.random() < lower:
        words = [word.lower() for word in words]
    if random.random() < titlecase:
        words = [
            _capitalised(word, token.ent_iob_)
            for word, token in zip(words, example.reference, strict=True)
        ]
    if words == [token.text for token in example.reference]:
        yield example
        return
    yield _with_words(nlp, example, words)


def _capitalised(word: str, iob: str) -> str:
    """``word`` with a capital first letter when it lies outside every span ("O"), is
    alphabetic and starts in lower case, with probability :data:`WORD_SHARE`."""
    if iob != "O" or not word.isalpha() or not word[0].islower():
        return word
    return word[0].upper() + word[1:] if random.random() < WORD_SHARE else word


def _with_words(nlp: Language, example: Example, words: list[str]) -> Example:
    """``example`` with its reference tokens spelled ``words`` (same lengths), spans and
    other annotation kept; a token without entity annotation stays without ("-")."""
    spaces = [token.whitespace_ for token in example.reference]
    text = "".join(word + space for word, space in zip(words, spaces, strict=True))
    annotation = example.to_dict()
    annotation["token_annotation"]["ORTH"] = words
    tags = doc_to_biluo_tags(example.reference, missing="O")
    annotation["doc_annotation"]["entities"] = [
        "-" if token.ent_iob_ == "" else tag
        for tag, token in zip(tags, example.reference, strict=True)
    ]
    return Example.from_dict(nlp.make_doc(text), annotation)
