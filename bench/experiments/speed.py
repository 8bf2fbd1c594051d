"""Prediction speed per core of the base pipelines' ``ner``: ``python -m bench.experiments.speed``.

A fine-tuned model has the architecture of the ``ner`` it starts from, so its speed is the
base's (the label filter and the gazetteer after it add little; both are included here). The
machine is shared, so the figure is posts per **CPU second** of this process (one thread),
not per wall second: other jobs on the same cores slow the wall clock, not the CPU time.
Posts: WNUT-17 dev and the beauty gold texts, repeated to ``N`` (default 4,000).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def measure(model: str, texts: Sequence[str]) -> dict[str, float]:
    from ner.models import add_gazetteer, add_label_filter, load_spacy

    nlp = load_spacy(
        model, exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]
    )
    add_label_filter(nlp, {"ORG": "BRAND", "PRODUCT": "BRAND"}, ["BRAND"])
    add_gazetteer(nlp, after_model=True)
    list(nlp.pipe(texts[:200], batch_size=256))  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    n_ents = sum(len(doc.ents) for doc in nlp.pipe(texts, batch_size=256))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "posts": len(texts),
        "posts_per_cpu_s": round(len(texts) / cpu, 1),
        "posts_per_wall_s": round(len(texts) / wall, 1),
        "words_per_post": round(sum(len(t.split()) for t in texts) / len(texts), 1),
        "ents": n_ents,
        "load": os.getloadavg()[0],
    }


def main(argv: Sequence[str]) -> int:
    from bench.experiments import data
    from bench.experiments.levers import MD, SM

    n = int(argv[0]) if argv else 4000
    pool = [a.text for a in data.wnut("dev")] + [a.text for a in data.beauty()]
    texts = (pool * (n // len(pool) + 1))[:n]
    for name, model in (("sm", SM), ("md", MD)):
        print(json.dumps({"model": name, **measure(model, texts)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
