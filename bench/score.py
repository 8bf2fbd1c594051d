"""Score a brand model on the WNUT-17 dev split: ``python -m bench.score [MODEL]``.

``MODEL`` defaults to ``models:/brand-ner@champion`` in ``bench/out/mlflow.db`` (the model
``make bench`` leaves behind), loaded with ``mlflow.spacy.load_model``; any spec
:func:`ner.models.load_model` knows works too (``base``, ``gazetteer``, a saved pipeline).
Prints exact and overlap precision, recall and F1 of BRAND, and the confusion summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spacy.language import Language

    from ner.evaluation import EvalReport
    from ner.types import Annotation

BENCH_DB = Path(__file__).resolve().parent / "out" / "mlflow.db"
CHAMPION_URI = "models:/brand-ner@champion"


def summary(report: EvalReport) -> dict[str, Any]:
    """Exact and overlap P/R/F1, counts and the confusion summary of a report."""
    return {
        "precision": report.precision,
        "recall": report.recall,
        "f1": report.f1,
        "overlap_precision": report.overlap_precision,
        "overlap_recall": report.overlap_recall,
        "overlap_f1": report.overlap_f1,
        "n_posts": report.n_posts,
        "n_gold": report.n_gold,
        "n_pred": report.n_pred,
        "confusion": report.confusion.to_dict(),
    }


def score(nlp: Language, gold: Sequence[Annotation]) -> dict[str, Any]:
    """:func:`summary` of ``nlp`` on ``gold`` (BRAND only)."""
    from ner.evaluation import score_model

    return summary(score_model(nlp, gold, ("BRAND",)))


def load(spec: str, tracking_uri: str) -> Language:
    """``mlflow.spacy.load_model`` for MLflow URIs, :func:`ner.models.load_model` otherwise."""
    if spec.startswith(("models:/", "runs:/")):
        import mlflow
        import mlflow.spacy

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        nlp: Language = mlflow.spacy.load_model(spec)
        return nlp
    from ner.models import load_model

    return load_model(spec).nlp


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.score", description=__doc__)
    parser.add_argument("model", nargs="?", default=CHAMPION_URI)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{BENCH_DB}")
    parser.add_argument("--split", default="dev", choices=("dev", "train"))
    args = parser.parse_args(list(argv))
    from bench.support import wnut

    result = score(load(args.model, args.tracking_uri), wnut(args.split))
    print(json.dumps({"model": args.model, "split": args.split, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
