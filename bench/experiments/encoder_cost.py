"""The accurate recipe's training cost with another encoder, through the ``train-ner`` flow:
``python -m bench.experiments.encoder_cost [FOLDER [KNOB=VALUE ...]]``.

One flow run on the first 1,000 WNUT-17 train tweets (seed 1), as ``quality`` times the
accurate recipe's "training on 1,000 labels" row (:func:`bench.quality.train_run` with
``n_train``), with ``train.accurate_model`` set to ``FOLDER`` (default: all-mpnet-base-v2 as
``bench/experiments/fetch_mpnet.sh`` unpacks it) and the training knobs given
(``accurate_length_buckets=true``). Prints one JSON line: the flow's
``train_challenger`` seconds, the load average, and the model's WNUT-17 dev scores. Results
in ``bench/out/encoder-cost/``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from bench import Context
from bench.experiments.accurate_levers import MPNET
from bench.quality import (
    N_LABELS,
    accurate_recipe,
    baselines,
    load_sets,
    train_run,
    wnut_threshold,
)
from bench.support import PROJECT_ROOT, warm_up_prefect


def main(argv: Sequence[str]) -> int:
    folder = argv[0] if argv else MPNET
    knobs = dict(arg.split("=", 1) for arg in argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx = Context("encoder-cost", PROJECT_ROOT / "bench" / "out" / "encoder-cost")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    warm_up_prefect()
    sets = load_sets(False)
    base = accurate_recipe(wnut_threshold(baselines(sets)))
    train = {**base.overrides["train"], "accurate_model": str(folder), **knobs}
    recipe = replace(base, overrides={**base.overrides, "train": train})
    run = train_run(ctx, sets, recipe, 1, n_train=N_LABELS)
    print(
        json.dumps(
            {
                "encoder": str(folder),
                "knobs": knobs,
                "n_train": run.n_train,
                "train_seconds": round(run.train_seconds, 1),
                "load_average": os.getloadavg(),
                "wnut_dev": run.scores["wnut_dev"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
