"""train-ner beside posts that are not this project's labels: hard negatives (stored posts
nobody labelled, in which the base pipeline finds people, places or dates but no organisation
or product, trained as brand-less posts: ``train.hard_negatives``), never a labelled, gold or
canary post; and a rehearsal set (labelled posts of a general source: ``train.rehearsal_uri``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from flows.train_ner import train_ner
from ner import layout
from ner.rehearsal import DEFAULT_SKIP, hard_negatives, rehearsal_set
from ner.settings import load_settings
from ner.storage import LocalStorage
from ner.training import load_start
from ner.types import Annotation
from tests.support.gate_data import write_two_windows
from tests.support.ls_json import result, task
from tests.support.servers import PrefectService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNLABELLED = [
    "Barack Obama spoke in Paris on Monday",
    "Taylor Swift played two nights in London",
    "Microsoft and Google announced a deal today",
    "we drove from Texas to Ohio last summer",
    "walking the dog again",
    "Serena Williams won in Melbourne in January",
    "Amazon shipped my order from Seattle",
    "my trip to Rome with Maria was great",
]


def run_settings(tmp_path: Path, train: dict[str, Any]) -> dict[str, Any]:
    """train-ner's settings for a run in ``tmp_path`` that never promotes."""
    return {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "mlflow_artifact_location": (tmp_path / "art").as_uri(),
        "threshold": 0.99,
        "gate_bootstrap_resamples": 200,
        "train": train,
    }


def test_train_ner_trains_on_hard_negatives_from_unlabelled_stored_posts(
    prefect: PrefectService, tmp_path: Path, clean_env: None
) -> None:
    # Given labelled posts (an export snapshot and their fetched batch), and a newer fetched
    # batch of posts nobody labelled
    storage = LocalStorage(tmp_path / "storage" / "dev")
    write_two_windows(storage)
    batch = [{"id": f"u{i}", "text": text, "source": "x"} for i, text in enumerate(UNLABELLED)]
    storage.write_lines(layout.posts_batch("20261123T000000Z"), (json.dumps(p) for p in batch))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = run_settings(tmp_path, {"max_epochs": 2, "hard_negatives": 3})
    # And what the default base pipeline (en_core_web_md) calls hard negatives among them
    base = load_start(load_settings(settings).base_model)
    posts = [Annotation(post_id=p["id"], text=p["text"], spans=()) for p in batch]
    expected = hard_negatives(posts, base, brand_labels=DEFAULT_SKIP, limit=3)
    assert 1 <= len(expected) <= 3

    # When train-ner runs with train.hard_negatives=3
    summary = train_ner(source="storage", overrides=settings)

    # Then the challenger was trained with exactly those hard negatives beside the labels,
    # and the run records the knob and how many were used
    assert summary.run_id is not None, summary
    run = MlflowClient(tracking_uri=tracking, registry_uri=tracking).get_run(summary.run_id)
    assert run.data.params["hard_negatives"] == "3"
    assert run.data.metrics["train_hard_negatives"] == len(expected)
    pool = [k for k in storage.list("annotations") if k.endswith(".train.jsonl")]
    trained = {json.loads(line)["post_id"] for key in pool for line in storage.iter_lines(key)}
    assert run.data.metrics["train_size"] > 0 and not trained & {p["id"] for p in batch}
    assert all(p.post_id.startswith("u") for p in expected)


