"""The last ``quality`` run's models on the held-out post sets written by trials.

``python -m bench.experiments.heldout [EXPORT ...]``

Scores, on each Label Studio JSON export (default: every ``bench/data/heldout-*.json``), the
cold starts (``gazetteer``, ``base``, ``base+gazetteer``) and every model the last ``python -m
bench quality`` left: the WNUT-trained fast default (seed 1 in ``bench/out``, seeds 2-3 and
the accurate recipe's under ``bench/out/quality/runs``) and the demo champions. Exact BRAND
spans; prints one JSON line per model and set. No recipe was chosen on these sets.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.language import Language

    from ner.types import Annotation

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "bench" / "out" / "quality" / "runs"
COLD_STARTS = ("gazetteer", "base", "base+gazetteer")


def labelled(path: Path) -> list[Annotation]:
    from ner.labelstudio.export import load_export, read_labelled

    return read_labelled(load_export(path.read_bytes(), str(path)), ("BRAND",)).records


def cold_start(spec: str) -> Language:
    from bench.support import BASE_LABEL_MAP
    from ner.base_model import default_base_model
    from ner.models import load_model

    base = default_base_model()
    return load_model(spec, labels=("BRAND",), base_model=base, label_map=BASE_LABEL_MAP).nlp


def trained() -> dict[str, tuple[str, str]]:
    """Run name -> (model URI, tracking URI) of the last quality run's models."""
    found = {"wnut-seed1": ("models:/brand-ner@champion", ROOT / "bench" / "out")}
    found |= {d.name: ("models:/brand-ner/1", d) for d in sorted(RUNS.glob("*-seed*"))}
    return {name: (uri, f"sqlite:///{where / 'mlflow.db'}") for name, (uri, where) in found.items()}


def main(argv: Sequence[str]) -> int:
    from bench.score import load, score

    paths = [Path(a) for a in argv] or sorted((ROOT / "bench" / "data").glob("heldout-*.json"))
    sets = {path.stem: labelled(path) for path in paths}
    models: dict[str, Callable[[], Language]] = {
        spec: partial(cold_start, spec) for spec in COLD_STARTS
    }
    models |= {name: partial(load, uri, db) for name, (uri, db) in trained().items()}
    for name, make in models.items():
        nlp = make()
        for set_name, gold in sets.items():
            got = score(nlp, gold)
            row = {"model": name, "set": set_name, "n_posts": got["n_posts"]}
            row |= {k: round(got[k], 4) for k in ("precision", "recall", "f1", "overlap_f1")}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
