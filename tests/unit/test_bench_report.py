"""The benchmark harness itself: registry, result records, Markdown table, README log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import bench
from bench import Context, Metric, at_least, at_most, report
from bench.__main__ import run as run_bench
from bench.learning import labels_to_reach, mean_curve, share_to_reach
from bench.loop import _stage_seconds

MACHINE = {
    "cpu_count": 2,
    "cpu_model": "Test CPU",
    "ram_gib": 23.4,
    "python": "3.11.7",
    "platform": "Linux",
    "loadavg": [1.5, 1.0, 0.5],
}


def record(name: str, metrics: list[Metric], error: str | None = None) -> dict[str, Any]:
    return report.make_record(
        name,
        f"{name} description",
        60.0,
        datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
        12.34,
        MACHINE,
        quick=False,
        result=None if error else {"metrics": metrics, "raw": {"x": 1}},
        error=error,
    )


def test_values_are_formatted_with_sensible_precision_and_units() -> None:
    assert report.format_value(512.3456, "posts/s") == "512 posts/s"
    assert report.format_value(12.345, "s") == "12.3 s"
    assert report.format_value(0.9123, "x") == "0.91x"
    assert report.format_value(55.0, "%") == "55.0%"
    assert report.format_value(None, "s") == "n/a"
    assert report.format_value(True) == "yes" and report.format_value(False) == "no"
    assert report.format_value(7, "labels") == "7 labels"


def test_thresholds_say_nothing_when_nothing_was_measured() -> None:
    assert at_least(0.95, 0.9) is True and at_least(0.5, 0.9) is False
    assert at_most(1.1, 1.2) is True and at_most(1.3, 1.2) is False
    assert at_least(None, 0.9) is None and at_most(None, 1.2) is None


def test_table_has_a_row_per_metric_escapes_pipes_and_reports_failures() -> None:
    # Given a run with two metrics (one with a target missed) and a failed run
    ok = record(
        "speed",
        [
            Metric("posts/s", 512.0, "posts/s", note="10k | posts"),
            Metric("ratio", 0.8, "x", "≥ 0.9", False, "raw nlp.pipe"),
        ],
    )
    failed = record("broken", [], error="Traceback ...\nRuntimeError: it broke | badly\n")

    # When the table is built
    lines = report.table([ok, failed]).splitlines()

    # Then there is a header, one row per metric and one for the failure
    assert lines[0] == "| Benchmark | Metric | Value | Target | Met | Compared with / note |"
    assert len(lines) == 2 + 2 + 1
    assert lines[2] == "| speed | posts/s | 512 posts/s |  |  | 10k \\| posts |"
    assert lines[3] == "| speed | ratio | 0.80x | ≥ 0.9 | **no** | raw nlp.pipe |"
    assert lines[4] == "| broken | failed | | | **no** | RuntimeError: it broke \\| badly |"


def test_records_refuse_malformed_metrics() -> None:
    with pytest.raises(TypeError):
        report.make_record(
            "x",
            "d",
            1.0,
            datetime.now(UTC),
            1.0,
            MACHINE,
            quick=False,
            result={"metrics": [{"name": "a", "value": 1, "colour": "red"}]},
        )


def test_records_round_trip_through_json_and_the_summary_keeps_other_benchmarks(
    tmp_path: Path,
) -> None:
    # Given two benchmarks' records written to a results folder
    first = record("alpha", [Metric("a", 1.5, "s")])
    second = record("beta", [Metric("b", 2, "labels", "≤ 3", True)])
    report.write_record(tmp_path, first)
    report.write_record(tmp_path, second)

    # When beta runs again alone and the summary is rewritten
    report.write_record(tmp_path, record("beta", [Metric("b", 4, "labels", "≤ 3", False)]))
    summary = report.write_summary(tmp_path).read_text(encoding="utf-8")

    # Then each JSON holds its latest record and the summary has both benchmarks
    loaded = {r["name"]: r for r in report.load_records(tmp_path)}
    assert set(loaded) == {"alpha", "beta"}
    assert loaded["alpha"] == json.loads(json.dumps(first))
    assert report.metrics_of(loaded["beta"]) == [Metric("b", 4, "labels", "≤ 3", False)]
    assert "| alpha | a | 1.50 s |" in summary
    assert "| beta | b | 4 labels | ≤ 3 | **no** |" in summary
    assert "2 CPUs (Test CPU)" in summary


def test_readme_log_is_appended_with_date_machine_and_table(tmp_path: Path) -> None:
    # Given a README with its own text
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nHow to run.\n", encoding="utf-8")
    records = [record("alpha", [Metric("a", 1.5, "s")])]

    # When two runs are appended
    report.append_to_readme(readme, records, MACHINE, "python -m bench")
    report.append_to_readme(readme, records, MACHINE, "python -m bench alpha")

    # Then the text stays, the log heading appears once, and each run has its section
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nHow to run.\n")
    assert text.count(report.LOG_HEADING) == 1
    sections = text.split("\n### ")[1:]
    assert len(sections) == 2
    assert sections[1].split("\n")[0].endswith("UTC - `python -m bench alpha`")
    for section in sections:
        assert "Machine: 2 CPUs (Test CPU), 23.4 GiB RAM" in section
        assert "load average at start 1.50" in section
        assert "| alpha | a | 1.50 s |" in section
        assert "Time: alpha 12 s (budget 60 s); total 12 s." in section


def test_every_benchmark_module_is_discovered_and_names_are_unique() -> None:
    registry = bench.discover()
    names = {"inference", "quality", "loop", "learning"}
    assert names <= set(registry)
    # the budgets of make bench fit 100 minutes on a 2-core machine (30 before quality ran
    # its two recipes with 3 seeds each, 40 before it trained the accurate recipe, 70 before
    # it trained the demo champion under the accurate recipe, issue 9)
    assert sum(registry[name].budget_seconds for name in names) <= 100 * 60

    def other(ctx: Context) -> dict[str, Any]:
        return {"metrics": []}

    with pytest.raises(ValueError, match="already registered"):
        bench.benchmark("inference", description="again", budget_seconds=1)(other)


def test_the_runner_writes_json_summary_and_readme_and_reports_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a benchmark that works and one that fails
    @bench.benchmark("unit-ok", description="works", budget_seconds=5)
    def works(ctx: Context) -> dict[str, Any]:
        assert ctx.quick and ctx.out_dir.is_dir()
        return {"metrics": [Metric("size", ctx.size(100, 3), "posts")], "extra": [1, 2]}

    @bench.benchmark("unit-broken", description="fails", budget_seconds=5)
    def fails(ctx: Context) -> dict[str, Any]:
        raise RuntimeError("no luck")

    results, readme = tmp_path / "results", tmp_path / "README.md"
    argv = ["unit-ok", "unit-broken", "--quick", "--out", str(tmp_path / "out")]
    argv += ["--results", str(results), "--readme", str(readme)]

    # When both run
    status = run_bench(argv)

    # Then the run fails overall but both have a record, a summary row and a README row
    assert status == 1
    ok = json.loads((results / "unit-ok.json").read_text(encoding="utf-8"))
    assert ok["result"]["metrics"][0]["value"] == 3 and ok["result"]["extra"] == [1, 2]
    assert ok["quick"] is True and ok["machine"]["cpu_count"]
    broken = json.loads((results / "unit-broken.json").read_text(encoding="utf-8"))
    assert broken["result"] is None and "RuntimeError: no luck" in broken["error"]
    summary = (results / "summary.md").read_text(encoding="utf-8")
    assert "| unit-ok | size | 3 posts |" in summary
    assert "| unit-broken | failed |" in summary
    text = readme.read_text(encoding="utf-8")
    assert "(quick: not a measurement)" in text and "| unit-ok | size | 3 posts |" in text
    assert "| unit-ok | size | 3 posts |" in capsys.readouterr().out
    # And an unknown name is refused before anything runs
    assert run_bench(["nope", "--results", str(tmp_path / "r2")]) == 2
    assert not (tmp_path / "r2").exists()


def test_labels_to_reach_interpolates_between_rounds() -> None:
    curve = [(0, 0.10), (100, 0.05), (200, 0.15), (300, 0.25)]
    assert labels_to_reach(curve, 0.20) == pytest.approx(250.0)
    assert labels_to_reach(curve, 0.10) == 0.0
    assert labels_to_reach(curve, 0.15) == pytest.approx(200.0)
    assert labels_to_reach(curve, 0.30) is None


def _curve(*f1s: float, budget: int = 100) -> list[dict[str, Any]]:
    return [
        {"labels": i * budget, "f1": f, "precision": f, "recall": f, "spans": 2 * i}
        for i, f in enumerate(f1s)
    ]


def test_mean_curve_averages_seeds_point_by_point_with_their_spread() -> None:
    # Given two seeds' curves over the same rounds
    mean = mean_curve([_curve(0.1, 0.2, 0.4), _curve(0.1, 0.0, 0.2)])
    # Then each point is the mean of the seeds, with the lowest and highest seed
    assert [p["labels"] for p in mean] == [0, 100, 200]
    assert [p["f1"] for p in mean] == pytest.approx([0.1, 0.1, 0.3])
    assert (mean[2]["f1_min"], mean[2]["f1_max"]) == (0.2, 0.4)
    assert mean[2]["spans"] == 4


def test_mean_curve_refuses_curves_with_different_label_counts() -> None:
    # A seed whose pool ran short has other x values: averaging would hide it
    with pytest.raises(ValueError, match="different label counts"):
        mean_curve([_curve(0.1, 0.2), _curve(0.1, 0.2, budget=50)])
    with pytest.raises(ValueError, match="no curves"):
        mean_curve([])


def test_share_to_reach_pairs_an_active_curve_with_random_final_f1() -> None:
    random = _curve(0.1, 0.1, 0.2, 0.3)  # final F1 0.3 at 300 labels
    assert share_to_reach(_curve(0.1, 0.2, 0.4, 0.4), random) == pytest.approx(150 / 300)
    assert share_to_reach(_curve(0.1, 0.1, 0.2, 0.25), random) is None


def test_loop_stages_name_the_two_gold_evaluations_apart() -> None:
    stages = [
        {"name": "pull_annotations", "seconds": 1.0},
        {"name": "evaluate_on_gold", "seconds": 2.0},
        {"name": "train_challenger", "seconds": 30.0},
        {"name": "evaluate_on_gold", "seconds": 3.0},
        {"name": "something_new", "seconds": 0.5},
    ]
    assert _stage_seconds(stages) == {
        "pull": 1.0,
        "evaluate champion": 2.0,
        "train": 30.0,
        "evaluate challenger": 3.0,
        "other tasks": 0.5,
    }


def test_other_work_during_a_benchmark_is_measured_and_flags_its_timed_rows(
    tmp_path: Path,
) -> None:
    # Given CPU samples around a 100 s benchmark on 2 CPUs: the machine was busy 150 CPU s,
    # 120 of them the benchmark's own, and the hypervisor stole 10 s
    before = {"busy_s": 1000.0, "steal_s": 5.0, "own_s": 2.0}
    after = {"busy_s": 1150.0, "steal_s": 15.0, "own_s": 122.0}
    cpu = report.cpu_during(before, after, 100.0, 2)
    # Then other work took (30 + 10) / 200 of the machine
    assert cpu == {"others_cpu_s": 30.0, "steal_s": 10.0, "others_share": 0.2}
    assert report.cpu_during(None, after, 100.0, 2) is None  # no /proc/stat: nothing said
    # And a run that shared the machine says so in summary.md and the README's log (a run
    # whose n_process ratio fell to 1.07x on a busy machine repeated it without a caveat)
    shared = report.make_record(
        "inference", "d", 60.0, datetime(2026, 12, 5, tzinfo=UTC), 100.0, MACHINE,
        quick=False, result={"metrics": [Metric("ratio", 1.07, "x")]}, cpu=cpu,
    )  # fmt: skip
    idle_cpu = report.cpu_during(before, {**after, "busy_s": 1125.0, "steal_s": 5.0}, 100.0, 2)
    idle = {**record("loop", [Metric("s", 1.0, "s")]), "cpu": idle_cpu}
    report.write_record(tmp_path, shared)
    report.write_record(tmp_path, idle)
    summary = report.write_summary(tmp_path).read_text(encoding="utf-8")
    note = (
        "- **shared machine**: inference: other work took 20 % of the machine's CPU while it "
        "ran (30 CPU s, steal 10 s): its timed rows are not figures of record"
    )
    assert note in summary.splitlines() and "loop: other work" not in summary
    readme = tmp_path / "README.md"
    report.append_to_readme(readme, [shared, idle], MACHINE, "python -m bench")
    assert note in readme.read_text(encoding="utf-8").splitlines()
    # And a real sample reads this machine's counters
    sample = report.cpu_sample()
    assert sample is not None and sample["busy_s"] > 0 and sample["own_s"] > 0
