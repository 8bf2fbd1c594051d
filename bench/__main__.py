"""``python -m bench [NAME ...]``: run the registered benchmarks and write their results.

Without names every benchmark runs (that is ``make bench``). Options:

* ``--list`` - print the benchmarks and their time budgets, run nothing;
* ``--quick`` - tiny sizes, to check that everything runs (results go to ``bench/out/quick``
  and the README is left alone unless ``--readme`` is given);
* ``--results DIR`` / ``--readme FILE`` / ``--no-readme`` - where results go.

A benchmark that fails is reported (a "failed" row and its traceback in its JSON) and the
others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import Context, discover, report
from bench.support import prefect_environment

BENCH_DIR = Path(__file__).resolve().parent
log = logging.getLogger("bench")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--results", type=Path, help="results folder (default bench/results)")
    parser.add_argument("--readme", type=Path, help="README to append the table to")
    parser.add_argument("--no-readme", action="store_true", help="do not touch the README")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="scratch folder")
    parser.add_argument("--seed", type=int, default=17)
    return parser.parse_args(list(argv))


def run(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    registry = discover()
    if args.list:
        for bench in registry.values():
            print(f"{bench.name:<16} {bench.budget_seconds:>6.0f} s  {bench.description}")
        return 0
    unknown = [name for name in args.names if name not in registry]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(registry)}", file=sys.stderr)
        return 2
    selected = [registry[name] for name in (args.names or registry)]
    out_root = args.out / "quick" if args.quick else args.out
    results_dir = args.results or (out_root / "results" if args.quick else BENCH_DIR / "results")
    readme: Path | None = args.readme or (None if args.quick else BENCH_DIR / "README.md")
    if args.no_readme:
        readme = None

    prefect_environment(out_root / "prefect-home")
    first_machine = report.machine_info()
    records: list[dict[str, Any]] = []
    for bench in selected:
        machine = report.machine_info()  # its own load average at start
        cpu_before = report.cpu_sample()
        ctx = Context(bench.name, out_root / bench.name, quick=args.quick, seed=args.seed)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        log.info("running %s (budget %.0f s)", bench.name, bench.budget_seconds)
        started = datetime.now(UTC)
        clock = time.perf_counter()
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = bench.func(ctx)
        except Exception:  # one failing benchmark must not hide the others' results
            error = traceback.format_exc()
            log.error("benchmark %s failed:\n%s", bench.name, error)
        seconds = time.perf_counter() - clock
        cpu = report.cpu_during(cpu_before, report.cpu_sample(), seconds, machine["cpu_count"])
        if seconds > bench.budget_seconds:
            log.warning(
                "%s took %.0f s, over its %.0f s budget", bench.name, seconds, bench.budget_seconds
            )
        record = report.make_record(
            bench.name,
            bench.description,
            bench.budget_seconds,
            started,
            seconds,
            machine,
            quick=args.quick,
            result=result,
            error=error,
            cpu=cpu,
        )
        report.write_record(results_dir, record)
        records.append(record)

    report.write_summary(results_dir)
    if readme is not None:
        report.append_to_readme(readme, records, first_machine, report.python_command(argv))
    print(report.table(records))
    print(f"Time: {report.timing_line(records)}. Results in {results_dir}.")
    return 1 if any(r["error"] for r in records) else 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("distributed", "prefect", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
