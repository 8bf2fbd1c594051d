"""``brandloop promote --from staging --to prod VERSION`` on a real MLflow tracking server:
the staging version is copied to prod's registered model (no retraining), scored on prod's
gold set, promoted in prod only through the audited path, or refused below prod's champion."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from apps import cli
from ner.datasets import adopt_gold_set
from ner.environments import SOURCE_MODEL, SOURCE_RUN, SOURCE_VERSION
from ner.registry import CHAMPION, Decision, Registry
from ner.storage import open_storage
from ner.types import Annotation, Span
from tests.support.models import register_gazetteer
from tests.support.servers import MlflowService

GOLD_POSTS = {
    "p1": ("new Glossier balm is out", "Glossier"),
    "p2": ("Fenty Beauty gloss restock", "Fenty Beauty"),
    "p3": ("my Glossier haul", "Glossier"),
}


def _gold(storage_root: Path, env: str, posts: dict[str, tuple[str, str]]) -> str:
    """Adopt ``posts`` (one brand span each) as ``env``'s gold set; returns its hash."""
    annotations = []
    for post_id, (text, brand) in posts.items():
        start = text.index(brand)
        span = Span(start, start + len(brand), "BRAND", brand)
        annotations.append(Annotation(post_id, text, (span,)))
    return adopt_gold_set(open_storage(str(storage_root), env), annotations).hash


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _registries(url: str) -> tuple[Registry, Registry]:
    staging = Registry(url, model_name="brand-ner-staging", experiment_name="brand-ner-staging")
    prod = Registry(url, model_name="brand-ner-prod", experiment_name="brand-ner-prod")
    return staging, prod


