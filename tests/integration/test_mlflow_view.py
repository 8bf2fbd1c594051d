"""The MLflow UI answers "which model, and why", checked in a real browser.

A train-ner run on a real MLflow server promotes its challenger (no champion yet). Then
headless Chromium (Debian's ``chromium``; ``make install-chromium``) renders the runs compare
view (the cold start's evaluation run beside the training run: the same ``gold.*`` metric
names) and the champion's model version page (its model card and its gate tags), saves a
screenshot of each and dumps the rendered page, which must show them.

Screenshots go to ``$BRANDLOOP_SCREENSHOT_DIR`` when set, else to the test's tmp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.train_ner import TrainStatus, train_ner
from ner.registry import CHAMPION, Registry
from ner.storage import LocalStorage
from tests.support.gate_data import write_two_windows
from tests.support.servers import MlflowService, PrefectService, mlflow_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--window-size=1600,1400",
    "--virtual-time-budget=20000",
]


def chromium() -> str:
    """The Chromium binary; a missing browser fails the test (``make install-chromium``)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: run `make install-chromium`"
    return found


def render(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after its scripts ran; with ``screenshot``, also a PNG of it."""
    profile.mkdir(parents=True, exist_ok=True)
    argv = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    if screenshot is not None:
        subprocess.run(
            [*argv, f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=180
        )
    done = subprocess.run(
        [*argv, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=180
    )
    return done.stdout


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[MlflowService]:
    service = mlflow_service(tmp_path / "mlflow")
    with service.start():
        yield service


def test_mlflow_ui_shows_the_compare_view_and_the_champion_with_its_card(
    prefect: PrefectService, own_mlflow: MlflowService, tmp_path: Path
) -> None:
    # Given a train-ner run that promoted its challenger on a real MLflow server
    storage = LocalStorage(tmp_path / "storage" / "dev")
    write_two_windows(storage)
    settings = {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": own_mlflow.url,
        "cold_start": "base",
        "threshold": 0.6,
        "canary_fraction": 1.0,
        "train": {"max_epochs": 25, "eval_frequency": 10},
        "seed": 7,
        "registered_model_name": "brand-ner",
        "experiment_name": "brand-ner",
    }
    summary = train_ner(source="storage", overrides=settings)
    assert summary.status == TrainStatus.PROMOTED, summary.decision
    registry = Registry(own_mlflow.url)
    assert registry.alias_version(CHAMPION) == summary.promoted_version == "1"
    experiment = registry.client.get_experiment_by_name("brand-ner")
    assert experiment is not None
    runs = registry.client.search_runs([experiment.experiment_id], "tags.`brandloop.kind` != ''")
    evaluation = next(r for r in runs if r.data.tags["brandloop.kind"] == "evaluation")
    assert {"gold.f1", "canary.f1"} <= set(evaluation.data.metrics)
    # the first run had no champion: the model it scored first is named the cold start
    roles = [r.data.tags.get("brandloop.role") for r in runs]
    assert "cold start" in roles and "champion" not in roles
    run_ids = [evaluation.info.run_id, summary.run_id]

    # When Chromium opens the compare view and the model version page
    shots = Path(os.environ.get("BRANDLOOP_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    query = urllib.parse.urlencode(
        {"runs": json.dumps(run_ids), "experiments": json.dumps([experiment.experiment_id])}
    )
    compare = render(
        f"{own_mlflow.url}/#/compare-runs?{query}", tmp_path / "chrome", shots / "compare.png"
    )
    version = render(
        f"{own_mlflow.url}/#/models/brand-ner/versions/1",
        tmp_path / "chrome",
        shots / "model-version.png",
    )
    print(f"\nscreenshots: {shots / 'compare.png'} {shots / 'model-version.png'}")

    # Then the compare view lists both runs, plotted on the metric names they share
    assert "Comparing 2 Runs" in compare and "gold.precision" in compare
    for run in runs:
        if run.info.run_id in run_ids:
            assert run.info.run_name in compare
    # And the version page shows the card, the gate's outcome and the champion alias
    assert "brand-ner version 1" in version and "Gate: promoted" in version
    assert "champion" in version and "Known limits" in version
    tags = registry.client.get_model_version("brand-ner", "1").tags
    assert tags["brandloop.gate.outcome"] == "promoted"
    assert tags["brandloop.promotion_reason"].startswith("promoted: threshold: challenger F1")
    for png in (shots / "compare.png", shots / "model-version.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
