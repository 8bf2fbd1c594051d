"""``brandloop evaluate`` (apps/evaluate.py): which model and which set, scored as the gate
scores, on the shipped brand list (no registry, no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apps import cli
from apps import evaluate as scoring
from ner import forget
from ner.datasets import freeze_gold_set, retire_gold_set
from ner.errors import ConfigError, GoldSetError, InputNotFoundError
from ner.models import expand_model_spec
from ner.settings import Settings, load_settings
from ner.storage import LocalStorage, Storage
from ner.types import Annotation, Span


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {"storage_uri": str(tmp_path / "storage"), "registered_model_name": "brand-ner-dev"}
    )


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return LocalStorage(tmp_path / "storage" / "dev")


def _task(post_id: str, text: str, *spans: tuple[str, str]) -> dict[str, object]:
    """A Label Studio export task with one annotation: ``(surface, label)`` spans."""
    result = []
    for i, (surface, label) in enumerate(spans):
        start = text.index(surface)
        value = {"start": start, "end": start + len(surface), "text": surface, "labels": [label]}
        result.append({"id": f"r{i}", "from_name": "label", "to_name": "text",
                       "type": "labels", "value": value})  # fmt: skip
    return {"id": int(post_id[1:]), "data": {"text": text, "post_id": post_id},
            "annotations": [{"id": 1, "result": result, "was_cancelled": False}]}  # fmt: skip


def test_a_user_names_a_model_as_the_tables_print_it(settings: Settings) -> None:
    name = settings.registered_model_name
    assert expand_model_spec("@champion", name) == "models:/brand-ner-dev@champion"
    assert expand_model_spec(" v3 ", name) == "models:/brand-ner-dev/3"
    assert expand_model_spec("12", name) == "models:/brand-ner-dev/12"
    for spec in ("gazetteer", "base", "models:/other/2", "./model", "vintage"):
        assert expand_model_spec(spec, name) == spec


def test_an_export_is_read_with_its_brand_spans_only_and_bad_posts_named(
    settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    # Given an export with a PERSON span beside a brand, and a task whose span is nowhere
    export = [
        _task("p1", "Nars blush for Ana", ("Nars", "BRAND"), ("Ana", "PERSON")),
        _task("p2", "nothing here"),
        _task("p3", "Dior lipstick", ("Dior", "BRAND")),
    ]
    export[2]["annotations"][0]["result"][0]["value"].update(start=40, end=44, text="Gucci")  # type: ignore[index]
    path = tmp_path / "labelled.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    # When it is read as the set to score
    read = scoring.labelled_set(settings, storage, str(path))
    # Then the brand spans are kept, the other label ignored, the bad post left out by name
    assert [(a.post_id, [s.text for s in a.spans]) for a in read.annotations] == [
        ("p1", ["Nars"]),
        ("p2", []),
    ]
    assert read.name == f"file {path}" and len(read.digest) == 64
    assert read.ignored_spans == {"PERSON": 1}  # counted, for the command to say
    assert {r.record_id for r in read.rejected} == {"p3"}
    assert "'Gucci' BRAND: offsets do not match" in read.rejected[0].reason
    # And a post forgotten here is left out of it, as every reader leaves it out
    forget.record(storage, ["p1"], by="ops", reason="deleted on X", stamp="s1")
    again = scoring.labelled_set(settings, storage, str(path))
    assert [a.post_id for a in again.annotations] == ["p2"]
    assert (read.n_forgotten, again.n_forgotten) == (0, 1)  # counted, for the command to say


def test_a_set_that_is_not_there_or_not_an_export_is_refused(
    settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    with pytest.raises(GoldSetError, match="no gold set frozen"):
        scoring.labelled_set(settings, storage, "gold")
    with pytest.raises(GoldSetError, match=r"no canary set frozen in .*: the next train run fr"):
        scoring.labelled_set(settings, storage, "canary")
    with pytest.raises(InputNotFoundError, match=r"labelled set 'nowhere\.json' is neither"):
        scoring.labelled_set(settings, storage, "nowhere.json")
    (tmp_path / "posts.jsonl").write_text('{"id": "1", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a Label Studio JSON export"):
        scoring.labelled_set(settings, storage, str(tmp_path / "posts.jsonl"))
    (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ConfigError, match="no labelled post to score"):
        scoring.labelled_set(settings, storage, str(tmp_path / "empty.json"))


def test_a_gold_set_whose_posts_were_all_forgotten_is_refused_not_scored_zero(
    settings: Settings, storage: Storage
) -> None:
    # Given a frozen gold set whose every post was then forgotten (a trial's evaluate printed
    # F1 0.0000 on "0 posts, 0 gold spans")
    gold = [Annotation("g1", "love my Glossier balm", (Span(8, 16, "BRAND", "Glossier"),))]
    freeze_gold_set(storage, gold, gold_fraction=1.0, name="g")
    forget.record(storage, ["g1"], by="ops", reason="deleted on X", stamp="s1")
    # When it is asked for, Then it is refused, saying why and where to look
    with pytest.raises(GoldSetError, match="gold set g holds no post any more") as caught:
        scoring.labelled_set(settings, storage, "gold")
    assert "`brandloop gold-set retire --reason ...` lets the next train freeze" in str(
        caught.value
    )
    # And once it is retired, the refusal says so rather than "none frozen"
    retire_gold_set(storage, by="ops", reason="emptied")
    with pytest.raises(GoldSetError, match=r"gold set g was retired in .*: the next train run"):
        scoring.labelled_set(settings, storage, "gold")
    with pytest.raises(GoldSetError, match=r"brandloop gold-set reinstate --reason \.\.\. undoes"):
        scoring.labelled_set(settings, storage, "gold")
    # And asked for the canary set, it names that set, not the gold set (trial K)
    with pytest.raises(GoldSetError, match=r"^gold set g and its canary set were retired in"):
        scoring.labelled_set(settings, storage, "canary")


def test_the_gazetteer_is_scored_on_the_gold_set_with_an_interval(
    settings: Settings, storage: Storage
) -> None:
    # Given a frozen gold set: two brands the list knows, one it does not
    gold = [
        Annotation("g1", "love my Glossier balm", (Span(8, 16, "BRAND", "Glossier"),)),
        Annotation("g2", "new Fenty Beauty gloss", (Span(4, 16, "BRAND", "Fenty Beauty"),)),
        Annotation("g3", "zzqbrand cream", (Span(0, 8, "BRAND", "zzqbrand"),)),
    ]
    freeze_gold_set(storage, gold, gold_fraction=1.0, name="g")
    # When the gazetteer is evaluated on it
    done = scoring.evaluate(settings, "gazetteer", scoring.labelled_set(settings, storage, "gold"))
    report = done.scores.report
    # Then the counts are the gate's: every gold span counted, found ones exact
    assert (report.n_posts, report.n_gold) == (3, 3)
    assert report.tp == report.n_pred - report.fp and report.fn >= 1  # zzqbrand is unknown
    assert done.interval is not None and done.interval.lower <= report.f1 <= done.interval.upper
    assert done.on.name == "gold set g" and done.model.startswith("gazetteer")


def test_a_wrong_span_is_shown_with_the_words_around_it() -> None:
    # a trial's missed "Jo Malone London" sat past the first 80 characters shown
    text = "The shade matching struggle is real: opaline cosmetics setting powder was too " * 2
    text += "pink, went back to Jo Malone London for the candle"
    start = text.index("Jo Malone London")
    shown = cli.span_context(text, start, start + 16)
    assert "Jo Malone London" in shown and shown.startswith("…") and len(shown) <= 82
    assert cli.span_context("short Dior post", 6, 10) == "short Dior post"


def test_the_command_prints_the_scores_and_the_wrong_spans(
    settings: Settings, storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = [_task("p1", "zzqbrand cream", ("zzqbrand", "BRAND")), _task("p2", "a post")]
    export.append(_task("p3", "Ana here", ("Ana", "PERSON")))
    value = export[0]["annotations"][0]["result"][0]["value"]  # type: ignore[index]
    value["start"], value["end"] = 90, 98  # drifted: repaired, and said to be
    path = tmp_path / "labelled.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    monkeypatch.setenv("NER_STORAGE_URI", str(tmp_path / "storage"))
    monkeypatch.setenv("COLUMNS", "200")
    args = ["evaluate", "gazetteer", "--on", str(path), "--errors", "3"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"on file {path} (" in said and "3 posts, 1 gold span)" in said
    assert "micro 0.0000 0.0000 0.0000 1 0" in said  # the list does not know zzqbrand
    assert "posts with every span right 2/3 (66.7%)" in said
    assert "not scored: 1 span of other labels (PERSON 1); a predicted span" in said
    assert "p1 missed zzqbrand - zzqbrand cream" in said
    assert "repaired: post p1, task 1: span [90, 98)" in said and "-> [0, 8) 'zzqbrand'" in said
    assert "forgotten before" not in said and "brand list:" not in said
    # And with a name added to the list, the list is said and finds it (trial BT saw only
    # the version's hash change)
    extra = tmp_path / "extra.txt"
    extra.write_text("zzqbrand\n", encoding="utf-8")
    monkeypatch.setenv("NER_BRAND_LIST_EXTRA", str(extra))
    added = CliRunner().invoke(cli.app, args)
    shown = " ".join(added.output.split())
    assert added.exit_code == 0 and "micro 1.0000 1.0000 1.0000 1 1" in shown, added.output
    assert f"brand list: the shipped lists and 1 name added from {extra}:" in shown
    monkeypatch.delenv("NER_BRAND_LIST_EXTRA")
    # And a post forgotten since is left out, and said to be (a trial saw 452 of 453 posts)
    env_storage = LocalStorage(tmp_path / "storage" / "dev")
    forget.record(env_storage, ["p2"], by="ops", reason="deleted on X", stamp="s1")
    result = CliRunner().invoke(cli.app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "2 posts, 1 gold span)" in said, result.output
    assert "! left out: 1 post forgotten before (tombstones under forgotten/)" in said
    # And a model that does not exist is refused in one line, before the set is looked for
    missing = str(tmp_path / "no-such-set.json")
    result = CliRunner().invoke(cli.app, ["evaluate", "./no-such-model", "--on", missing])
    assert (
        result.exit_code == 1 and "model folder './no-such-model' does not exist" in result.stderr
    )
    assert f"as a path it is read from {Path.cwd()}" in " ".join(result.stderr.split())
    # And a set file that does not exist is one line without the --debug hint (trial AK
    # read the hint as a crash)
    result = CliRunner().invoke(cli.app, ["evaluate", "gazetteer", "--on", missing])
    assert result.exit_code == 1 and "no-such-set.json" in result.stderr
    assert "--debug" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
    # And a folder is named as one, and a set with no readable post names the first reason
    # (trial AN got the counts alone)
    result = CliRunner().invoke(cli.app, ["evaluate", "gazetteer", "--on", str(tmp_path)])
    assert result.exit_code == 1 and "(a folder: name a file in it)" in result.stderr
    junk = tmp_path / "junk.json"
    junk.write_text('[1, {"id": 2}]')
    result = CliRunner().invoke(cli.app, ["evaluate", "gazetteer", "--on", str(junk)])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 1
    assert "2 tasks, 0 unlabelled, 2 rejected; the first rejected: " in said
    assert "export item #0: not a task object (int)" in said
    # And the model may be given as --model, as serve and apply take it (trial L), not twice
    as_option = CliRunner().invoke(cli.app, ["evaluate", "--model", "gazetteer", "--on", str(path)])
    assert as_option.exit_code == 0, as_option.output
    assert " ".join(as_option.output.split()).count("micro 0.0000 0.0000 0.0000 1 0") == 1
    both = CliRunner().invoke(cli.app, ["evaluate", "base", "--model", "gazetteer"])
    assert both.exit_code == 1 and "two models given, base and --model gazetteer" in both.stderr
    typed = CliRunner().invoke(cli.app, ["evaluate", "@champion", "--model", "gazetteer"])
    assert typed.exit_code == 1 and "two models given, @champion and" in typed.stderr
    # And a set not frozen yet is refused in one line that says what to do, no --debug hint
    gold = CliRunner().invoke(cli.app, ["evaluate", "gazetteer", "--on", "gold"])
    assert gold.exit_code == 1 and "no gold set frozen in" in gold.stderr
    assert "--debug" not in gold.stderr
    # And with no champion yet, the refusal names the cold start apply predicts with (trial S)
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = ["--set", f"mlflow_tracking_uri={store}"]
    # (a store whose model is not registered yet: MLflow's "not found", a trial saw, no more)
    MlflowClient(tracking_uri=store, registry_uri=store).search_experiments()  # makes the store
    bare = CliRunner().invoke(cli.app, ["evaluate", "--on", str(path), *flags])
    said = " ".join(bare.stderr.split())
    assert bare.exit_code == 1 and said.startswith("error: no champion yet: brand-ner-dev has no")
    assert "cannot resolve" not in said and "--debug" not in said
    MlflowClient(tracking_uri=store, registry_uri=store).create_registered_model("brand-ner-dev")
    none = CliRunner().invoke(cli.app, ["evaluate", "--on", str(path), *flags])
    said = " ".join(none.stderr.split())
    assert none.exit_code == 1 and said.startswith("error: no champion yet: no version of")
    assert f"until then: brandloop evaluate gazetteer --set mlflow_tracking_uri={store}" in said


def test_a_file_holding_posts_the_version_trained_on_is_named(
    settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    from ner.records import write_annotations
    from ner.registry import Registry

    # Given version 1 trained on a pool of p1 and p2, as train-ner logs it (a trial scored
    # the demo champion on the export it was trained from and was told nothing)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = settings.model_copy(update={"mlflow_tracking_uri": uri})
    pool = [Annotation(p, "Dior", (Span(0, 4, "BRAND", "Dior"),)) for p in ("p1", "p2")]
    write_annotations(storage, "annotations/s.train.jsonl", pool)
    registry = Registry(uri, "brand-ner-dev")
    run_id = registry.client.create_run(registry.experiment_id()).info.run_id
    registry.log_dataset(run_id, "train-pool", "h", storage.uri("annotations/s.train.jsonl"), "t")
    registry.client.create_registered_model("brand-ner-dev")
    registry.client.create_model_version("brand-ner-dev", "file:///m", run_id=run_id)
    scored = [Annotation(p, "Dior", ()) for p in ("p1", "p3", "p4")]
    on = scoring.LabelledSet("file week2.json", "d", scored)
    # When the version is scored on a file holding p1, Then that is said with the pool
    said = scoring.trained_on(cfg, storage, "models:/brand-ner-dev/1", on)
    assert said is not None and said.startswith(
        "1 of the 3 posts of file week2.json are in the training pool of version 1 ("
    )
    # and not for the gold set, a pipeline, or a file the pool does not touch
    gold = scoring.LabelledSet("gold set g", "d", scored)
    assert scoring.trained_on(cfg, storage, "models:/brand-ner-dev/1", gold) is None
    assert scoring.trained_on(cfg, storage, "gazetteer", on) is None
    other = scoring.LabelledSet("file other.json", "d", scored[1:])
    assert scoring.trained_on(cfg, storage, "models:/brand-ner-dev/1", other) is None
