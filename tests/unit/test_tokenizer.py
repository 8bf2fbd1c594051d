"""The post tokenizer (ner.tokenizer): exact gold boundaries, and unkept spans named."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc

from ner.errors import ModelError
from ner.tokenizer import META_KEY, adapt_tokenizer, report_unkept, unkept_spans
from ner.types import Annotation, Span


def tokens(nlp: spacy.language.Language, text: str) -> list[str]:
    return [token.text for token in nlp.make_doc(text)]


def span_of(text: str, part: str) -> Span:
    start = text.index(part)
    return Span(start, start + len(part), "BRAND", part)


def test_camel_case_joins_and_bare_domains_split_so_brand_spans_are_tokens() -> None:
    # Given posts where a brand is part of a joined word or of a domain
    nlp = adapt_tokenizer(spacy.blank("en"))
    text = "new drop from #FentyBeauty, order at sephora.com today"

    # Then the brand parts are tokens of their own
    assert tokens(nlp, text) == [
        "new", "drop", "from", "#", "Fenty", "Beauty", ",", "order", "at", "sephora", ".com",
        "today",
    ]  # fmt: skip
    # And spans on them are kept exactly, where the default tokenizer cuts a token
    spans = [span_of(text, "Fenty"), span_of(text, "sephora")]
    assert unkept_spans(nlp.make_doc(text), spans) == []
    assert unkept_spans(spacy.blank("en").make_doc(text), spans) == spans


def test_short_camel_case_names_links_and_handles_stay_one_token() -> None:
    nlp = adapt_tokenizer(spacy.blank("en"))

    assert tokens(nlp, "YouTube iPhone PayPal McDonald") == [
        "YouTube", "iPhone", "PayPal", "McDonald",
    ]  # fmt: skip
    assert tokens(nlp, "see https://t.co/JFsqX2kC3E and www.ulta.com/sale") == [
        "see", "https://t.co/JFsqX2kC3E", "and", "www.ulta.com/sale",
    ]  # fmt: skip
    assert tokens(nlp, "thanks @FentyBeauty!") == ["thanks", "@FentyBeauty", "!"]


def test_rules_survive_saving_and_loading_without_a_registered_function(tmp_path: Path) -> None:
    # Given an adapted pipeline saved to disk
    nlp = adapt_tokenizer(spacy.blank("en"))
    nlp.to_disk(tmp_path / "model")

    # When it is loaded as any saved pipeline
    loaded = spacy.load(tmp_path / "model")

    # Then it tokenizes the same way and says so in its meta
    text = "#GlowRecipe at glossier.com"
    assert (
        tokens(loaded, text)
        == tokens(nlp, text)
        == ["#", "Glow", "Recipe", "at", "glossier", ".com"]
    )
    assert loaded.meta[META_KEY] == "post-v1"


def test_adapting_twice_changes_nothing() -> None:
    nlp = adapt_tokenizer(spacy.blank("en"))
    before = nlp.to_bytes(exclude=["vocab"])

    assert adapt_tokenizer(nlp) is nlp
    assert nlp.to_bytes(exclude=["vocab"]) == before


def test_a_pipeline_without_a_rule_based_tokenizer_is_refused() -> None:
    nlp = spacy.blank("en")
    nlp.tokenizer = lambda text: Doc(nlp.vocab, words=text.split())

    with pytest.raises(ModelError, match="not a spaCy Tokenizer"):
        adapt_tokenizer(nlp)


def test_a_span_that_cannot_be_kept_is_reported_by_post_span_and_token() -> None:
    # Given a span inside a word that even the post tokenizer keeps whole
    nlp = adapt_tokenizer(spacy.blank("en"))
    text = "my maccosmetics haul"
    kept = Annotation(post_id="ok", text="love Nars", spans=(span_of("love Nars", "Nars"),))
    cut = Annotation(post_id="p7", text=text, spans=(span_of(text, "mac"),))

    # When the annotations are checked
    rejected = report_unkept([kept, cut], nlp)

    # Then only that span is reported, naming the post, the span and the token it cuts
    assert len(rejected) == 1
    assert rejected[0].record_id == "p7"
    assert "[3, 6) 'mac' BRAND" in rejected[0].reason
    assert "'maccosmetics'" in rejected[0].reason