@pytest.fixture
def flags(mlflow_server: MlflowService, tmp_path: Path, clean_env: None) -> list[str]:
    """--set flags pointing the CLI at the server and a tmp storage (names come from env)."""
    values = {
        "mlflow_tracking_uri": mlflow_server.url,
        "storage_uri": str(tmp_path / "storage"),
        "threshold": "0.5",
        "label_studio_api_key": "",
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def test_copy_promote_from_staging_to_prod_then_refuse_a_worse_copy(
    mlflow_server: MlflowService, tmp_path: Path, flags: list[str]
) -> None:
    staging, prod = _registries(mlflow_server.url)
    # Given staging's champion v1 (finds both brands) and v2 (finds Glossier only), each
    # evaluated on staging's own gold set, and a prod gold set frozen in prod's storage
    staging_gold = _gold(tmp_path / "storage", "staging", {"s1": ("a Glossier tint", "Glossier")})
    prod_gold = _gold(tmp_path / "storage", "prod", GOLD_POSTS)
    good = register_gazetteer(staging, tmp_path, ["Glossier", "Fenty Beauty"], 0.9, staging_gold)
    worse = register_gazetteer(staging, tmp_path, ["Glossier"], 0.95, staging_gold)
    staging.promote(good, gold_hash=staging_gold, decision=Decision(True, "setup"), metrics={})
    staging.note_manual_promotion(good, reason="staging by hand", actor="ops")
    # (v2 promoted, then rolled back: v1 carries staging's "restored" tags, trial AP)
    staging.promote(worse, gold_hash=staging_gold, decision=Decision(True, "setup"), metrics={})
    staging.rollback(actor="ops", reason="v2 worse", gold_hash=staging_gold)
    assert staging.client.get_model_version("brand-ner-staging", good).tags["brandloop.restored"]
    staging_before = {
        v.version: dict(v.tags)
        for v in staging.client.search_model_versions("name='brand-ner-staging'")
    }
    source_run = staging.client.get_model_version("brand-ner-staging", good).run_id

    # When staging's v1 is copy-promoted to prod through the CLI
    code, out, err = _invoke(
        "promote", good, "--from", "staging", "--to", "prod", "--reason", "release 1", *flags
    )

    # Then prod has a new version with the same artifacts, which loads and predicts
    assert code == 0, err
    copy = prod.client.get_model_version("brand-ner-prod", "1")
    assert copy.source == f"models:/brand-ner-staging/{good}" and copy.run_id == source_run
    assert f"copied staging brand-ner-staging/{good} -> prod brand-ner-prod/1: F1 1.0000" in out
    assert f"gold set {prod_gold[:12]} (no champion)" in out  # not "(champion -: -)"
    # (its card says on top why it is prod's champion, then that it is a copy and its score
    # here: trials read staging's card, and staging's promotion by hand, as prod's own)
    assert copy.description.startswith("**Promoted by hand** to @champion at "), copy.description
    assert f"from staging brand-ner-staging/{good} (run {source_run}): release 1." in (
        copy.description
    )
    assert f"\n\n**Copied** from brand-ner-staging/{good} at " in copy.description
    assert "staging by hand" not in copy.description
    assert not [k for k in copy.tags if k.startswith(("brandloop.restored", "brandloop.rolled"))]
    assert copy.tags["brandloop.promotion_reason"].startswith("manual: from staging ")
    assert f": F1 1.0000 on prod's gold set {prod_gold[:12]} (the card below is the source's" in (
        copy.description
    )
    assert "**Scored again**" not in copy.description  # the Copied line says it once
    mlflow.set_tracking_uri(mlflow_server.url)
    nlp = mlflow.spacy.load_model("models:/brand-ner-prod/1")
    doc = nlp("Fenty Beauty and Glossier")
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Fenty Beauty", "BRAND"),
        ("Glossier", "BRAND"),
    ]
    # And its evaluation on prod's gold set is recorded, not staging's (history left behind)
    assert prod.evaluated_f1("1", prod_gold) == 1.0
    assert prod.evaluated_f1("1", staging_gold) is None
    assert copy.tags[SOURCE_MODEL] == "brand-ner-staging" and copy.tags[SOURCE_VERSION] == good
    evaluations = prod.client.search_runs(
        [prod.experiment_id()], filter_string="tags.`brandloop.kind` = 'evaluation'"
    )
    assert [r.data.tags["brandloop.gold_hash"] for r in evaluations] == [prod_gold]
    assert evaluations[0].data.tags["brandloop.model_version"] == "brand-ner-prod/1"
    # And @champion moved in prod only; staging is untouched
    assert prod.alias_version(CHAMPION) == "1"
    assert "@champion: - -> 1" in out
    assert staging.alias_version(CHAMPION) == good
    assert {
        v.version: dict(v.tags)
        for v in staging.client.search_model_versions("name='brand-ner-staging'")
    } == staging_before
    # And prod's audit says where the champion came from
    (move,) = [e for e in prod.audit_log() if e.alias == CHAMPION]
    assert move.to_version == "1" and f"from staging brand-ner-staging/{good}" in move.reason
    assert "release 1" in move.reason and move.gold_hash == prod_gold
    assert "champion_f1" not in move.metrics  # no champion: no 0.0 that reads as a score
    assert 0 <= move.metrics["cold_start_f1"] <= 1  # but the cold start it was held to
    assert move.run_id is not None
    audit_tags = prod.client.get_run(move.run_id).data.tags
    assert (audit_tags[SOURCE_MODEL], audit_tags[SOURCE_VERSION], audit_tags[SOURCE_RUN]) == (
        "brand-ner-staging",
        good,
        source_run,
    )

    # When staging's v2, which misses Fenty Beauty, is copy-promoted too
    code, out, err = _invoke(
        "promote", worse, "--from", "staging", "--to", "prod", "--reason", "release 2", *flags
    )
    # Then it is refused by the rule against prod's champion, in one line
    assert code == 1
    assert "refused: copy brand-ner-prod/2 F1 0.8000 does not beat champion F1 1.0000" in err
    assert len(err.strip().splitlines()) == 1, err
    # And prod keeps its champion; the copy stays an evaluated version; no new alias move
    assert prod.alias_version(CHAMPION) == "1"
    assert prod.evaluated_f1("2", prod_gold) == pytest.approx(0.8)
    assert [e.to_version for e in prod.audit_log() if e.alias == CHAMPION] == ["1"]
    assert staging.alias_version(CHAMPION) == good

    # When it is forced: the refused copy is reused (not copied twice) and the move audited
    code, out, err = _invoke(
        "promote",
        worse,
        "--from",
        "staging",
        "--to",
        "prod",
        "--reason",
        "hotfix",
        "--force",
        *flags,
    )
    assert code == 0, err
    assert len(prod.client.search_model_versions("name='brand-ner-prod'")) == 2
    assert f"reused the copy made before of staging brand-ner-staging/{worse} -> prod" in out
    assert prod.alias_version(CHAMPION) == "2" and prod.alias_version("previous") == "1"
    forced = [e for e in prod.audit_log() if e.alias == CHAMPION][-1]
    assert (
        forced.to_version == "2"
        and "hotfix (forced; rule said: copy brand-ner-prod/2 F1" in forced.reason
    )
    assert prod.client.get_run(str(forced.run_id)).data.tags[SOURCE_VERSION] == worse
    # And promoting a copy that is champion already is named as such and changes nothing: a
    # retried release step succeeds (trial AO's scripts failed on it)
    moves = len(prod.audit_log())
    code, out, err = _invoke(
        "promote", worse, "--from", "staging", "--to", "prod", "--reason", "again", *flags
    )
    said = f"staging brand-ner-staging/{worse} is already prod's @champion (brand-ner-prod/2)"
    assert code == 0 and f"{said}: nothing changed" in out, err
    assert len(prod.audit_log()) == moves and prod.alias_version(CHAMPION) == "2"
    assert staging.alias_version(CHAMPION) == good


