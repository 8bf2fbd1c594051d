"""The whole loop through the Prefect flows, on a small slice of the demo posts."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.spacy
from mlflow import MlflowClient

from flows.feedback_loop import LoopStatus, feedback_loop
from flows.train_ner import TrainStatus
from ner.datasets import load_gold_set
from ner.replay import demo_posts_path
from ner.storage import open_storage


def slice_posts(tmp_path: Path, n: int) -> Path:
    lines = demo_posts_path().read_text(encoding="utf-8").splitlines()[:n]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_loop_trains_promotes_then_meets_threshold_on_the_same_gold_set(
    prefect_ephemeral: None, loop_settings: dict[str, object], tmp_path: Path
) -> None:
    # Given 260 posts, the pretrained base as cold start, and a threshold it does not reach
    posts = slice_posts(tmp_path, 260)
    settings = {**loop_settings, "cold_start": "base", "threshold": 0.5}

    # When the loop runs with the replay annotator, 160 posts a round
    result = feedback_loop(
        source="jsonl",
        input_uri=str(posts),
        posts_per_round=160,
        annotator="replay",
        max_rounds=3,
        overrides=settings,
    )

    # Then round 1 trained a challenger that beat the cold start and was promoted
    rounds = result.rounds
    assert len(rounds) == 2 and all(r.train is not None for r in rounds)
    first, second = (r.train for r in rounds)
    assert first is not None and second is not None
    assert first.status == TrainStatus.PROMOTED, first
    assert first.champion_f1 is not None and first.challenger_f1 is not None
    assert first.champion_f1 < 0.5 <= first.challenger_f1
    assert first.promoted_version == "1" and first.run_id and first.gold_hash
    # (its champion fields stay the cold start's it beat: a script paired v1 with F1 0.0)
    assert first.champion_version is None and first.champion_model != "brand-ner-dev/1"
    # And round 2 scored the new champion on the *same* frozen gold set and stopped
    assert second.gold_hash == first.gold_hash
    assert second.champion_model == "brand-ner-dev/1"
    assert second.champion_f1 == first.challenger_f1
    assert second.status == TrainStatus.THRESHOLD_MET
    assert result.status == LoopStatus.THRESHOLD_MET

    # And the registry holds the audited champion, loadable through the contract
    tracking = str(settings["mlflow_tracking_uri"])
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert str(client.get_model_version_by_alias("brand-ner-dev", "champion").version) == "1"
    mlflow.set_tracking_uri(tracking)
    nlp = mlflow.spacy.load_model("models:/brand-ner-dev@champion")
    assert nlp.pipe_names[-2:] == ["brandloop_labels", "brand_gazetteer"]  # list after filter
    assert {e.label_ for e in nlp("new Fenty Beauty gloss and a Glossier balm").ents} <= {"BRAND"}

    # And the training run carries params, gold metrics, the dataset hash and plots
    run = client.get_run(first.run_id)
    assert run.data.params["max_epochs"] == "6"
    assert run.data.metrics["gold.f1"] == first.challenger_f1
    assert "gold.BRAND.f1" in run.data.metrics
    assert run.data.tags["brandloop.gold_hash"] == first.gold_hash
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train-pool", "gold"}
    plots = {a.path for a in client.list_artifacts(first.run_id, "plots")}
    assert {"plots/learning_curve.png", "plots/gold_per_label_f1.png"} <= plots

    # And no gold post was ever trained on
    storage = open_storage(str(settings["storage_uri"]), "dev")
    loaded = load_gold_set(storage)
    assert loaded is not None
    gold_set, _ = loaded
    assert gold_set.hash == first.gold_hash
    gold_ids = set(gold_set.post_ids)
    train_keys = [k for k in storage.list("annotations") if k.endswith(".train.jsonl")]
    trained_ids = {
        json.loads(line)["post_id"] for key in train_keys for line in storage.iter_lines(key)
    }
    assert gold_ids and trained_ids and not gold_ids & trained_ids


def test_a_loop_nobody_labels_in_storage_times_out_without_training(
    prefect_ephemeral: None, loop_settings: dict[str, object], tmp_path: Path
) -> None:
    # Given posts sent as tasks into storage, where nobody drops an export (a trial's loop
    # ended in a TimeoutError and a failed flow run, where the README promises a status)
    posts = slice_posts(tmp_path, 20)
    # When the loop waits 2 s for a label
    result = feedback_loop(
        source="jsonl",
        input_uri=str(posts),
        annotator="storage",
        max_rounds=2,
        wait_timeout_s=2,
        poll_interval_s=1,
        overrides=loop_settings,
    )
    # Then it returns the timed-out status, its one round sent posts and trained nothing
    assert result.status == LoopStatus.TIMED_OUT
    (played,) = result.rounds
    assert played.posts_sent == 20 and played.new_labels == 0 and played.train is None
