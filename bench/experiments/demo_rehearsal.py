"""The demo champion with a rehearsal set, through the ``train-ner`` flow:
``python -m bench.experiments.demo_rehearsal [--in-domain | --accurate | --lowercase |
--fast-lowercase] SEED [SEED ...]``.

As ``bench.quality`` trains its demo champion (70 % of the beauty gold as a finished export,
the 30 % hold-out adopted as the gold set, a fresh store and registry per seed, the model
reloaded from the registry and scored with :mod:`bench.score`), but with the fast default
recipe plus the shipped rehearsal set (``ner/resources/demo/other_gold_export.json``, WNUT-17
train with its brands), each beauty post three times and the brand list off: the variant of
bench/README.md, "Demo champion: a rehearsal set". With ``--in-domain``: the demo's own
recipe (``apps.cli.DEMO_RECIPE``) plus 500 posts of the rehearsal set, each beauty post three
times; with ``--accurate``: the demo's recipe under ``train.recipe=accurate``
(``apps.cli.demo_accurate_recipe``); with ``--lowercase``: the demo's own recipe with
:data:`LOWERCASE` of the training posts lower-cased each epoch and no rehearsal set
(session 27); with ``--fast-lowercase``: the fast variant with :data:`LOWERCASE` of the
training posts lower-cased each epoch and the checkpoint that scored best on the held-back
slice (session 50). Scored on the hold-out and on WNUT-17 dev. One JSON line per seed goes to
stdout and to ``bench/experiments/results.jsonl`` (``"variant": "flow-demo-rehearsal"``,
``"flow-demo-in-domain-rehearsal500"``, ``"flow-demo-accurate"``,
``"flow-demo-lowercase"`` or ``"flow-demo-rehearsal-lowercase-best"``). Not part of ``make bench``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import Context
from bench.experiments.levers import record

OUT = Path(__file__).resolve().parents[1] / "out" / "demo_rehearsal"
#: ``--lowercase``: the share of training posts lower-cased each epoch (``augment_lowercase``)
LOWERCASE = 0.8


def recipe(kind: str = "fast") -> Any:
    """The quality benchmark's demo recipe with the rehearsal set: instead of the in-domain
    knobs (``fast``: the fast recipe), added to them (``in-domain``: 500 posts of the set),
    or the demo's recipe when the accurate recipe is chosen (``accurate``:
    :func:`apps.cli.demo_accurate_recipe`)."""
    from apps.cli import DEMO_RECIPE, demo_accurate_recipe
    from bench.quality import Recipe
    from ner.replay import demo_rehearsal_path

    rehearsal = demo_rehearsal_path()
    train: dict[str, Any] = {"rehearsal_uri": str(rehearsal), "labelled_copies": 3}
    overrides: dict[str, Any] = {"gold_recent_fraction": 0.0, "train": train}
    if kind == "in-domain":
        overrides = {**DEMO_RECIPE, "train": {**train, "rehearsal_posts": 500}}
    elif kind == "accurate":
        overrides = demo_accurate_recipe()
    elif kind == "lowercase":
        overrides = {**DEMO_RECIPE, "augment_lowercase": LOWERCASE}
    else:
        train["gazetteer"] = False
    if kind == "fast-lowercase":  # session 50: the fast variant with two in-domain knobs
        train.update(lowercase=LOWERCASE, checkpoint="best")
    names = {
        "in-domain": "demo-in-domain-rehearsal500",
        "accurate": "demo-accurate",
        "lowercase": "demo-lowercase",
        "fast-lowercase": "demo-rehearsal-lowercase-best",
    }
    return Recipe(
        names.get(kind, "demo-rehearsal"),
        "demo champion with a rehearsal set",
        "beauty_train",
        "beauty_held",
        ("beauty_held", "wnut_dev"),
        overrides=overrides,
    )


def flow_bench(name: str, out: Path) -> tuple[Context, Any]:
    """The context and data sets of a flow experiment writing under ``out``: Prefect's home
    there, its temporary API up, the full sets loaded (:func:`bench.quality.load_sets`)."""
    from bench.quality import load_sets
    from bench.support import prefect_environment, warm_up_prefect

    (out / "prefect-home").mkdir(parents=True, exist_ok=True)
    prefect_environment(out / "prefect-home")
    sets = load_sets(quick=False)
    warm_up_prefect()
    return Context(name, out), sets


def main(argv: Sequence[str]) -> int:
    from bench.quality import train_run

    ctx, sets = flow_bench("demo_rehearsal", OUT)
    kinds = [a.removeprefix("--") for a in argv if a.startswith("--")]
    chosen = recipe(kinds[0] if kinds else "fast")
    for seed in (int(a) for a in argv if not a.startswith("--")):
        run = train_run(ctx, sets, chosen, seed)
        row = {
            "variant": f"flow-{chosen.name}",
            "seed": seed,
            "set": "beauty",
            "status": run.status,
            "flow_f1": run.flow_f1,
            "train_seconds": round(run.train_seconds, 1),
            "n_train": run.n_train,
            "scores": run.scores,
        }
        record(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
