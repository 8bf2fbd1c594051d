"""The same trained models scored with two brand lists after them (issue 9, session 49).

``python -m bench.experiments.brand_list OLD_REV [RUN_DIR ...]``

Each ``RUN_DIR`` is a ``quality`` run folder (``bench/out/quality/runs/wnut-seed2``: its
``mlflow.db`` holds ``brand-ner`` version 1) or ``bench/out`` (the first seed's champion).
The list the model was trained with is replaced, after the model, by the shipped list of git
revision ``OLD_REV`` and then by the list in the working tree, so the two columns differ by
the list alone (no retraining, no seed noise). The cold start (the list alone) is scored the
same way. Sets: WNUT-17 dev, the demo's beauty gold (all 453 posts) and the 42 held-out posts
of ``bench/data/heldout-2026-12-06.json``. Prints one JSON line per model, list and set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spacy.language import Language

    from ner.models import BrandList
    from ner.types import Annotation

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = ROOT / "bench" / "data" / "heldout-2026-12-06.json"
LIST_FILES = ("ner/resources/brands.txt", "ner/resources/brands_case_sensitive.txt")


def list_at(rev: str | None) -> BrandList:
    """The shipped brand list at git revision ``rev`` (``None``: the working tree)."""
    from ner.models import BrandList

    if rev is None:
        return BrandList.shipped()
    names, exact = (
        subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.splitlines()
        for path in LIST_FILES
    )
    return BrandList(tuple(n for n in names if n), tuple(n for n in exact if n))


def with_list(nlp: Language, brands: BrandList) -> Language:
    """``nlp`` with its brand ruler (if any) replaced by ``brands``, after the model."""
    from ner.models import RULER, add_gazetteer

    if RULER in nlp.pipe_names:
        nlp.remove_pipe(RULER)
    add_gazetteer(nlp, brands.names, brands.exact_case, after_model=True)
    return nlp


def sets() -> dict[str, Sequence[Annotation]]:
    from bench.experiments import data
    from bench.experiments.heldout import labelled

    heldout = labelled(HELDOUT)
    return {"wnut_dev": data.wnut("dev"), "beauty_gold": data.beauty(), "heldout42": heldout}


def model(run_dir: Path) -> Language:
    from bench.score import load

    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    spec = "models:/brand-ner@champion" if run_dir.name == "out" else "models:/brand-ner/1"
    return load(spec, uri)


def main(argv: Sequence[str]) -> int:
    import spacy

    from bench.score import score

    old_rev, run_dirs = argv[0], [Path(a) for a in argv[1:]]
    lists = {"old": list_at(old_rev), "new": list_at(None)}
    evaluation = sets()
    targets: list[tuple[str, Any]] = [("list alone", lambda: spacy.blank("en"))]
    targets += [(str(d), lambda d=d: model(d)) for d in run_dirs]
    for name, make in targets:
        for which, brands in lists.items():
            nlp = with_list(make(), brands)
            for set_name, gold in evaluation.items():
                got = score(nlp, gold)
                row = {"model": name, "list": which, "set": set_name}
                row |= {k: round(got[k], 4) for k in ("precision", "recall", "f1")}
                print(json.dumps(row | {"n_pred": got["n_pred"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
