"""Writing benchmark results: one JSON per benchmark, a Markdown summary, the README log.

* ``<results>/<name>.json`` - the whole record of a benchmark's latest run (metrics, raw
  figures, machine, timing), overwritten by each run;
* ``<results>/summary.md`` - one table over every ``<name>.json`` present, so running a
  single benchmark refreshes its rows and keeps the others;
* ``bench/README.md`` - the table of each run is appended under "Results log" with the date
  and the machine, so the history stays readable in one place.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import Metric

LOG_HEADING = "## Results log"
COLUMNS = ("Benchmark", "Metric", "Value", "Target", "Met", "Compared with / note")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU count and model, RAM, Python, OS and the load average (others' work skews us)."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": _ram_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "loadavg": load,
    }


def cpu_sample() -> dict[str, float] | None:
    """CPU seconds so far: ``busy_s`` of the whole machine (every CPU's user, nice, system,
    irq and softirq time; Linux ``/proc/stat``, proc(5)), ``steal_s`` (time the hypervisor
    gave other guests) and ``own_s`` (this process and its children that were waited
    for, ``getrusage``). None where ``/proc/stat`` cannot be read."""
    import resource

    try:
        fields = Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()
        ticks = [int(x) for x in fields[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    busy = (user + nice + system + irq + softirq) / hz
    return {"busy_s": busy, "steal_s": steal / hz, "own_s": own}


#: Others' share of the machine's CPU during a benchmark above which its timed rows are
#: said not to be figures of record.
SHARED_MACHINE_SHARE = 0.10


def cpu_during(
    before: Mapping[str, float] | None,
    after: Mapping[str, float] | None,
    wall_s: float,
    cpus: int | None,
) -> dict[str, float] | None:
    """What other work took of the machine while a benchmark ran (``before``/``after`` from
    :func:`cpu_sample`): ``others_cpu_s`` (the machine's busy CPU seconds less the
    benchmark's own), ``steal_s``, and ``others_share``, the two over the wall time times
    ``cpus``. Approximate: a child process the benchmark did not wait for counts as
    other work."""
    if before is None or after is None or not cpus or wall_s <= 0:
        return None
    others = max((after["busy_s"] - before["busy_s"]) - (after["own_s"] - before["own_s"]), 0.0)
    steal = max(after["steal_s"] - before["steal_s"], 0.0)
    return {
        "others_cpu_s": round(others, 1),
        "steal_s": round(steal, 1),
        "others_share": round((others + steal) / (wall_s * cpus), 3),
    }


def shared_note(record: Mapping[str, Any]) -> str | None:
    """A caveat for a benchmark during which other work took at least
    :data:`SHARED_MACHINE_SHARE` of the machine's CPU, else None."""
    cpu = record.get("cpu")
    if not cpu or cpu["others_share"] < SHARED_MACHINE_SHARE:
        return None
    return (
        f"{record['name']}: other work took {100 * cpu['others_share']:.0f} % of the "
        f"machine's CPU while it ran ({cpu['others_cpu_s']:.0f} CPU s, steal "
        f"{cpu['steal_s']:.0f} s): its timed rows are not figures of record"
    )


def machine_line(machine: Mapping[str, Any]) -> str:
    """One sentence describing ``machine`` for the README."""
    load = machine.get("loadavg")
    load_text = f"; load average at start {load[0]:.2f}" if load else ""
    return (
        f"{machine.get('cpu_count')} CPUs ({machine.get('cpu_model')}), "
        f"{machine.get('ram_gib')} GiB RAM, Python {machine.get('python')}, "
        f"{machine.get('platform')}{load_text}"
    )


def format_value(value: Any, unit: str = "") -> str:
    """Numbers with sensible precision, then the unit."""
    if value is None:
        text = "n/a"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        size = abs(value)
        text = f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}"
    else:
        text = str(value)
    if not unit or value is None:
        return text
    return f"{text}{unit}" if unit in ("x", "%") else f"{text} {unit}"


def _met(met: bool | None) -> str:
    return "" if met is None else "yes" if met else "**no**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def metrics_of(record: Mapping[str, Any]) -> list[Metric]:
    """The metrics of a run record (as written by :func:`make_record`)."""
    result = record.get("result") or {}
    return [Metric(**item) for item in result.get("metrics", [])]


