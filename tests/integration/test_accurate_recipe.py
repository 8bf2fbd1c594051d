"""The accurate recipe end to end: a transformer token classifier trained through
``ner.training`` (in a process of its own, as the train-ner flow does), logged through the
registry into a real MLflow SQLite store, and loaded back with ``mlflow.spacy.load_model`` in
a fresh Python process that has never imported brandloop's modules.

Needs the optional install (``make install-accurate``); without torch these tests fail with
the error that names it, they are never skipped. ``make test`` deselects them
(``-m "not accurate"``); ``make test-accurate`` runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import pytest
import spacy

from ner.models import LoadedModel
from ner.parallel import predict_parallel
from ner.records import read_predictions
from ner.registry import Registry
from ner.settings import TrainSettings
from ner.storage import LocalStorage
from ner.training_worker import train_isolated
from ner.transformer import COMPONENT, base_weights, require_torch
from ner.types import Annotation, Span
from tests.support.cli import plain_env, run_cli

pytestmark = [pytest.mark.accurate, pytest.mark.integration, pytest.mark.slow]

TEXTS = [
    "just bought the new Glossier balm and a Nike hoodie",
    "nothing to see here, walking the dog",
    "fenty beauty restock at sephora today",
]
BRANDS = ["Glossier", "Nike", "Adidas", "Sephora", "Fenty", "Starbucks", "Apple", "Rimmel"]


def posts() -> list[Annotation]:
    """A few dozen posts: each brand in a few templates, and posts without a brand."""
    templates = ["love my {} stuff", "{} just dropped a new line", "went to {} after work"]
    out = []
    for i, (brand, template) in enumerate((b, t) for b in BRANDS for t in templates):
        text = template.format(brand)
        start = text.index(brand)
        out.append(Annotation(f"p{i}", text, (Span(start, start + len(brand), "BRAND", brand),)))
    plain = ["walking the dog again", "rain all day", "what a game last night", "coffee time"]
    out += [Annotation(f"n{i}", text, ()) for i, text in enumerate(plain)]
    return out


def general() -> list[Annotation]:
    """A rehearsal set: labelled posts of another source, each with a brand."""
    pairs = [
        ("Tesla stock is up again", "Tesla"),
        ("my Samsung phone died", "Samsung"),
        ("queue at Starbucks again", "Starbucks"),
    ]
    out = []
    for i, (text, brand) in enumerate(pairs):
        start = text.index(brand)
        out.append(Annotation(f"g{i}", text, (Span(start, start + len(brand), "BRAND", brand),)))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    require_torch()  # the clear error when the optional install is missing
    base_weights()
    out = tmp_path_factory.mktemp("accurate") / "model"
    recipe = TrainSettings(recipe="accurate", accurate_epochs=1, accurate_threads=1)
    seen: list[int] = []
    result = train_isolated(
        posts(),
        start_from="base",
        output_dir=out,
        recipe=recipe,
        seed=3,
        on_epoch=lambda e: seen.append(e.epoch),
        rehearsal=general(),
    )
    return out, {"result": result, "epochs_seen": seen}


def test_training_saves_a_spacy_pipeline_with_the_classifier(
    trained: tuple[Path, dict[str, object]],
) -> None:
    model_dir, info = trained
    result = info["result"]
    # Then the pipeline is the classifier, our label filter and the gazetteer after it
    nlp = spacy.load(model_dir)
    assert nlp.pipe_names == [COMPONENT, "brandloop_labels", "brand_gazetteer"]
    assert nlp.meta["brandloop"]["recipe"] == "accurate"
    # And one epoch was trained, reported while training and in the result's curve
    assert info["epochs_seen"] == [1]
    assert [row["epoch"] for row in result.curve] == [0]  # type: ignore[attr-defined]
    # And the rehearsal set joined the training part (the accurate recipe reads it too)
    assert result.rehearsed == 3 == nlp.meta["brandloop"]["rehearsed"]  # type: ignore[attr-defined]
    assert result.train_size + result.dev_size <= len(posts()) + 3  # type: ignore[attr-defined]
    assert "ents_f" in result.dev_scores  # type: ignore[attr-defined]


def test_registered_model_predicts_the_same_in_a_fresh_process(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    model_dir, _ = trained
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = Registry(
        tracking,
        model_name="brand-ner",
        experiment_name="brand-ner",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )
    # When the model is logged and registered through the registry
    with registry.start_run("train") as run_id:
        uri, version = registry.log_model(model_dir, run_id)
    assert version == "1"
    expected = [[(e.text, e.label_) for e in doc.ents] for doc in spacy.load(model_dir).pipe(TEXTS)]
    assert ("fenty beauty", "BRAND") in expected[2]  # the gazetteer runs after the model
    # Then a fresh process loads it with the spaCy flavor and predicts the same spans
    script = (
        "import json, sys, mlflow, mlflow.spacy\n"
        f"mlflow.set_tracking_uri({tracking!r})\n"
        "nlp = mlflow.spacy.load_model('models:/brand-ner/1')\n"
        "docs = nlp.pipe(json.loads(sys.argv[1]))\n"
        "print(json.dumps([[(e.text, e.label_) for e in d.ents] for d in docs]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        [list(s) for s in d] for d in expected
    ]
    # And the pyfunc flavor serves it; the model's requirements name torch and transformers
    served = mlflow.pyfunc.load_model(uri)
    out = served.predict([{"text": TEXTS[2]}])
    assert {"text": "fenty beauty", "label": "BRAND"}.items() <= out["entities"][0][0].items()
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    requirements = (local / "requirements.txt").read_text()
    assert "torch==" in requirements and "transformers==" in requirements


def test_loading_without_torch_names_the_install_target(
    trained: tuple[Path, dict[str, object]],
) -> None:
    model_dir, _ = trained
    # Given a process in which torch cannot be imported, when it loads the saved pipeline
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import spacy\n"
        "from ner.errors import ModelError\n"
        "try:\n"
        f"    spacy.load({str(model_dir)!r})\n"
        "except ModelError as exc:\n"
        "    print('ModelError:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    # Then the error says what to install
    assert "ModelError:" in done.stdout and "make install-accurate" in done.stdout, done.stderr


def test_saved_classifier_holds_its_tags(trained: tuple[Path, dict[str, object]]) -> None:
    model_dir, _ = trained
    # BRAND is trained as ORG (the recipe's label_map); the label filter maps it back
    config = json.loads((model_dir / COMPONENT / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "O", "1": "B-ORG", "2": "I-ORG"}


@pytest.mark.timeout(300)  # a deadlocked worker fails the test, not the session
def test_forked_workers_predict_what_one_process_predicts(
    trained: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    model_dir, _ = trained
    # Given the model loaded here and used once (torch has started its threads), and posts
    model = LoadedModel(spacy.load(model_dir), "accurate@test")
    list(model.nlp.pipe(TEXTS))
    storage = LocalStorage(tmp_path)
    lines = [json.dumps({"id": f"p{i}", "text": TEXTS[i % 3]}) for i in range(90)]
    storage.write_lines("posts/p.jsonl", lines)
    single = predict_parallel(storage, "posts/p.jsonl", "predictions/one.jsonl", model, workers=1)
    # When forked worker processes (one per shard) predict three shards of them
    forked = predict_parallel(
        storage, "posts/p.jsonl", "predictions/forked.jsonl", model, workers=2, n_shards=3
    )
    # Then the workers finish (no deadlock after fork) with the same predictions, in order
    expected = list(read_predictions(storage, single.predictions_key))
    assert forked.n_predictions == single.n_predictions == 90
    assert len(forked.processes) == 3
    assert list(read_predictions(storage, forked.predictions_key)) == expected
    assert sum(1 for p in expected if p.spans) >= 30  # the comparison is not vacuous


def test_the_demo_under_the_accurate_recipe_trains_beside_the_rehearsal_set(
    tmp_path: Path,
) -> None:
    """``brandloop demo --set train.recipe=accurate`` trains the transformer with the shipped
    rehearsal set beside the demo's labels, each labelled post three times, brand list off
    (:func:`apps.cli.demo_accurate_recipe`); read back from the training run in MLflow."""
    env = plain_env(tmp_path)
    # a small round, one epoch, 40 rehearsal posts; a threshold no challenger meets
    args = ["demo", "--rounds", "1", "--posts-per-round", "80", "--set", "threshold=0.99"]
    args += ["--set", "train.recipe=accurate", "--set", "train.accurate_epochs=1"]
    args += ["--set", "train.rehearsal_posts=40"]
    done = run_cli(env, *args, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "✓ trained the challenger" in done.stdout, done.stdout
    demo_store = f"sqlite:///{tmp_path / '.brandloop' / 'demo' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=demo_store, registry_uri=demo_store)
    runs = [
        run
        for experiment in client.search_experiments()
        for run in client.search_runs([experiment.experiment_id])
        if "train_rehearsed" in run.data.metrics
    ]
    assert len(runs) == 1, [r.data.tags.get("mlflow.runName") for r in runs]
    params, metrics = runs[0].data.params, runs[0].data.metrics
    by_knob = {key.rsplit(".", 1)[-1]: value for key, value in params.items()}
    assert by_knob["recipe"] == "accurate" and by_knob["labelled_copies"] == "3"
    assert by_knob["rehearsal_from"] == "other_gold_export.json"
    assert by_knob["with_gazetteer"] == "False"
    # the 40 drawn posts, less the brand-less ones the recipe's negative sampling left out
    assert 0 < metrics["train_rehearsed"] <= 40
