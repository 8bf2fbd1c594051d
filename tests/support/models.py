"""Tiny models for tests: a gazetteer pipeline, loaded or registered in MLflow."""

from __future__ import annotations

from pathlib import Path

import spacy
from spacy.language import Language

from ner.models import LoadedModel, add_gazetteer, add_label_filter
from ner.registry import Registry


def gazetteer_nlp(brands: list[str]) -> Language:
    """A blank English pipeline that tags exactly ``brands`` as BRAND."""
    nlp = spacy.blank("en")
    add_gazetteer(nlp, brands, exact_case=[])
    add_label_filter(nlp, {}, ["BRAND"])
    return nlp


def gazetteer(brands: list[str], version: str) -> LoadedModel:
    """:func:`gazetteer_nlp` as a loaded model of ``version``."""
    return LoadedModel(gazetteer_nlp(brands), version)


def register_gazetteer(
    registry: Registry, tmp_path: Path, brands: list[str], f1: float, gold_hash: str
) -> str:
    """Log and register :func:`gazetteer_nlp` with an evaluation of ``f1`` on ``gold_hash``;
    returns the new version."""
    path = tmp_path / f"model-{len(brands)}"
    gazetteer_nlp(brands).to_disk(path)
    with registry.start_run("train") as run_id:
        _, version = registry.log_model(path, run_id)
    assert version is not None
    registry.record_evaluation(version, gold_hash, {"f1": f1})
    return version
