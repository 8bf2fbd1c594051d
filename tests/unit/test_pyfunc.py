"""The pyfunc wrapper's input handling (pure: a blank pipeline, no MLflow)."""

from __future__ import annotations

import pandas as pd
import spacy

from ner.pyfunc import BrandPyfunc, row_ids


def test_a_row_without_an_id_gets_its_row_number() -> None:
    assert row_ids(["a", None, float("nan"), 7]) == ["a", "1", "2", "7"]
    assert row_ids([None, None]) == ["0", "1"]


def test_predict_keeps_given_ids_and_numbers_the_rest() -> None:
    model = BrandPyfunc(spacy.blank("en"))
    # A column where one row has no id: pandas holds NaN there
    frame = pd.DataFrame([{"id": "p1", "text": "a post"}, {"text": "another post"}])
    out = model.predict(frame)
    assert out["id"].tolist() == ["p1", "1"]
    assert out["entities"].tolist() == [[], []]
    # No id column at all: row numbers
    assert model.predict([{"text": "x"}, {"text": "y"}])["id"].tolist() == ["0", "1"]
