"""Seed ensembles of the accurate recipe, scored from kept models:
``python -m bench.experiments.ensemble NAME DIR [DIR ...]``.

Each ``DIR`` is a model :mod:`bench.experiments.accurate_levers` kept (``BENCH_KEEP_MODELS``);
all were trained by the same recipe with different seeds. The ensemble averages the
members' per-word tag probabilities (first word piece, as :class:`TransformerTagger` reads
them) and decodes the average with the same BIO rules (:func:`ner.transformer.best_tags`).
Scored with :func:`bench.experiments.levers.scores` on WNUT-17 dev and all beauty gold posts,
model alone and with the shipped brand list after it. One JSON line goes to stdout and is
appended to ``bench/experiments/results.jsonl`` (``"variant": "ensemble-NAME"``). Not part of
``make bench``: it measures whether a seed ensemble is worth building into the recipe.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.experiments.levers import record, scores


def ensemble_predict(tagger: Any, members: Sequence[Any], docs: Sequence[Any]) -> None:
    """Set ``doc.ents`` of ``docs`` from the mean of ``members``' tag probabilities.

    ``tagger`` is the pipeline's :class:`~ner.transformer.TransformerTagger` (its tags,
    tokenizer and length limit are shared: every member is the same base and tag set); it
    decodes the mean as it decodes its own model's output.
    """
    from ner.transformer import encode, require_torch

    torch, _ = require_torch()
    todo = [doc for doc in docs if len(doc)]
    if not todo:
        return
    batch = encode(tagger.tokenizer, [[t.text for t in doc] for doc in todo], tagger.max_length)
    with torch.inference_mode():
        probs = np.mean([m(**batch).logits.softmax(-1).numpy() for m in members], axis=0)
    tagger.set_entities(todo, batch, np.log(np.clip(probs, 1e-12, 1.0)))


def ensemble_pipeline(folders: Sequence[Path]) -> Any:
    """The first folder's pipeline, its tagger predicting with every folder's classifier."""
    from ner.models import load_spacy
    from ner.transformer import MODEL_SUBDIR, TransformerTagger, load_classifier

    nlp = load_spacy(str(folders[0]))
    tagger = next(p for _, p in nlp.pipeline if isinstance(p, TransformerTagger))
    members = [tagger.model]
    for folder in folders[1:]:
        component = Path(folder) / tagger.name / MODEL_SUBDIR
        model, _ = load_classifier(component)
        members.append(model.eval())
    tagger.predict = lambda docs: ensemble_predict(tagger, members, docs)  # type: ignore[method-assign]
    return nlp


def main(argv: Sequence[str]) -> int:
    from bench.experiments import data
    from ner.models import add_gazetteer

    name, folders = argv[0], [Path(a) for a in argv[1:]]
    sets = {"wnut_dev": data.wnut("dev"), "beauty_all": data.beauty()}
    nlp = ensemble_pipeline(folders)
    row: dict[str, Any] = {
        "recipe": "accurate",
        "variant": f"ensemble-{name}",
        "set": "wnut",
        "members": [f.name for f in folders],
        "scores": scores(nlp, sets),
    }
    add_gazetteer(nlp, after_model=True)
    row["scores_gazetteer"] = scores(nlp, sets)
    row["load"] = os.getloadavg()[0]
    record(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
