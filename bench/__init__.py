"""brandloop benchmarks: a small registry of benchmark functions and their results.

A benchmark is a function decorated with :func:`benchmark` in any module of this package
(modules are found automatically; keep heavy imports inside the function so discovery stays
cheap). It receives a :class:`Context` and returns a JSON-serialisable dict with at least
``"metrics"``: a list of :class:`Metric`, one table row each. Anything else in the dict (raw
timings, sizes, settings) is kept in ``bench/results/<name>.json``::

    from bench import Context, Metric, benchmark, at_least

    @benchmark("speed", description="What it measures", budget_seconds=120)
    def run(ctx: Context) -> dict[str, Any]:
        ...
        return {"metrics": [Metric("posts/s", 512.0, unit="posts/s", target="≥ 500",
                                   met=at_least(512.0, 500))], "raw": {...}}

``python -m bench`` runs every registered benchmark, ``python -m bench NAME ...`` some of
them (see ``bench/__main__.py``); ``bench/report.py`` writes the results.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Modules of this package that hold infrastructure, not benchmarks.
INFRASTRUCTURE = frozenset({"report", "posts", "machine", "support", "score"})


@dataclass(frozen=True)
class Metric:
    """One measured figure: a row of the results table.

    ``target`` is the goal as text (``"≥ 0.9"``), ``met`` whether the value reaches it
    (``None`` when there is no target), ``baseline`` what the value is compared with.
    """

    name: str
    value: float | int | str | None
    unit: str = ""
    target: str | None = None
    met: bool | None = None
    baseline: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def at_least(value: float | None, threshold: float) -> bool | None:
    """``value >= threshold``, or None when nothing was measured."""
    return None if value is None else value >= threshold


def at_most(value: float | None, threshold: float) -> bool | None:
    """``value <= threshold``, or None when nothing was measured."""
    return None if value is None else value <= threshold


@dataclass(frozen=True)
class Context:
    """What a benchmark gets: a scratch folder and the run's options.

    ``out_dir`` (``bench/out/<name>``, git-ignored) is for posts, models and other large
    files. With ``quick`` (tests, smoke runs) a benchmark should use small sizes: the figures
    are then meaningless but every code path runs.
    """

    name: str
    out_dir: Path
    quick: bool = False
    seed: int = 17
    options: dict[str, Any] = field(default_factory=dict)

    def size(self, full: int, quick: int) -> int:
        """``full`` normally, ``quick`` in a quick run."""
        return quick if self.quick else full


BenchFunction = Callable[[Context], dict[str, Any]]


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark."""

    name: str
    func: BenchFunction
    description: str
    budget_seconds: float


_REGISTRY: dict[str, Benchmark] = {}


def benchmark(
    name: str, *, description: str, budget_seconds: float
) -> Callable[[BenchFunction], BenchFunction]:
    """Register ``func`` as the benchmark ``name`` (``budget_seconds``: its share of the
    ``make bench`` budget on a 2-core machine)."""

    def register(func: BenchFunction) -> BenchFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.func is not func:
            qualname = f"{existing.func.__module__}.{existing.func.__qualname__}"
            raise ValueError(f"benchmark {name!r} is already registered by {qualname}")
        _REGISTRY[name] = Benchmark(name, func, description, budget_seconds)
        return func

    return register


def discover() -> dict[str, Benchmark]:
    """Import every benchmark module of this package; returns the registry by name."""
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_") or module.name in INFRASTRUCTURE:
            continue
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(_REGISTRY.items()))