def test_copy_promote_errors_name_their_cause(
    mlflow_server: MlflowService, tmp_path: Path, flags: list[str]
) -> None:
    staging, _ = _registries(mlflow_server.url)
    version = register_gazetteer(staging, tmp_path, ["Glossier"], 0.9, "0" * 16)
    # When prod has no gold set in its storage: refused before anything is copied
    code, _, err = _invoke(
        "promote", version, "--from", "staging", "--to", "prod", "--reason", "x", *flags
    )
    assert code == 1 and "no gold set frozen in" in err and "(prod)" in err
    assert "--debug" not in err  # a state that says what to do, not a crash (trial AL)
    assert "brandloop train --set env=prod, with --set threshold=0" in " ".join(err.split())
    # When staging has no such version
    _gold(tmp_path / "storage", "prod", GOLD_POSTS)
    code, _, err = _invoke(
        "promote", "999", "--from", "staging", "--to", "prod", "--reason", "x", *flags
    )
    assert code == 1 and "staging model brand-ner-staging has no version '999'" in err
    assert "(its versions: " in err and "--debug" not in err
    # When one environment is named without the other, or both are the same
    code, _, err = _invoke("promote", version, "--from", "staging", "--reason", "x", *flags)
    assert code == 1 and "--from and --to go together" in err
    code, _, err = _invoke(
        "promote", version, "--from", "prod", "--to", "prod", "--reason", "x", *flags
    )
    assert code == 1 and "--from and --to are both 'prod'" in err