def table(records: Iterable[Mapping[str, Any]]) -> str:
    """A Markdown table with one row per metric of every record (errors get a row too)."""
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for record in records:
        name = str(record["name"])
        if record.get("error"):
            lines = [line for line in str(record["error"]).splitlines() if line.strip()]
            error = _cell(lines[-1][:200] if lines else "error")
            rows.append(f"| {name} | failed | | | **no** | {error} |")
            continue
        for metric in metrics_of(record):
            note = "; ".join(x for x in (metric.baseline, metric.note) if x)
            cells = (
                name,
                metric.name,
                format_value(metric.value, metric.unit),
                metric.target or "",
                _met(metric.met),
                note,
            )
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def timing_line(records: Sequence[Mapping[str, Any]]) -> str:
    """``inference 312 s (budget 480 s); total 312 s``."""
    parts = [
        f"{r['name']} {r['seconds']:.0f} s (budget {r['budget_seconds']:.0f} s)" for r in records
    ]
    total = sum(float(r["seconds"]) for r in records)
    return "; ".join(parts) + f"; total {total:.0f} s"


def make_record(
    name: str,
    description: str,
    budget_seconds: float,
    started: datetime,
    seconds: float,
    machine: Mapping[str, Any],
    *,
    quick: bool,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    cpu: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The JSON record of one benchmark run; ``result["metrics"]`` become plain dicts."""
    clean: dict[str, Any] | None = None
    if result is not None:
        clean = dict(result)
        metrics = clean.get("metrics", [])
        clean["metrics"] = [m.to_dict() if isinstance(m, Metric) else dict(m) for m in metrics]
        for item in clean["metrics"]:
            Metric(**item)  # fails loudly on a malformed row
    return {
        "name": name,
        "description": description,
        "started_at": started.astimezone(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "budget_seconds": budget_seconds,
        "quick": quick,
        "machine": dict(machine),
        "cpu": None if cpu is None else dict(cpu),
        "result": clean,
        "error": error,
    }


def write_record(results_dir: Path, record: Mapping[str, Any]) -> Path:
    """Write ``<results_dir>/<name>.json``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{record['name']}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` record in ``results_dir``, by name."""
    records = []
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "name" in data and "result" in data:
            records.append(data)
    return records


def write_summary(results_dir: Path) -> Path:
    """(Re)write ``summary.md`` from every record in ``results_dir``."""
    records = load_records(results_dir)
    lines = ["# Benchmark results", ""]
    for record in records:
        quick = " (quick run: sizes too small to mean anything)" if record.get("quick") else ""
        lines.append(
            f"- **{record['name']}**: {record['started_at']}, {record['seconds']:.0f} s "
            f"(budget {record['budget_seconds']:.0f} s){quick}; "
            f"{machine_line(record['machine'])}"
        )
    lines += _shared_notes(records)
    lines += ["", table(records)]
    path = results_dir / "summary.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _shared_notes(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The :func:`shared_note` of each record that has one, as Markdown list items."""
    notes = [note for note in map(shared_note, records) if note]
    return ["", *(f"- **shared machine**: {note}" for note in notes)] if notes else []


def append_to_readme(
    readme: Path, records: Sequence[Mapping[str, Any]], machine: Mapping[str, Any], command: str
) -> None:
    """Append this run's table, date and machine to the README's results log."""
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# Benchmarks\n"
    if LOG_HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{LOG_HEADING}\n"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    quick = any(r.get("quick") for r in records)
    section = [
        "",
        f"### {when} - `{command}`" + (" (quick: not a measurement)" if quick else ""),
        "",
        f"Machine: {machine_line(machine)}.",
        f"Time: {timing_line(records)}.",
        *_shared_notes(records),
        "",
        table(records),
    ]
    readme.write_text(text.rstrip("\n") + "\n" + "\n".join(section), encoding="utf-8")


def python_command(argv: Sequence[str]) -> str:
    """How this run was invoked, for the README (``python -m bench inference``)."""
    return " ".join(["python -m bench", *argv]).strip() if argv else "python -m bench"
