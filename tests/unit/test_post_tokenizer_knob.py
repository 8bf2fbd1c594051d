"""The recipe's ``post_tokenizer`` knob: training posts are tokenized with the post rules,
so a label on ``Fenty`` of ``#FentyBeauty`` is trained as labelled instead of widened, and
the trained model keeps the rules (issue 9: gold spans keep their exact boundaries)."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from ner.settings import TrainSettings
from ner.tokenizer import blank_en, report_unkept
from ner.training import _finish, _write_corpora
from ner.types import Annotation, Span

TEXT = "obsessed with #FentyBeauty gloss and sephora.com deals"


def fenty(i: int) -> Annotation:
    spans = (Span(15, 20, "BRAND", "Fenty"), Span(37, 44, "BRAND", "sephora"))
    return Annotation(f"p{i}", TEXT, spans)


@pytest.mark.parametrize(("post", "trained"), [(True, ["Fenty", "sephora"]), (False, None)])
def test_training_posts_keep_the_labelled_boundaries_with_the_knob(
    tmp_path: Path, post: bool, trained: list[str] | None
) -> None:
    recipe = TrainSettings(post_tokenizer=post, negative_fraction=1.0, dev_fraction=0.2)
    _write_corpora([fenty(i) for i in range(5)], recipe, 1, tmp_path)
    docs = list(DocBin().from_disk(tmp_path / "train.spacy").get_docs(spacy.blank("en").vocab))
    ents = [e.text for e in docs[0].ents]
    if trained is None:  # spaCy's tokenizer: widened to the whole token (and named, elsewhere)
        assert ents == ["FentyBeauty", "sephora.com"]
        assert len(report_unkept([fenty(0)], blank_en())) == 2
    else:
        assert ents == trained
        assert report_unkept([fenty(0)], blank_en(post_rules=True)) == []


def test_the_trained_model_keeps_the_post_rules(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler", name="ner")
    recipe = TrainSettings(post_tokenizer=True, gazetteer=False, checkpoint="last")
    final = _finish(nlp, tmp_path / "none", recipe, ["BRAND"])
    final.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert [t.text for t in loaded.make_doc(TEXT)][2:6] == ["#", "Fenty", "Beauty", "gloss"]
