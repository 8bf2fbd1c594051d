"""Helpers of the ``train-ner`` flow (flows/train_ner.py) that are pure logic."""

from __future__ import annotations

from flows.train_ner import _rehearsal_note
from ner.rehearsal import RehearsalSet
from ner.settings import TrainSettings
from ner.types import Annotation, Rejected


def test_the_rehearsal_note_accounts_for_every_post_of_the_set() -> None:
    posts = tuple(Annotation(f"g{i}", "a post", ()) for i in range(10))
    found = RehearsalSet(posts, (Rejected("line 4", "no text"),), left_out=2, digest="d")
    recipe = TrainSettings(rehearsal_uri="sets/general.json", negative_fraction=0.6)
    assert _rehearsal_note(None, recipe, 0) == ""
    assert _rehearsal_note(found, recipe, 7) == (
        "10 drawn of general.json; 2 left out as labelled here, 1 not read, 3 brand-less "
        "left out by negative sampling (train.negative_fraction 0.6)"
    )
