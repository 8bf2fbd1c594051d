"""A tokenizer for social posts, and the check that gold spans keep their exact boundaries.

spaCy's English tokenizer keeps ``FentyBeauty`` and ``sephora.com`` as one token each, so a
gold span on ``Fenty`` or ``sephora`` cannot be a token span: aligned to tokens it widens to
the whole token (spaCy's W030 situation), and a model never learns the exact span.
:func:`adapt_tokenizer` changes a pipeline's tokenizer in place so that:

* a CamelCase join of two words of at least four letters each splits
  (``FentyBeauty`` -> ``Fenty`` ``Beauty``, ``#GlowRecipe`` -> ``#`` ``Glow`` ``Recipe``);
  shorter parts stay joined, so ``YouTube``, ``iPhone``, ``PayPal``, ``McDonald`` keep their
  pretrained token;
* a bare web domain splits before its top-level domain (``sephora.com`` -> ``sephora``
  ``.com``); links with a scheme, ``www.`` or a path stay one token (``https://t.co/x``);
* ``#`` stays a prefix of its own (spaCy's default) and an ``@handle`` stays one token
  (``@FentyBeauty``: handles are never brands in our labelling convention).

The rules live in the tokenizer's own patterns, which ``nlp.to_disk`` saves and
``spacy.load`` restores: a saved pipeline needs no registered function to tokenize the same
way. :func:`unkept_spans` names the gold spans a tokenizer still cannot keep, so training
can report them instead of widening them in silence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from spacy.language import Language
from spacy.tokenizer import Tokenizer
from spacy.tokens import Doc
from spacy.util import compile_infix_regex

from ner.errors import ModelError
from ner.types import Annotation, Rejected, Span

#: ``meta`` key recording that (and which version of) the post rules are in a pipeline.
META_KEY = "brandloop_tokenizer"
VERSION = "post-v1"

#: Zero-width infixes: between a CamelCase join, and before a bare domain's TLD.
CAMEL_CASE = r"(?<=[a-z]{3})(?=[A-Z][a-z]{3})"
DOMAIN_TLD = r"(?<=[A-Za-z0-9])(?=\.(?:com|net|org|co|io|uk|de|fr|ca|au|shop|store|beauty)$)"

#: A link stays one token only with a scheme, ``www.`` or a path after its domain.
_HANDLE = re.compile(r"^@\w+$")
_LINK = re.compile(r"(?i)^(?:[a-z][a-z0-9+.-]*://\S+|www\.\S+|[\w-]+(?:\.[\w-]+)+/\S*)$")


def adapt_tokenizer(nlp: Language) -> Language:
    """Add the post rules (module docstring) to ``nlp``'s tokenizer, in place; returns ``nlp``.

    Idempotent: a pipeline that already has them (``nlp.meta[META_KEY]``) is left as is.
    Raises :class:`ner.errors.ModelError` when ``nlp``'s tokenizer is not spaCy's
    rule-based ``Tokenizer`` (a custom one has no rules to extend).
    """
    if nlp.meta.get(META_KEY) == VERSION:
        return nlp
    tokenizer = nlp.tokenizer
    if not isinstance(tokenizer, Tokenizer):
        raise ModelError(f"cannot adapt a {type(tokenizer).__name__}: not a spaCy Tokenizer")
    infixes = [CAMEL_CASE, DOMAIN_TLD, *(nlp.Defaults.infixes or ())]
    tokenizer.infix_finditer = compile_infix_regex(infixes).finditer
    tokenizer.url_match = _LINK.match
    tokenizer.token_match = _HANDLE.match
    nlp.meta[META_KEY] = VERSION
    return nlp


def blank_en(post_rules: bool = False) -> Language:
    """spaCy's English tokenizer alone (``spacy.blank("en")``), the one the shipped models
    tokenize with, or with the post rules (:func:`adapt_tokenizer`, the recipe's
    ``post_tokenizer``): what :func:`report_unkept` checks spans against."""
    import spacy

    nlp = spacy.blank("en")
    return adapt_tokenizer(nlp) if post_rules else nlp


def unkept_spans(doc: Doc, spans: Iterable[Span]) -> list[Span]:
    """The spans of ``spans`` whose start or end falls inside a token of ``doc``.

    Such a span can only be trained or predicted widened to whole tokens. ``doc`` is the
    tokenised text the spans' offsets (code points) refer to.
    """
    starts = {token.idx for token in doc}
    ends = {token.idx + len(token.text) for token in doc}
    return [span for span in spans if span.start not in starts or span.end not in ends]


def report_unkept(annotations: Iterable[Annotation], nlp: Language) -> list[Rejected]:
    """One :class:`Rejected` per gold span ``nlp``'s tokenizer cannot keep, naming the post,
    the span (offsets and text) and the token it falls inside."""
    rejected: list[Rejected] = []
    for annotation in annotations:
        doc = nlp.make_doc(annotation.text)
        for span in unkept_spans(doc, annotation.spans):
            inside = " ".join(
                repr(token.text)
                for token in doc
                if token.idx < span.end and token.idx + len(token.text) > span.start
            )
            rejected.append(
                Rejected(
                    annotation.post_id,
                    f"span [{span.start}, {span.end}) {span.text!r} {span.label} cuts "
                    f"token(s) {inside}",
                )
            )
    return rejected
