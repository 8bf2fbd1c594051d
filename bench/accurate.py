"""The accurate recipe alone, through the ``train-ner`` flow: ``python -m bench.accurate``.

``make bench`` measures it inside ``quality`` when ``make install-accurate`` ran; this entry
runs only its part (the baselines, then the flow runs of :func:`bench.quality.run_accurate`
in the order that gives the cost figures early: first seed, 1,000 labels, prediction speed,
then the other seeds, then the demo champion under the accurate recipe). After every run
the figures so far are written to ``bench/out/accurate/results.json`` (each run's scores,
seconds and the load average), so a run cut short keeps the seeds it finished.

    python -m bench.accurate                 # seeds 1 2 3
    python -m bench.accurate --seeds 1 2     # fewer seeds
    python -m bench.accurate --quick         # smoke run: 1 epoch on a few dozen posts
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import Context
from bench.quality import (
    N_LABELS,
    N_SPEED_POSTS,
    SEEDS,
    TrainedRun,
    accurate_demo_recipe,
    accurate_recipe,
    accurate_rows,
    baselines,
    load_sets,
    predict_speed,
    train_run,
    wnut_threshold,
)
from bench.support import PROJECT_ROOT

log = logging.getLogger(__name__)

OUT = PROJECT_ROOT / "bench" / "out" / "accurate"


def _record(run: TrainedRun) -> dict[str, Any]:
    """A run's figures as JSON, with the load average when it ended."""
    return {**vars(run), "load_average": os.getloadavg()}


def _dump(path: Path, state: dict[str, Any]) -> None:
    path.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")


def measure(ctx: Context, seeds: Sequence[int]) -> dict[str, Any]:
    """Baselines and the accurate recipe's flow runs; the state is saved after each run."""
    from bench.support import warm_up_prefect

    results = ctx.out_dir / "results.json"
    sets = load_sets(ctx.quick)
    state: dict[str, Any] = {"seeds": list(seeds), "baselines": baselines(sets), "runs": []}
    warm_up_prefect()
    recipe = accurate_recipe(wnut_threshold(state["baselines"]))
    runs = [train_run(ctx, sets, recipe, seeds[0])]
    state["runs"].append(_record(runs[0]))
    _dump(results, state)
    thousand = train_run(ctx, sets, recipe, seeds[0], n_train=ctx.size(N_LABELS, 60))
    state["thousand"] = _record(thousand)
    _dump(results, state)
    speed = predict_speed(runs[0], sets, ctx.size(N_SPEED_POSTS, 200), ctx.out_dir / "speed")
    state["speed"] = {**speed, "load_average": os.getloadavg()}
    _dump(results, state)
    for seed in seeds[1:]:
        runs.append(train_run(ctx, sets, recipe, seed))
        state["runs"].append(_record(runs[-1]))
        _dump(results, state)
    demo: list[TrainedRun] = []
    for seed in seeds:
        demo.append(train_run(ctx, sets, accurate_demo_recipe(), seed))
        state.setdefault("demo", []).append(_record(demo[-1]))
        _dump(results, state)
    rows = accurate_rows(runs, thousand, speed, state["baselines"], demo)
    state["metrics"] = [row.to_dict() for row in rows]
    _dump(results, state)
    return state


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.accurate", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--quick", action="store_true", help="smoke run; figures mean nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    state = measure(Context("accurate", OUT, quick=args.quick), args.seeds)
    for row in state["metrics"]:
        target = f"target {row['target']}, met {row['met']}"
        print(f"{row['name']}: {row['value']} ({target}) {row['note']}")


if __name__ == "__main__":
    main()
