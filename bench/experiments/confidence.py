"""The demo champion with a confidence threshold on its spans:
``python -m bench.experiments.confidence SEED [SEED ...]``.

Trains the demo champion as ``bench.quality`` does (the shipped ``apps.cli.DEMO_RECIPE``,
through the ``train-ner`` flow: :func:`bench.experiments.demo_rehearsal.recipe`
``("lowercase")``), then keeps only the spans whose beam probability
(:func:`ner.active.entity_probabilities`, beam width 8) reaches each threshold of
:data:`THRESHOLDS`, scored (exact span, BRAND) on the beauty hold-out and on WNUT-17 dev. One
JSON line per seed and set goes to stdout and to ``bench/experiments/results.jsonl``
(``"variant": "flow-demo-confidence"``). Not part of ``make bench``; bench/README.md, "Demo
champion: a confidence threshold".
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.experiments.levers import record
from ner.types import Annotation

OUT = Path(__file__).resolve().parents[1] / "out" / "confidence"
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)

Probabilities = Mapping[tuple[int, int, str], float]


def scores_at(
    gold: Sequence[Annotation], probs: Sequence[Probabilities], t: float
) -> dict[str, Any]:
    """Exact-span BRAND precision, recall and F1 of the spans of probability >= ``t``."""
    tp = fp = fn = 0
    for annotation, found in zip(gold, probs, strict=True):
        truth = {(s.start, s.end) for s in annotation.spans if s.label == "BRAND"}
        kept = {(start, end) for (start, end, _), p in found.items() if p >= t}
        tp, fp, fn = tp + len(truth & kept), fp + len(kept - truth), fn + len(truth - kept)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "t": t,
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(f1, 4),
        "n": tp + fp,
    }


def main(argv: Sequence[str]) -> int:
    from bench import score as scoring
    from bench.experiments.demo_rehearsal import flow_bench, recipe
    from bench.quality import train_run
    from ner.active import entity_probabilities

    ctx, sets = flow_bench("confidence", OUT)
    for seed in (int(a) for a in argv):
        run = train_run(ctx, sets, recipe("lowercase"), seed)
        nlp = scoring.load(run.model_uri, run.tracking_uri)
        for name in ("beauty_held", "wnut_dev"):
            gold = getattr(sets, name)
            probs = entity_probabilities(nlp, [a.text for a in gold])
            rows = [scores_at(gold, probs, t) for t in THRESHOLDS]
            greedy = {k: run.scores[name][k] for k in ("precision", "recall", "f1")}
            record({"variant": "flow-demo-confidence", "seed": seed, "set": name,
                    "greedy": greedy, "thresholds": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