def test_copy_promote_finds_each_environments_own_storage_as_its_deployments_do(
    mlflow_server: MlflowService,
    tmp_path: Path,
    flags: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staging, _ = _registries(mlflow_server.url)
    version = register_gazetteer(staging, tmp_path, ["Glossier", "Fenty Beauty"], 0.9, "0" * 16)
    # Given prod's gold set in prod's own storage (prefect.yaml: BRANDLOOP_PROD_STORAGE_URI),
    # not under the storage_uri the other environments share (a trial was told to train prod)
    prod_gold = _gold(tmp_path / "prod-bucket", "prod", GOLD_POSTS)
    monkeypatch.setenv("BRANDLOOP_PROD_STORAGE_URI", str(tmp_path / "prod-bucket"))
    monkeypatch.setenv("BRANDLOOP_STAGING_STORAGE_URI", str(tmp_path / "staging-bucket"))
    own = [
        f
        for pair in zip(flags[::2], flags[1::2], strict=True)
        if "storage_uri=" not in pair[1]
        for f in pair
    ]
    # When a version is copied to prod with no --set storage_uri
    code, out, err = _invoke(
        "promote", version, "--from", "staging", "--to", "prod", "--reason", "release", *own
    )
    # Then prod's gold set is found where its deployments keep it, and the line says where
    assert code == 0, err
    said = " ".join((out + err).split())  # the storage line is on standard error
    assert f"prod's storage: {tmp_path / 'prod-bucket'} (BRANDLOOP_PROD_STORAGE_URI)" in said
    assert f"on prod's gold set {prod_gold[:12]}" in said


def test_a_version_the_gate_refused_by_a_rule_promote_does_not_check_needs_force(
    mlflow_server: MlflowService, tmp_path: Path, flags: list[str]
) -> None:
    staging, prod = _registries(mlflow_server.url)
    # Given a staging version train-ner's gate refused by confidence (it would pass the
    # threshold on prod's gold set: trial AL took such a version to prod without --force)
    _gold(tmp_path / "storage", "prod", GOLD_POSTS)
    version = register_gazetteer(staging, tmp_path, ["Glossier", "Fenty Beauty"], 0.9, "0" * 16)
    staging.client.set_model_version_tag(
        "brand-ner-staging", version, "brandloop.gate.refused_by", "threshold,confidence"
    )
    args = ["promote", version, "--from", "staging", "--to", "prod", "--reason", "release"]
    champion = prod.alias_version(CHAMPION)  # (the server is shared: earlier tests' prod)
    # When it is copy-promoted without --force
    code, _, err = _invoke(*args, *flags)
    # Then it is refused, naming the gate's rule the promotion does not check again (after
    # the rule's own verdict, when prod has a champion it does not beat)
    said = " ".join(err.split())
    assert code == 1, said
    gate = (
        f"staging's train-ner gate refused brand-ner-staging/{version} by confidence, which "
        "promote does not re-check"
    )
    assert said.startswith("error: refused: ") and gate in said
    assert prod.alias_version(CHAMPION) == champion
    # When it is forced, it is promoted, and the audit says what was overridden
    code, _, err = _invoke(*args, "--force", *flags)
    assert code == 0, err
    assert prod.alias_version(CHAMPION) not in (None, champion)
    move = [e for e in prod.audit_log() if e.alias == CHAMPION][-1]
    assert "release (forced; rule said: " in move.reason and gate in move.reason


def test_along_a_chain_of_copies_the_refusal_names_the_environment_whose_gate_ran(
    mlflow_server: MlflowService, tmp_path: Path, flags: list[str]
) -> None:
    _, prod = _registries(mlflow_server.url)
    dev = Registry(mlflow_server.url, model_name="brand-ner-dev", experiment_name="brand-ner-dev")
    # Given a dev version dev's gate refused by confidence, forced into staging
    _gold(tmp_path / "storage", "staging", GOLD_POSTS)
    _gold(tmp_path / "storage", "prod", GOLD_POSTS)
    version = register_gazetteer(dev, tmp_path, ["Glossier", "Fenty Beauty"], 0.9, "0" * 16)
    dev.client.set_model_version_tag(
        "brand-ner-dev", version, "brandloop.gate.refused_by", "confidence"
    )
    up = ["promote", version, "--from", "dev", "--to", "staging", "--reason", "try", "--force"]
    code, _, err = _invoke(*up, *flags)
    assert code == 0, err
    copied = Registry(
        mlflow_server.url, model_name="brand-ner-staging", experiment_name="brand-ner-staging"
    ).alias_version(CHAMPION)
    assert copied is not None
    # When that copy is promoted on to prod without --force
    args = ["promote", copied, "--from", "staging", "--to", "prod", "--reason", "release"]
    champion = prod.alias_version(CHAMPION)
    code, _, err = _invoke(*args, *flags)
    # Then the refusal names dev's gate, which ran, not staging's (a trial's audit blamed it)
    said = " ".join(err.split())
    assert code == 1, said
    assert f"dev's train-ner gate refused brand-ner-staging/{copied} by confidence" in said
    assert "staging's train-ner gate" not in said
    assert prod.alias_version(CHAMPION) == champion


def test_copy_promote_takes_the_environments_mlflow_and_creates_no_store(
    mlflow_server: MlflowService,
    tmp_path: Path,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staging, prod = _registries(mlflow_server.url)
    version = register_gazetteer(staging, tmp_path, ["Glossier", "Fenty Beauty"], 0.9, "0" * 16)
    _gold(tmp_path / "storage", "prod", GOLD_POSTS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["promote", version, "--from", "staging", "--to", "prod", "--reason", "release"]
    flags = ["--set", f"storage_uri={tmp_path / 'storage'}", "--set", "label_studio_api_key="]
    # When no MLflow is set at all: one line naming the store looked in; none is created
    # (a trial's run made an empty mlflow.db, then said staging had no version 1)
    code, _, err = _invoke(*args, *flags)
    assert code == 1 and f"no MLflow store at {tmp_path / 'mlflow.db'}" in err, err
    assert not (tmp_path / "mlflow.db").exists()
    # When the environments' deployment variables name two different servers: refused
    monkeypatch.setenv("BRANDLOOP_STAGING_MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("BRANDLOOP_PROD_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    code, _, err = _invoke(*args, *flags)
    assert code == 1 and "use different MLflow servers" in err, err
    # When both name the one server, as the deployments take it, the copy is promoted there
    monkeypatch.setenv("BRANDLOOP_PROD_MLFLOW_TRACKING_URI", mlflow_server.url)
    code, out, err = _invoke(*args, "--force", *flags)
    assert code == 0, err
    assert f"prod's MLflow: {mlflow_server.url} (BRANDLOOP_PROD_MLFLOW_TRACKING_URI)" in err
    assert f"copied staging brand-ner-staging/{version} -> prod" in out
    move = [e for e in prod.audit_log() if e.alias == CHAMPION][-1]
    assert f"from staging brand-ner-staging/{version}" in move.reason
