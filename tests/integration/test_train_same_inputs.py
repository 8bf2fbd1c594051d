"""train-ner on inputs a registered version was already trained on trains nothing: the same
training posts, recipe, seed and code make the same model (bench/README.md, "Reproducible
training"), so a scheduled run with no new label does not register a copy, nor does a run
after gold posts were forgotten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from flows.train_ner import TrainStatus, train_ner
from ner import forget
from ner.datasets import load_gold_set
from ner.registry import FINGERPRINT_TAG
from ner.storage import LocalStorage
from tests.support.gate_data import write_two_windows
from tests.support.servers import PrefectService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def store_settings(tmp_path: Path) -> dict[str, Any]:
    """A store and MLflow under ``tmp_path``, a threshold no challenger meets, 1 epoch."""
    return {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "mlflow_artifact_location": (tmp_path / "art").as_uri(),
        "threshold": 0.99,
        "gate_bootstrap_resamples": 200,
        "train": {"max_epochs": 1},
    }


def test_a_second_run_on_the_same_inputs_trains_nothing_and_names_the_version(
    prefect: PrefectService, tmp_path: Path, clean_env: None
) -> None:
    settings = store_settings(tmp_path)
    tracking = settings["mlflow_tracking_uri"]
    # Given no export in storage yet, a run says where it looked
    empty = train_ner(source="storage", overrides=settings)
    assert empty.status == TrainStatus.NO_LABELS and empty.decision is not None
    exports = (tmp_path / "storage" / "dev" / "exports").as_uri()
    assert empty.decision.startswith(f"no usable annotation in {exports}/: put Label Studio JSON")
    # and, stopping before any model, leaves no local MLflow store behind
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    # Given labelled posts and a threshold no challenger meets
    write_two_windows(LocalStorage(tmp_path / "storage" / "dev"))
    # When train-ner runs, then runs again with nothing changed
    first = train_ner(source="storage", overrides=settings)
    again = train_ner(source="storage", overrides=settings)

    # Then the first trained and registered version 1, its run carrying the fingerprint
    assert (first.status, first.challenger_version) == (TrainStatus.NOT_PROMOTED, "1"), first
    assert first.run_id is not None and first.challenger_f1 is not None
    fingerprint = client.get_run(first.run_id).data.tags[FINGERPRINT_TAG]
    assert len(fingerprint) == 64
    # And the second trained nothing and said which version it would have copied
    assert again.status == TrainStatus.ALREADY_TRAINED, again
    assert (again.challenger_version, again.run_id) == ("1", first.run_id)
    assert again.challenger_f1 == pytest.approx(first.challenger_f1)
    assert again.decision is not None and f"fingerprint {fingerprint[:12]}" in again.decision
    # (refused by the gate: a trial was sent to a promote that refused it again)
    assert "the gate refused version 1 by threshold" in again.decision, again.decision
    assert again.decision.endswith(
        "`brandloop promote 1 --reason ... --force` overrides it, audited"
    )
    versions = client.search_model_versions("name = 'brand-ner-dev'")
    assert [str(v.version) for v in versions] == ["1"]

    # And with version 1 the champion, the same inputs say so instead of advising to promote
    # it (a trial was told `brandloop promote 3` while version 3 was @champion)
    client.set_registered_model_alias("brand-ner-dev", "champion", "1")
    held = train_ner(source="storage", overrides=settings)
    assert (held.status, held.challenger_version) == (TrainStatus.ALREADY_TRAINED, "1"), held
    assert held.decision is not None and held.decision.endswith("version 1 is @champion already")

    # When a gold post is forgotten (the gold set changes, the training pool does not)
    storage = LocalStorage(tmp_path / "storage" / "dev")
    gold = load_gold_set(storage)
    assert gold is not None
    forget.record(storage, [gold[0].post_ids[0]], by="test", reason="deleted", stamp="f1")
    after = train_ner(source="storage", overrides=settings)
    # Then the champion is scored on the smaller gold set and nothing trains (a trial saw a
    # forget retrain and register the same model): its F1 there is the earlier version's
    assert (after.status, after.challenger_version) == (TrainStatus.ALREADY_TRAINED, "1"), after
    assert after.gold_hash != held.gold_hash and after.n_gold == held.n_gold - 1  # type: ignore[operator]
    assert after.n_train == held.n_train
    assert after.challenger_f1 == pytest.approx(after.champion_f1)
    assert [str(v.version) for v in client.search_model_versions("name = 'brand-ner-dev'")] == ["1"]
    client.delete_registered_model_alias("brand-ner-dev", "champion")

    # When the recipe changes, the next run trains again
    changed = train_ner(source="storage", overrides={**settings, "train": {"max_epochs": 2}})
    assert (changed.status, changed.challenger_version) == (TrainStatus.NOT_PROMOTED, "2")

    # And a threshold the cold start meets trains nothing, and says how to train anyway
    met = train_ner(source="storage", overrides={**settings, "threshold": 0.0})
    assert met.status == TrainStatus.THRESHOLD_MET and met.decision is not None
    assert met.champion_f1 is not None and met.champion_f1 < 0.99
    assert ">= threshold 0.0000 on the gold set: nothing trained (a threshold above " in (
        met.decision
    )
    assert met.decision.endswith(", trains a challenger)")


#: One train-ner run in a process of its own (as one `brandloop train`): its status and
#: version on the last line.
ONE_RUN = """
import json, sys
from flows.train_ner import train_ner
summary = train_ner(source="storage", overrides=json.loads(sys.argv[1]))
print("RESULT", json.dumps([str(summary.status), summary.challenger_version]))
"""


def test_two_runs_at_once_train_once_the_second_waits_for_the_first(
    prefect: PrefectService, tmp_path: Path, clean_env: None
) -> None:
    # Given labelled posts in storage and a threshold no challenger meets
    settings = store_settings(tmp_path)
    tracking = settings["mlflow_tracking_uri"]
    write_two_windows(LocalStorage(tmp_path / "storage" / "dev"))
    # When two runs start in two processes, the second while the first holds the training
    # lease (trial AR: two `brandloop train` on one store registered the same model twice)
    settings["train"] = {"max_epochs": 30}  # long enough for the second to find it held
    # (its "waiting" line is INFO: `make test` exports PREFECT_LOGGING_LEVEL=WARNING)
    env = {**os.environ, **prefect.env(), "PREFECT_LOGGING_LEVEL": "INFO"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", ONE_RUN, json.dumps(settings)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROJECT_ROOT,
        )

    runs = [start()]
    lease = tmp_path / "storage" / "dev" / "leases" / "train-ner"
    deadline = time.monotonic() + 300
    while not list(lease.glob("*.json")) and runs[0].poll() is None:
        assert time.monotonic() < deadline, "the first run never took the training lease"
        time.sleep(0.2)
    runs.append(start())
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    # Then the first trained version 1, and the second waited for it and then found it
    # (the same inputs: already trained; or, promoted, the champion meets the threshold)
    first, second = (
        next(tuple(json.loads(x.removeprefix("RESULT "))) for x in out.splitlines()
             if x.startswith("RESULT "))
        for out in outputs
    )  # fmt: skip
    assert first in (("not_promoted", "1"), ("promoted", "1")), outputs[0][-3000:]
    assert second[0] in ("already_trained", "threshold_met"), outputs[1][-3000:]
    assert "another train-ner run is under way in environment dev" in outputs[1]
    # And one version in all
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert [str(v.version) for v in client.search_model_versions("name = 'brand-ner-dev'")] == ["1"]
