"""The registry against a real MLflow SQLite tracking store (no mocks)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.spacy
import pandas as pd
import pytest
import spacy
from mlflow.exceptions import MlflowException

from ner.errors import PromotionError
from ner.models import add_gazetteer, add_label_filter
from ner.registry import CHAMPION, FINGERPRINT_TAG, PREVIOUS, Registry, decide, model_description

GOLD = "f" * 64


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        model_name="brand-ner",
        experiment_name="brand-ner",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )


def saved_model(tmp_path: Path, brands: list[str]) -> Path:
    nlp = spacy.blank("en")
    add_gazetteer(nlp, brands, exact_case=[])
    add_label_filter(nlp, {}, ["BRAND"])
    path = tmp_path / f"model-{'-'.join(b.replace(' ', '_') for b in brands)}"
    nlp.to_disk(path)
    return path


def register(registry: Registry, tmp_path: Path, brands: list[str]) -> str:
    with registry.start_run("train") as run_id:
        registry.log_dataset(run_id, "train-pool", "a" * 64, tmp_path.as_uri(), "training")
        _, version = registry.log_model(saved_model(tmp_path, brands), run_id)
    assert version is not None
    return version


def test_promoted_model_loads_through_the_contract(registry: Registry, tmp_path: Path) -> None:
    # Given a registered model evaluated on the gold set
    version = register(registry, tmp_path, ["Fenty Beauty", "Glossier"])
    registry.record_evaluation(version, GOLD, {"f1": 0.9})
    # (the registered model says what it is on its page in the UI: a trial found it blank)
    described = registry.client.get_registered_model(registry.model_name).description
    assert described == model_description("brand-ner-audit")
    assert "`@champion` is the version in service" in described
    assert "run of the `brand-ner-audit` experiment" in described  # not a placeholder
    # When it is promoted
    registry.promote(version, gold_hash=GOLD, decision=decide(0.9, None, 0.8), metrics={"f1": 0.9})
    # Then the spaCy flavor loads @champion and its BRAND entities are the brands
    nlp = mlflow.spacy.load_model("models:/brand-ner@champion")
    doc = nlp("Glossier drop today, fenty beauty restock")
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Glossier", "BRAND"),
        ("fenty beauty", "BRAND"),
    ]
    # And the pyfunc flavor serves the same model
    served = mlflow.pyfunc.load_model("models:/brand-ner@champion")
    out = served.predict([{"text": "obsessed with glossier"}])
    assert out["entities"][0] == [{"start": 14, "end": 22, "label": "BRAND", "text": "glossier"}]
    assert out["id"].tolist() == ["0"]  # no id given: the row number
    # with the posts' ids, which come back beside their entities
    posts = [{"id": "p-7", "text": "new glossier drop"}, {"id": "p-9", "text": "no brand"}]
    out = served.predict(pd.DataFrame(posts))
    assert out["id"].tolist() == ["p-7", "p-9"]
    assert [len(found) for found in out["entities"]] == [1, 0]


def test_no_promotion_without_evaluation(registry: Registry, tmp_path: Path) -> None:
    version = register(registry, tmp_path, ["Glossier"])
    with pytest.raises(PromotionError, match="never evaluated"):
        registry.promote(version, gold_hash=GOLD, decision=decide(0.9, None, 0.8), metrics={})
    with pytest.raises(PromotionError, match="not promoted"):
        registry.promote(version, gold_hash=GOLD, decision=decide(0.5, None, 0.8), metrics={})
    assert registry.alias_version(CHAMPION) is None


def test_evaluation_on_another_gold_set_does_not_count(registry: Registry, tmp_path: Path) -> None:
    version = register(registry, tmp_path, ["Glossier"])
    registry.record_evaluation(version, "0" * 64, {"f1": 0.95})
    with pytest.raises(PromotionError):
        registry.promote(version, gold_hash=GOLD, decision=decide(0.95, None, 0.8), metrics={})


def test_alias_moves_are_audited_and_rollback_restores(registry: Registry, tmp_path: Path) -> None:
    # Given two promotions
    v1 = register(registry, tmp_path, ["Glossier"])
    v2 = register(registry, tmp_path, ["Glossier", "Rare Beauty"])
    for version, f1 in ((v1, 0.82), (v2, 0.9)):
        registry.record_evaluation(version, GOLD, {"f1": f1})
        registry.promote(
            version,
            gold_hash=GOLD,
            decision=decide(f1, None, 0.8),
            metrics={"f1": f1},
            actor="tester",
        )
    assert registry.alias_version(CHAMPION) == v2
    assert registry.alias_version(PREVIOUS) == v1
    # When we roll back
    event = registry.rollback(actor="oncall", reason="bad predictions on new slang", gold_hash=GOLD)
    # Then @champion is v1 again, and every move is in the audit with who/why/gold hash
    assert registry.alias_version(CHAMPION) == v1
    assert (event.from_version, event.to_version) == (v2, v1)
    # (the rollback's too, with both versions' F1 on it: a trial found its run bare)
    back = next(
        e
        for e in registry.audit_log()
        if e.alias == CHAMPION and e.to_version == v1 and e.from_version == v2
    )
    assert back.gold_hash == GOLD
    assert back.metrics == pytest.approx({"restored_f1": 0.82, "rolled_back_f1": 0.9})
    audit = registry.audit_log()
    champion_moves = [(e.from_version, e.to_version, e.actor) for e in audit if e.alias == CHAMPION]
    assert champion_moves == [(None, v1, "tester"), (v1, v2, "tester"), (v2, v1, "oncall")]
    promotion = next(e for e in audit if e.alias == CHAMPION and e.to_version == v2)
    assert promotion.gold_hash == GOLD
    assert promotion.metrics["f1"] == pytest.approx(0.9)
    assert "beats" in promotion.reason
    assert "rollback" in audit[-2].reason or "rollback" in audit[-1].reason
    mv = registry.client.get_model_version("brand-ner", v2)
    assert mv.tags["brandloop.rolled_back"] == "bad predictions on new slang"


def test_rollbacks_walk_back_the_promotions_and_never_restore_a_rolled_back_version(
    registry: Registry, tmp_path: Path
) -> None:
    def promote(version: str) -> None:
        registry.record_evaluation(version, GOLD, {"f1": 0.9})
        registry.promote(
            version, gold_hash=GOLD, decision=decide(0.9, None, 0.8), metrics={}, actor="t"
        )

    # Given v1, v2, v3 promoted one after the other
    v1, v2, v3 = (register(registry, tmp_path, ["Glossier"]) for _ in range(3))
    for version in (v1, v2, v3):
        promote(version)
    # When rolled back twice, each rollback restores the champion before
    registry.rollback(actor="oncall", reason="r1")
    assert (registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS)) == (v2, v1)
    registry.rollback(actor="oncall", reason="r2")
    assert (registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS)) == (v1, None)
    # Given then (a trial's sequence) v3 promoted again over v1, and rolled back
    assert (
        "brandloop.rolled_back" in registry.client.get_model_version(registry.model_name, v3).tags
    )
    promote(v3)
    assert registry.alias_version(PREVIOUS) == v1
    # (champion again, v3 no longer carries the tags of its rollback: trial AP)
    assert not [
        t
        for t in registry.client.get_model_version(registry.model_name, v3).tags
        if "rolled_back" in t
    ]
    registry.rollback(actor="oncall", reason="r3")
    assert (
        registry.client.get_model_version(registry.model_name, v3).tags["brandloop.rolled_back"]
        == "r3"
    )
    # Then v1 is champion with nothing before it: v2, rolled back earlier, does not come back
    assert (registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS)) == (v1, None)
    with pytest.raises(PromotionError, match="no @previous version"):
        registry.rollback(actor="oncall", reason="r4")


def test_a_rollback_whose_card_note_fails_is_still_done_and_says_so(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    # Given v1 then v2 promoted, and MLflow refusing the version's card update
    for version in (register(registry, tmp_path, ["Glossier"]), register(registry, tmp_path, [])):
        registry.record_evaluation(version, GOLD, {"f1": 0.9})
        registry.promote(
            version, gold_hash=GOLD, decision=decide(0.9, None, 0.8), metrics={}, actor="t"
        )

    def refuse(*_: object, **__: object) -> None:
        raise MlflowException("MLflow refused the description")

    monkeypatch.setattr(registry.client, "update_model_version", refuse)
    # When it is rolled back, the moves are made (a retry would roll back twice) and the
    # failed note is a warning
    with caplog.at_level(logging.WARNING, logger="ner.registry"):
        event = registry.rollback(actor="oncall", reason="r")
    assert (event.from_version, event.to_version) == ("2", "1")
    assert registry.alias_version(CHAMPION) == "1"
    assert "rolled back, but version 2's card was not updated" in caplog.text


def test_rollback_without_previous_is_refused(registry: Registry, tmp_path: Path) -> None:
    # Given nothing registered yet: the model itself is named as missing
    with pytest.raises(PromotionError, match="no registered model 'brand-ner' in sqlite:"):
        registry.rollback(actor="oncall")
    # Given the model with one version, never promoted (a trial read "no @previous" there)
    version = register(registry, tmp_path, ["glossier"])
    with pytest.raises(PromotionError, match="no version of brand-ner was made @champion yet"):
        registry.rollback(actor="oncall")
    # Given it is champion, with no @previous
    registry.record_evaluation(version, GOLD, {"f1": 0.9})
    registry.promote(
        version, gold_hash=GOLD, decision=decide(0.9, None, 0.8), metrics={}, actor="t"
    )
    with pytest.raises(PromotionError, match="no @previous version of brand-ner to roll back"):
        registry.rollback(actor="oncall")


def test_training_run_logs_params_metrics_dataset_and_curve(
    registry: Registry, tmp_path: Path
) -> None:
    run_id = registry.log_training_run(
        run_name="train test",
        params={"epochs": 3, "seed": 1},
        metrics={"train_size": 10},
        curve=[{"step": 0, "score": 0.1}, {"step": 25, "score": 0.4}],
        dataset_hash="ab" * 32,
        dataset_uri=(tmp_path / "train.jsonl").as_uri(),
        gold_hash=GOLD,
        gold_uri=(tmp_path / "gold.jsonl").as_uri(),
        tags={"brandloop.env": "dev"},
    )
    run = registry.client.get_run(run_id)
    assert run.data.params["epochs"] == "3"
    assert run.data.metrics["train_size"] == 10
    assert run.data.tags["brandloop.gold_hash"] == GOLD
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert digests["train-pool"] == ("ab" * 32)[:36]
    assert digests["gold"] == GOLD[:36]
    history = registry.client.get_metric_history(run_id, "curve_dev_f1")
    assert [(m.step, m.value) for m in history] == [(0, 0.1), (25, 0.4)]
    artifacts = [a.path for a in registry.client.list_artifacts(run_id, "plots")]
    assert artifacts == ["plots/learning_curve.png"]


def test_a_fingerprint_finds_only_a_finished_run_with_a_registered_version(
    registry: Registry, tmp_path: Path
) -> None:
    def training_run(fingerprint: str) -> str:
        return registry.log_training_run(
            run_name="train",
            params={},
            metrics={},
            curve=[],
            dataset_hash="ab" * 32,
            dataset_uri=tmp_path.as_uri(),
            gold_hash=GOLD,
            gold_uri=tmp_path.as_uri(),
            tags={FINGERPRINT_TAG: fingerprint},
        )

    # Given nothing logged yet, nothing is found
    assert registry.trained_with("1" * 64) is None
    # Given a run with the fingerprint whose model was registered, then the run FAILED,
    # and a run that FINISHED without registering a model
    failed = training_run("1" * 64)
    registry.log_model(saved_model(tmp_path, ["glossier"]), failed)
    registry.close_run(failed, "FAILED")
    registry.close_run(training_run("1" * 64), "FINISHED")
    # Then neither counts as trained on those inputs
    assert registry.trained_with("1" * 64) is None
    # Given a FINISHED run with a registered version, it is found; another fingerprint is not
    done = training_run("1" * 64)
    _, version = registry.log_model(saved_model(tmp_path, ["fenty"]), done)
    registry.close_run(done, "FINISHED")
    assert registry.trained_with("1" * 64) == (version, done)
    assert registry.trained_with("2" * 64) is None


def test_the_logged_model_lives_in_the_runs_experiment_and_artifact_store(
    registry: Registry, tmp_path: Path
) -> None:
    # Given a model logged for a training run from where the run is not active (as a flow's
    # task on another thread logs it), and no experiment active in the process
    with registry.start_run("train") as run_id:
        pass
    _, version = registry.log_model(saved_model(tmp_path, ["Glossier"]), run_id)
    assert version is not None
    # Then its logged model (MLflow 3) belongs to the run's experiment, not to "Default" (0)
    mv = registry.client.get_model_version("brand-ner", version)
    assert mv.source.startswith("models:/m-")
    logged = registry.client.get_logged_model(mv.source.removeprefix("models:/"))
    run = registry.client.get_run(str(mv.run_id))
    assert logged.experiment_id == run.info.experiment_id != "0"
    assert logged.source_run_id == run.info.run_id
    # and its files are under the configured artifact store (not ./mlruns)
    assert logged.artifact_location.startswith((tmp_path / "artifacts").as_uri())
    assert logged.params == run.data.params


def test_a_card_scored_on_a_revised_gold_set_says_so_above_its_tables(
    registry: Registry, tmp_path: Path
) -> None:
    # Given a version whose card was written on gold set GOLD (its training run's tag)
    version = register(registry, tmp_path, ["Glossier"])
    run_id = registry.client.get_model_version(registry.model_name, version).run_id
    registry.client.set_tag(run_id, "brandloop.gold_hash", GOLD)
    registry.describe_version(version, "# brand-ner v1\n\n| set | F1 |\n| gold | 0.9000 |")
    registry.record_evaluation(version, GOLD, {"f1": 0.9})

    def card() -> str:
        return registry.client.get_model_version(registry.model_name, version).description

    assert "Scored again" not in card()  # the same gold set: the tables are current
    # When it is scored on two revisions in turn (a forget, then a relabelled gold post)
    registry.record_evaluation(version, "e" * 64, {"f1": 0.7})
    registry.record_evaluation(version, "d" * 64, {"f1": 0.75})
    # Then the card says the latest score above the tables it keeps (a trial read a stale one)
    lines = card().splitlines()
    notes = [line for line in lines if line.startswith("**Scored again**")]
    assert len(notes) == 1 and "F1 0.7500 on gold set dddddddddddd" in notes[0]
    assert "the tables below are on gold set ffffffffffff" in notes[0]
    assert lines[0] == "# brand-ner v1" and lines[-1] == "| gold | 0.9000 |"
    assert registry.evaluated_f1(version, "d" * 64) == 0.75


def test_a_card_says_a_promotion_by_hand_at_the_time_of_the_alias_move(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a version promoted by hand, its alias moved at a time the clock has left since
    version = register(registry, tmp_path, ["Glossier"])
    registry.record_evaluation(version, GOLD, {"f1": 0.9})
    moved_at = 1_790_000_000.0  # 2026-09-21T14:13:20Z
    monkeypatch.setattr("ner.registry.time.time", lambda: moved_at)
    events = registry.promote(
        version, gold_hash=GOLD, decision=decide(0.9, None, 0.8), metrics={}, actor="ana"
    )
    monkeypatch.undo()
    # When its card is told so, with the alias moves (a trial read the card 1 s off the tag)
    registry.note_manual_promotion(version, reason="hotfix", actor="ana", events=events)
    # Then the card's line and the champion_since tag give the same second
    mv = registry.client.get_model_version("brand-ner", version)
    assert mv.tags["brandloop.champion_since"] == "2026-09-21T14:13:20Z"
    assert "**Promoted by hand** to @champion at 2026-09-21T14:13:20Z" in mv.description
