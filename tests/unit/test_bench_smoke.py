"""``python -m bench --quick``: every benchmark runs end to end at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_bench_runs_every_benchmark_and_writes_its_results(
    tmp_path: Path, shared_data: Path
) -> None:
    # Given scratch, results and README paths outside the project
    out, results, readme = tmp_path / "out", tmp_path / "results", tmp_path / "README.md"
    env = {
        **os.environ,
        "BRANDLOOP_SHARED_DATA": str(shared_data),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    }
    env.pop("PREFECT_API_URL", None)

    # When the quick bench runs
    command = [sys.executable, "-m", "bench", "--quick", "--out", str(out)]
    command += ["--results", str(results), "--readme", str(readme)]
    done = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )

    # Then it succeeds, and every benchmark has a JSON record with metrics and no error
    assert done.returncode == 0, done.stderr[-4000:]
    names = {"inference", "learning", "loop", "quality"}
    records = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in results.glob("*.json")}
    assert names <= set(records)
    for name in names:
        assert records[name]["error"] is None and records[name]["quick"] is True
        assert records[name]["result"]["metrics"], name
    # And the summary and README carry one table with a row for each benchmark
    for text in ((results / "summary.md").read_text(), readme.read_text()):
        for name in names:
            assert f"\n| {name} | " in text
    # And the quick run's model went to its own registry, not bench/out/mlflow.db
    assert (out / "quick" / "mlflow.db").is_file()
    inference = records["inference"]["result"]
    assert inference["identical"] == {"n_process_2": True, "dask": True, "rss_probe": True}
