"""Markdown table of ``bench/experiments/results.jsonl``: ``python -m bench.experiments.table``.

Per variant: exact brand F1 as ``mean ± half-range (n seeds)`` on WNUT-17 dev, on all beauty
gold posts (cross-domain for the WNUT-trained model) and on the beauty hold-out, with the
shipped gazetteer after the model where it changes the figure; the 3-fold CV mean over
WNUT-17 train; the beauty-trained model on its hold-out and on WNUT-17 dev (cross-domain,
with its precision); mean training seconds.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.experiments.levers import RESULTS


def spread(values: Sequence[float]) -> str:
    if not values:
        return ""
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2
    return f"{mean:.3f} ± {half:.3f} ({len(values)})"


def _pick(rows: list[dict[str, Any]], where: str, key: str, field: str = "f1") -> list[float]:
    return [r[key][where][field] for r in rows if where in r.get(key, {})]


def table(rows: Sequence[dict[str, Any]]) -> str:
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        group = "cv" if row["set"].startswith("cv") else row["set"]
        by[(row["variant"], group)].append(row)
    lines = [
        "| lever (variant) | WNUT dev F1 | dev P | beauty gold F1 (all 453, cross-domain) "
        "| + gazetteer: dev / beauty | CV F1 on WNUT-17 train (folds, seed 17) "
        "| beauty-trained: beauty hold-out F1 | beauty-trained: WNUT dev F1 / P "
        "| train s (WNUT / beauty) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = dict.fromkeys(r["variant"] for r in rows)
    for variant in sorted(names, key=lambda name: name != "base"):  # baseline first
        w, cv, b = by[(variant, "wnut")], by[(variant, "cv")], by[(variant, "beauty")]
        dev_p = _pick(w, "wnut_dev", "scores", "p")
        gaz = f"{spread(_pick(w, 'wnut_dev', 'scores_gazetteer'))} / " + spread(
            _pick(w, "beauty_all", "scores_gazetteer")
        )
        cross_p = _pick(b, "wnut_dev", "scores", "p")
        seconds = "{} / {}".format(
            f"{statistics.fmean(r['train_seconds'] for r in w):.0f}" if w else "",
            f"{statistics.fmean(r['train_seconds'] for r in b):.0f}" if b else "",
        )
        cells = [
            variant,
            spread(_pick(w, "wnut_dev", "scores")),
            f"{statistics.fmean(dev_p):.3f}" if dev_p else "",
            spread(_pick(w, "beauty_all", "scores")),
            gaz if any("scores_gazetteer" in r for r in w) else "",
            spread(_pick(cv, "cv", "scores")),
            spread(_pick(b, "beauty_held", "scores")),
            (spread(_pick(b, "wnut_dev", "scores")) + f" / {statistics.fmean(cross_p):.3f}")
            if cross_p
            else "",
            seconds,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    path = Path(argv[0]) if argv else RESULTS
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