def test_train_ner_draws_hard_negatives_from_a_file_of_other_topics_when_one_is_set(
    prefect: PrefectService, tmp_path: Path, clean_env: None
) -> None:
    # Given labelled posts, no unlabelled stored post, and a JSONL file of posts of other
    # topics (one line of it broken)
    storage = LocalStorage(tmp_path / "storage" / "dev")
    write_two_windows(storage)
    other = tmp_path / "other_posts.jsonl"
    lines = [json.dumps({"id": f"o{i}", "text": text}) for i, text in enumerate(UNLABELLED)]
    other.write_text("\n".join([*lines[:2], "not json", *lines[2:]]) + "\n", encoding="utf-8")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = run_settings(
        tmp_path, {"max_epochs": 2, "hard_negatives": 3, "negatives_uri": str(other)}
    )
    base = load_start(load_settings(settings).base_model)
    posts = [Annotation(post_id=f"o{i}", text=t, spans=()) for i, t in enumerate(UNLABELLED)]
    expected = hard_negatives(posts, base, brand_labels=DEFAULT_SKIP, limit=3)
    assert 1 <= len(expected) <= 3

    # When train-ner runs with train.negatives_uri set
    summary = train_ner(source="storage", overrides=settings)

    # Then the hard negatives came from that file (the broken line skipped), and the run
    # records where they came from
    assert summary.run_id is not None, summary
    run = MlflowClient(tracking_uri=tracking, registry_uri=tracking).get_run(summary.run_id)
    assert run.data.metrics["train_hard_negatives"] == len(expected)
    assert run.data.params["negatives_from"] == "other_posts.jsonl"


def test_train_ner_trains_beside_a_rehearsal_set_and_records_it(
    prefect: PrefectService, tmp_path: Path, clean_env: None
) -> None:
    # Given labelled posts, and a general source's Label Studio export: five posts with a
    # brand, two without, and one with the id of a post labelled here (our label wins)
    storage = LocalStorage(tmp_path / "storage" / "dev")
    write_two_windows(storage)
    general = []
    for i, (text, brand) in enumerate(GENERAL):
        results = [] if brand is None else [result(*_offsets(text, brand), brand)]
        general.append(task(i + 1, text, results, post_id=f"g{i}"))
    general.append(task(99, "a copy of a post labelled here", [], post_id="new000"))
    path = tmp_path / "general.json"
    path.write_text(json.dumps(general), encoding="utf-8")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = {"max_epochs": 2, "rehearsal_uri": str(path), "negative_fraction": 1.0}

    # When train-ner runs with train.rehearsal_uri set
    summary = train_ner(source="storage", overrides=run_settings(tmp_path, recipe))

    # Then the challenger trained on the seven posts that are not ours, and the run records
    # the file, how many were used and the hash of exactly those posts
    assert summary.run_id is not None, summary
    run = MlflowClient(tracking_uri=tracking, registry_uri=tracking).get_run(summary.run_id)
    assert run.data.metrics["train_rehearsed"] == len(GENERAL) == 7
    assert run.data.params["rehearsal_from"] == "general.json"
    expected = rehearsal_set(storage, str(path), labels=["BRAND"], exclude={"new000"})
    assert len(expected.annotations) == 7
    assert run.data.params["rehearsal_hash"] == expected.digest
    assert run.data.params["rehearsal_rejected"] == "0"
    # And the model card names the set beside the pool
    card = MlflowClient(tracking_uri=tracking, registry_uri=tracking).get_model_version(
        "brand-ner-dev", summary.challenger_version
    )
    assert f"7 posts of `{path}`, hash `{expected.digest}`" in card.description
    # And none of them entered the stored training pool (they are not this project's labels)
    pool = [k for k in storage.list("annotations") if k.endswith(".train.jsonl")]
    trained = {json.loads(line)["post_id"] for key in pool for line in storage.iter_lines(key)}
    assert not trained & {f"g{i}" for i in range(len(GENERAL))}


GENERAL = [
    ("Just got a new Nikon camera", "Nikon"),
    ("Tesla stock is up again", "Tesla"),
    ("Spotify keeps playing the same song", "Spotify"),
    ("my Samsung phone died again", "Samsung"),
    ("queue at Starbucks is endless", "Starbucks"),
    ("walking the dog in the rain", None),
    ("lunch with Maria in Rome", None),
]


def _offsets(text: str, needle: str) -> tuple[int, int]:
    start = text.index(needle)
    return start, start + len(needle)
