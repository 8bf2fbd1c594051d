"""``brandloop`` against real local servers: status, promote and rollback on an MLflow
tracking server, doctor with one service up and one down, and the demo end to end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from apps import cli
from ner.datasets import adopt_gold_set
from ner.errors import ModelNotFoundError
from ner.models import build_gazetteer, check_model_spec
from ner.registry import CHAMPION, PREVIOUS, Registry
from ner.settings import load_settings
from ner.storage import open_storage
from ner.types import Annotation, Span
from tests.support.cli import plain_env, run_cli
from tests.support.servers import (
    LOCALHOST,
    LabelStudioService,
    MlflowService,
    PrefectService,
    free_port,
)

ROOT = Path(__file__).resolve().parents[2]


def _inherited() -> dict[str, str]:
    """This process's environment without Prefect's and the deploy-time variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "BRANDLOOP_"))}


def _gold(storage_root: Path) -> str:
    storage = open_storage(str(storage_root), "dev")
    text = "new lumiora drop"  # a brand no shipped list knows: the cold start scores 0
    gold = [Annotation("g1", text, (Span(4, 11, "BRAND", "lumiora"),))]
    return adopt_gold_set(storage, gold).hash


def _register(registry: Registry, model_dir: Path) -> str:
    """A new version of ``registry``'s model (the cold-start gazetteer: content is moot)."""
    if not model_dir.exists():
        build_gazetteer().nlp.to_disk(model_dir)
    with registry.start_run("train") as run_id:
        version = registry.log_model(model_dir, run_id)[1]
    assert version is not None
    return version


@dataclass(frozen=True)
class CliState:
    registry: Registry
    versions: list[str]
    flags: list[str]
    gold_hash: str


@pytest.fixture
def setup(mlflow_server: MlflowService, tmp_path: Path, clean_env: None) -> CliState:
    """Three versions on the server (v1 F1 0.85, v2 0.92, v3 never evaluated), a gold set
    in storage, and the --set flags that point the CLI at them."""
    name = f"brand-ner-cli-{secrets.token_hex(4)}"
    registry = Registry(mlflow_server.url, model_name=name, experiment_name=name)
    gold_hash = _gold(tmp_path / "storage")
    versions = [_register(registry, tmp_path / "model") for _ in range(3)]
    registry.record_evaluation(versions[0], gold_hash, {"f1": 0.85})
    registry.record_evaluation(versions[1], gold_hash, {"f1": 0.92})
    flags = []
    for key, value in {
        "mlflow_tracking_uri": mlflow_server.url,
        "registered_model_name": name,
        "experiment_name": name,
        "storage_uri": str(tmp_path / "storage"),
        "label_studio_api_key": "",
    }.items():
        flags += ["--set", f"{key}={value}"]
    return CliState(registry, versions, flags, gold_hash)


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_promote_status_rollback_on_a_tracking_server(setup: CliState) -> None:
    registry, flags = setup.registry, setup.flags
    v1, v2, v3 = setup.versions

    # Given v1 promoted by hand with a reason
    code, out, err = _invoke("promote", v1, "--reason", "first release", *flags)
    assert code == 0, err
    assert "@champion: - -> 1  (manual: first release (rule on gold set " in out
    assert "threshold 0.8000" in out  # the rule it passed, with the threshold in force
    # When v2 (better on the same gold set) is promoted
    code, out, err = _invoke("promote", v2, "--reason", "beats v1", *flags)
    assert code == 0, err
    assert registry.alias_version(CHAMPION) == v2 and registry.alias_version(PREVIOUS) == v1
    assert "@previous: - -> 1" in out and "@champion: 1 -> 2" in out
    # (promoting it again changes nothing and succeeds: a retried release step is not a failure)
    code, out, err = _invoke("promote", v2, "--reason", "beats v1", *flags)
    assert code == 0 and f"version {v2} is already @champion: nothing changed" in out, err
    assert registry.alias_version(PREVIOUS) == v1
    # (the *_since tags follow the aliases: a trial saw champion_since left on the old one)
    assert _since(registry, v1) == {"previous"} and _since(registry, v2) == {"champion"}
    # (and v1's card no longer opens with its promotion by hand: a trial read it as champion)
    card = registry.client.get_model_version(registry.model_name, v1).description
    assert card.startswith("**Replaced** as @champion at ")
    assert f"by version {v2}: manual: beats v1 (rule on gold set " in card.splitlines()[0]
    assert card.splitlines()[2].startswith("**Promoted by hand** to @champion at ")
    # And the audit has the champion's F1 only where there was a champion (no 0.0 for none)
    moves = [e for e in registry.audit_log() if e.alias == CHAMPION]
    assert [e.to_version for e in moves] == [v1, v2]
    assert "champion_f1" not in moves[0].metrics and moves[0].metrics["challenger_f1"] == 0.85
    assert 0 <= moves[0].metrics["cold_start_f1"] <= 1  # what the first model was held to
    assert moves[1].metrics["champion_f1"] == pytest.approx(0.85)

    # Then status shows both with their gold F1 and the audited moves
    code, out, err = _invoke("status", *flags)
    assert code == 0, err
    assert "gold set: gold-" in out and f"({setup.gold_hash[:12]}, 1 post)" in out
    assert _row(out, "@champion") == ["@champion", v2, "0.9200", "ok"]
    assert _row(out, "@previous") == ["@previous", v1, "0.8500", "ok"]
    assert _row(out, "@challenger") == ["@challenger", "-", "-", "-"]
    assert "manual: beats v1" in out and "cli:" in out
    assert out.index("beats v1") < out.index("first release")  # newest move first
    assert "label studio: not configured" in out
    # And a shorter --limit says how many moves it leaves out (a trial's were cut silently)
    code, out, err = _invoke("status", "--limit", "1", *flags)
    older = re.search(r"\((\d+) older moves? not shown: --limit (\d+) shows them all\)", out)
    assert code == 0 and older, out + err
    assert int(older.group(1)) == len(registry.audit_log()) - 1 == int(older.group(2)) - 1

    # And a version never evaluated on the gold set (after a forget re-hashed it, none is: a
    # trial could then promote nothing, not even with --force) is scored now, recorded, and
    # judged by the rule: this one finds no brand of the gold set
    code, out, err = _invoke("promote", v3, "--reason", "try", *flags)
    assert f"scored version {v3} on the current gold set {setup.gold_hash[:12]}: F1 0.0000" in out
    assert code == 1 and f"refused: version {v3} F1 0.0000 < threshold" in err
    assert registry.evaluated_f1(v3, setup.gold_hash) == 0.0
    # And a worse version is refused by the rule unless forced
    code, _, err = _invoke("promote", v1, "--reason", "go back", *flags)
    assert code == 1 and f"refused: version {v1} F1 0.8500" in err
    assert registry.alias_version(CHAMPION) == v2
    # And an unknown version is named
    code, _, err = _invoke("promote", "99", "--reason", "x", *flags)
    assert code == 1 and f"has no version '99' (its versions: {v1}-{v3})" in err

    # When the champion is rolled back
    code, out, err = _invoke("rollback", "--reason", "complaints", *flags)
    assert code == 0, err
    assert "@champion: 2 -> 1  (rollback: complaints)" in out
    assert "@previous: 1 -> -  (rollback from version 2)" in out  # every alias it moved
    # (nothing of MLflow's own between the command's lines: no run or experiment links)
    assert "View run" not in out and "View experiment" not in out
    assert registry.alias_version(CHAMPION) == v1
    assert _since(registry, v1) == {"champion"} and _since(registry, v2) == set()
    moves = [(e.alias, e.from_version, e.to_version, e.actor) for e in registry.audit_log()]
    assert moves[-2][:3] == ("champion", v2, v1) and moves[-2][3].startswith("cli:")
    # And a second rollback has nowhere to go
    code, _, err = _invoke("rollback", "--reason", "again", *flags)
    assert code == 1 and "no @previous version" in err
    assert "brandloop promote VERSION --reason" in " ".join(err.split())  # the way on


def _since(registry: Registry, version: str) -> set[str]:
    """The aliases whose ``brandloop.<alias>_since`` tag ``version`` carries."""
    tags = registry.client.get_model_version(registry.model_name, version).tags
    since = [k for k in tags if k.startswith("brandloop.") and k.endswith("_since")]
    return {k.removeprefix("brandloop.").removesuffix("_since") for k in since}


def test_a_forced_promotion_says_so_on_the_version(setup: CliState) -> None:
    registry, flags = setup.registry, setup.flags
    v1, v2, _ = setup.versions
    name = registry.model_name
    # Given v1's model card, whose gate refused it, and v2 the champion
    card = f"# {name} version {v1}\n\n**Gate: refused** (not promoted) by `threshold`\n\n## Metrics"
    registry.describe_version(v1, card)
    assert _invoke("promote", v2, "--reason", "release", *flags)[0] == 0

    # When v1 (worse on the gold set) is promoted with --force, twice over a round trip
    for _ in range(2):
        code, _, err = _invoke("promote", v1, "--reason", "needed back", "--force", *flags)
        assert code == 0, err
        assert _invoke("promote", v2, "--reason", "release", *flags)[0] == 0
    code, _, err = _invoke("promote", v1, "--reason", "needed back", "--force", *flags)
    assert code == 0, err

    # Then its card says, under its title, who made it champion by hand and why, once, and
    # keeps the gate's verdict of training time below
    version = registry.client.get_model_version(name, v1)
    lines = version.description.splitlines()
    assert lines[0] == f"# {name} version {v1}" and lines[1] == ""
    assert lines[2].startswith("**Promoted by hand** to @champion at ")
    assert " by cli:" in lines[2]
    assert f": needed back (forced; rule said: version {v1} F1 0.8500" in lines[2]
    assert "manual:" not in lines[2]  # "Promoted by hand" says it once
    assert version.description.count("**Promoted by hand**") == 1
    assert "**Gate: refused** (not promoted) by `threshold`" in version.description
    # and its tags give the manual reason and who
    assert version.tags["brandloop.promotion_reason"].startswith("manual: needed back (forced")
    assert version.tags["brandloop.promoted_by"].startswith("cli:")

    # When it is rolled back, its card says so on top, the promotion by hand under it, above
    # the same verdict
    code, _, err = _invoke("rollback", "--reason", "worse in prod", *flags)
    assert code == 0, err
    version = registry.client.get_model_version(name, v1)
    lines = version.description.splitlines()
    assert lines[2].startswith("**Rolled back** from @champion at ")
    assert "by cli:" in lines[2] and ": worse in prod." in lines[2]
    assert lines[4].startswith("**Promoted by hand** to @champion at ")
    assert version.description.count("**Promoted by hand**") == 1
    assert "**Gate: refused** (not promoted) by `threshold`" in version.description
    assert version.tags["brandloop.rolled_back"] == "worse in prod"
    assert version.tags["brandloop.rolled_back_by"].startswith("cli:")
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"  # as champion_since (a trial saw two formats)
    assert re.fullmatch(iso, version.tags["brandloop.rolled_back_at"])
    # And the version the rollback made champion again says so on top of its card
    restored = registry.client.get_model_version(name, v2)
    assert restored.description.startswith("**Restored** to @champion at ")
    assert f", rolling back version {v1}: worse in prod." in restored.description
    assert restored.tags["brandloop.restored"] == "worse in prod"
    assert restored.tags["brandloop.restored_at"] == version.tags["brandloop.rolled_back_at"]


def test_a_version_the_gate_refused_by_a_rule_promote_does_not_check_needs_force(
    setup: CliState,
) -> None:
    registry, flags = setup.registry, setup.flags
    v1, v2, _ = setup.versions
    # Given v1 the champion, and v2 (better on today's gold set) refused at training time by
    # threshold and by the confidence rule (a trial promoted such a version without --force)
    assert _invoke("promote", v1, "--reason", "first", *flags)[0] == 0
    name = registry.model_name
    registry.client.set_model_version_tag(
        name, v2, "brandloop.gate.refused_by", "threshold,confidence"
    )
    # When it is promoted by hand with a threshold it misses today
    high = ["--set", "threshold=0.999"]
    code, _, err = _invoke("promote", v2, "--reason", "looks fine", *flags, *high)
    # Then both refusals are named at once (a trial met the second only once it forced)
    said = " ".join(err.split())
    assert code == 1 and f"refused: version {v2} F1 " in said and "< threshold 0.9990" in said
    assert "; train-ner's gate also refused it by confidence (--force promotes" in said
    # When it is promoted by hand, with a threshold it meets
    code, _, err = _invoke("promote", v2, "--reason", "looks fine", *flags)
    # Then it is refused, naming the rule promote does not re-check and the way out
    assert code == 1 and registry.alias_version(CHAMPION) == v1
    said = " ".join(err.split())
    assert f"refused: train-ner's gate refused version {v2} by confidence, which promote" in said
    assert "--force promotes anyway" in said
    # And a copy of another environment's version names that environment's gate (a trial's
    # staging copy was said refused by "train-ner's gate", which never ran in staging)
    registry.client.set_model_version_tag(name, v2, "brandloop.source_env", "dev")
    code, _, err = _invoke("promote", v2, "--reason", "looks fine", *flags)
    said = " ".join(err.split())
    assert (
        code == 1
        and (f"refused: dev's train-ner gate (before the copy) refused version {v2} by confidence")
        in said
    )
    registry.client.delete_model_version_tag(name, v2, "brandloop.source_env")
    # And with --force it is promoted, the audit and the version saying what was overridden
    code, out, err = _invoke("promote", v2, "--reason", "looks fine", "--force", *flags)
    assert code == 0, err
    assert "(forced; train-ner's gate refused it by confidence)" in out
    assert registry.alias_version(CHAMPION) == v2
    reason = registry.client.get_model_version(name, v2).tags["brandloop.promotion_reason"]
    assert reason == "manual: looks fine (forced; train-ner's gate refused it by confidence)"


def test_rollback_names_a_model_that_is_not_registered(setup: CliState) -> None:
    name = setup.registry.model_name
    # Given the model's name misspelled (the later --set wins)
    typo = ["--set", f"registered_model_name={name}x"]
    code, _, err = _invoke("rollback", "--reason", "x", *setup.flags, *typo)
    # Then the error says the model is not there and names the closest one
    assert code == 1
    assert f"no registered model '{name}x' in " in err and f"did you mean '{name}'?" in err
    assert "NER_REGISTERED_MODEL_NAME" in err and "no @previous" not in err


def _row(output: str, first: str) -> list[str]:
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_a_model_that_does_not_exist_is_refused_before_serving_or_fetching(
    setup: CliState, tmp_path: Path
) -> None:
    name, url = setup.registry.model_name, setup.registry.tracking_uri
    check_model_spec(f"models:/{name}/{setup.versions[0]}", url)  # exists: no error
    check_model_spec(f"models:/{name}/latest", url)
    for spec in (f"models:/{name}/99", f"models:/{name}/abc", f"models:/{name}@nope"):
        with pytest.raises(ModelNotFoundError):
            check_model_spec(spec, url)
    stored = sorted((tmp_path / "storage").rglob("*"))
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "p1", "text": "new Fenty gloss"}\n', encoding="utf-8")
    for args in (
        ["serve", "--model", f"models:/{name}/99", "--set", "serve_api_key=" + "t0ken" * 4],
        ["apply", "--model", f"models:/{name}/99", "--source", "jsonl", "--input-uri", str(posts)],
        ["apply", "--model", "gazeteer", "--source", "jsonl", "--input-uri", str(posts)],
    ):
        code, out, err = _invoke(*args, *setup.flags)
        assert code == 1 and out == "", out
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "does not exist" in lines[0] or "unknown model 'gazeteer'" in lines[0], err
    # nothing fetched: no batch, no checkpoint of the file in storage
    assert sorted((tmp_path / "storage").rglob("*")) == stored


@pytest.mark.slow
def test_apply_exits_4_when_every_line_it_read_was_rejected(tmp_path: Path) -> None:
    # Given a file whose every line is rejected (trial BA's apply said so, then exited 0)
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "a\\tb", "text": "Dior"}\n{"text": "no id"}\n', encoding="utf-8")
    flags = ["--set", f"storage_uri={tmp_path / 'store'}"]
    flags += ["--set", f"mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    args = ["apply", "--source", "jsonl", "--input-uri", str(posts), "--model", "gazetteer"]
    # When apply reads it, it names both lines and exits 4: no post was sent
    done = run_cli(plain_env(tmp_path), *args, *flags, cwd=tmp_path)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == cli.APPLY_ALL_REJECTED_EXIT == 4, said[-3000:]
    assert "2 lines rejected, each with its reason in file://" in said
    assert "holds an invisible or control character (U+0009)" in said
    # And with a good line appended, the next run sends it and exits 0 (its lines are new)
    with posts.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "p3", "text": "new Fenty gloss"}\n')
    done = run_cli(plain_env(tmp_path), *args, *flags, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_doctor_with_mlflow_up_and_label_studio_down(
    mlflow_server: MlflowService, tmp_path: Path, clean_env: None
) -> None:
    down = f"http://{LOCALHOST}:{free_port()}"
    code, out, _ = _invoke(
        "doctor",
        "--set",
        f"mlflow_tracking_uri={mlflow_server.url}",
        "--set",
        f"label_studio_url={down}",
        "--set",
        "label_studio_api_key=some-key",
        "--set",
        f"storage_uri={tmp_path / 'storage'}",
        "--set",
        f"registered_model_name=brand-ner-doctor-{secrets.token_hex(4)}",
    )
    assert code == 1
    lines = out.splitlines()
    assert f"✓ mlflow  {mlflow_server.url} reachable" in lines
    assert any(line.startswith("! champion  no version of brand-ner-doctor-") for line in lines)
    ls_line = next(line for line in lines if line.startswith("✗ label studio"))
    assert f"{down} unreachable" in ls_line and "NER_LABEL_STUDIO_URL" in ls_line
    assert any(line.startswith("✓ storage") for line in lines)
    assert any(line.startswith("! x token  not set") for line in lines)
    assert any(line.startswith("✓ recipe  fast") for line in lines)
    assert any(line.startswith("! gold set  none frozen yet") for line in lines)
    assert any(line.startswith("✓ brand list  the shipped lists: ") for line in lines)
    assert len([line for line in lines if line[:1] in "✓!✗"]) == 11
    # the probe object is gone again, and so are the folders it had to create
    assert not (tmp_path / "storage").exists()


def test_doctor_names_a_champion_whose_files_the_server_lost(
    setup: CliState, mlflow_server: MlflowService
) -> None:
    from urllib.parse import urlparse

    # Given v1 @champion on a tracking server that serves the artifacts
    v1 = setup.versions[0]
    assert _invoke("promote", v1, "--reason", "first", *setup.flags)[0] == 0
    name = setup.registry.model_name
    _, out, _ = _invoke("doctor", *setup.flags)
    line = next(line for line in out.splitlines() if "champion" in line)
    assert line.startswith(f"✓ champion  {name} v{v1}, files in mlflow-artifacts:/"), out
    # When the server's artifact store loses v1's files
    uri = setup.registry.version_files(v1)[0]
    shutil.rmtree(mlflow_server.artifacts_dir / urlparse(uri).path.lstrip("/"))
    # Then doctor fails on it, naming the version, where its files were and what to do
    code, out, _ = _invoke("doctor", *setup.flags)
    line = next(line for line in out.splitlines() if "champion" in line)
    assert code == 1, out
    assert line.startswith(f"✗ champion  {name} v{v1} is registered, but its files are missing")
    assert uri in line and "→ restore the artifact store, or promote a version" in line
    # And promote refuses to make it champion again, even forced (a trial's version already
    # scored on the gold set was promoted without its files, and the server fell behind)
    v2 = setup.versions[1]
    assert _invoke("promote", v2, "--reason", "next", "--force", *setup.flags)[0] == 0
    # (doctor now warns that @previous, v1, has lost its files: a rollback would be refused)
    code, out, _ = _invoke("doctor", *setup.flags)
    line = next(line for line in out.splitlines() if "champion" in line)
    assert line.startswith(f"! champion  {name} v{v2}, files in "), out
    assert f"but @previous v{v1} has lost its files (no MLmodel): a rollback would be" in line
    # (and status shows it in the aliases' files column: only doctor said so, trial AF)
    code, out, _ = _invoke("status", *setup.flags)
    previous, champion = _row(out, "@previous"), _row(out, "@champion")
    assert previous[1] == v1 and previous[-2:] == ["missing:", "MLmodel"], out
    assert champion[1] == v2 and champion[-1] == "ok", out
    code, _, err = _invoke("promote", v1, "--reason", "back", "--force", *setup.flags)
    said = " ".join(err.split())
    assert code == 1 and f"version {v1} is registered, but its files are missing from {uri}" in said
    assert "(no MLmodel)" in said
    assert setup.registry.alias_version(CHAMPION) == v2
    # And so is a version whose spaCy folder alone was deleted, its MLmodel kept (trial AC)
    v3 = setup.versions[2]
    uri3 = setup.registry.version_files(v3)[0]
    assert setup.registry.version_files(v3)[1] == []
    shutil.rmtree(mlflow_server.artifacts_dir / urlparse(uri3).path.lstrip("/") / "model.spacy")
    assert setup.registry.version_files(v3)[1] == ["model.spacy/config.cfg"]
    code, _, err = _invoke("promote", v3, "--reason", "back", "--force", *setup.flags)
    said = " ".join(err.split())
    assert code == 1 and f"files are missing from {uri3} (no model.spacy/config.cfg)" in said
    assert setup.registry.alias_version(CHAMPION) == v2
    # And a rollback to a version without its files is refused before any alias moves
    assert setup.registry.alias_version("previous") == v1
    code, _, err = _invoke("rollback", "--reason", "bad v2", *setup.flags)
    said = " ".join(err.split())
    assert code == 1 and f"cannot roll back to version {v1} (@previous)" in said
    assert f"files are missing from {uri} (no MLmodel)" in said
    assert setup.registry.alias_version(CHAMPION) == v2


@pytest.mark.slow
@pytest.mark.e2e
def test_demo_end_to_end_keeps_its_state_in_its_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "mlflow.db").write_text("the user's own registry")
    env = plain_env(tmp_path)
    # a short training; the cold start (F1 0.70) is below the threshold, the challenger (0.83
    # after 10 epochs) above
    args = ["demo", "--rounds", "2", "--set", "max_epochs=10", "--set", "threshold=0.75"]
    done = run_cli(env, *args, cwd=work, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # nothing a user cannot act on: MLflow's registration notices, Prefect's server hint
    for notice in ("Successfully registered model", "Created version '", "dedicated Prefect"):
        assert notice not in out + done.stderr, done.stderr[-3000:]
    for line in (
        "  starting Prefect's temporary API (its first start sets up a database) …",
        "▶ feedback-loop",
        "✓ fetched posts",
        "✓ predicted brands",
        "✓ replay annotator labelled the posts",
        "✓ split the labels into the gold set and the training pool",
        "✓ trained the challenger",
        "✓ applied the promotion rule",
    ):
        assert line in out, out
    assert "| round | posts sent |" in out and "loop status: threshold_met" in out
    # the champion's line names the gold set's size (a forget that shrinks it shows there)
    assert re.search(r"the cold start \S+: F1 0\.\d{4} on the gold set \w{12} \(75 posts\)", out)
    # training's progress gives a loss per batch, comparable from one line to the next
    epoch = re.search(
        r"epoch \d+/10, step \d+: loss \d+\.\d\d per batch, held-out slice F1 [01]\.\d{3} "
        r"\((\d+) posts\)",  # its size, so a score of a one-post slice is read as such
        out,
    )
    assert epoch and int(epoch.group(1)) > 1, out
    # the predict step says how it ran in words ("one process"), not as "1 shards"
    assert "predicted 360 posts in " in out and " 1 shards" not in out, out
    assert "| 1 | 360 | 360 | 0.7" in out and "| yes (v1) | v1 | promoted |" in out
    # the user's files are untouched; the demo's state is under .brandloop/demo only
    assert (work / "mlflow.db").read_text() == "the user's own registry"
    assert sorted(p.name for p in work.iterdir()) == [".brandloop", "mlflow.db"]
    demo = work / ".brandloop" / "demo"
    assert {p.name for p in demo.iterdir()} == {cli.DEMO_MARKER, *cli.DEMO_ENTRIES}
    # And status, as the demo's last lines say, reads the demo's champion and evaluations
    flags = [
        a
        for k, v in cli.demo_overrides(Path(".brandloop/demo")).items()
        for a in ("--set", f"{k}={v}")
    ]
    status = run_cli(env, "status", *flags, cwd=work)
    assert status.returncode == 0, status.stderr[-3000:]
    # (named by a path the user can type: the venv's bin folder, not on PATH after make)
    assert re.search(rf"next: \S*bin/brandloop status {re.escape(' '.join(flags))}", out), out
    assert re.search(r"bin/mlflow ui --backend-store-uri sqlite:///\S+ --port 5000", out), out
    # and how long it took: the rounds, and the whole command (a trial timed 28 s more)
    took = re.search(r"time: (\d+) s for the rounds, (\d+) s in all", out)
    assert took and int(took.group(1)) <= int(took.group(2)), out
    champion = next(line.split() for line in status.stdout.splitlines() if "@champion" in line)
    assert champion[:2] == ["@champion", "1"] and float(champion[2]) > 0.5
    # And evaluate scores that champion on that gold set as the gate did (same F1)
    scored = run_cli(env, "evaluate", "@champion", *flags, cwd=work)
    assert scored.returncode == 0, scored.stderr[-3000:]
    said = " ".join(scored.stdout.split())
    assert re.search(r"brand-ner-dev/1 on gold set gold-\S+ \(\w{12}, 75 posts, ", said), said
    micro = re.search(r"micro (\S+) (\S+) (\S+) ", said)
    assert micro and micro.group(3) == champion[2], said
    assert re.search(r"F1 0\.\d{4} \[0\.\d{4}, [01]\.\d{4}\] \(95% interval\)", said), said
    assert any(
        "challenger (training run)" in line and "brand-ner-dev/1" in line
        for line in status.stdout.splitlines()
    )
    # And --keep continues from that state: nothing removed, the output says whose rounds its
    # table numbers; the bundled posts were all read, so no round is played
    kept = run_cli(env, *args, "--keep", cwd=work, timeout=600)
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert "removed the last demo" not in kept.stdout
    assert "continuing the last demo" in kept.stdout, kept.stdout
    assert "no round was played" in kept.stdout, kept.stdout
    assert "loop status: no_new_posts" in kept.stdout, kept.stdout


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


#: How a signal reaches the command: its whole process group (Ctrl-C in a terminal,
#: ``kill -- -PGID``), the command alone (``kill PID``), or every process of it, its temporary
#: API too (systemd's default ``KillMode``: the unit's control group).
SIGNALS = [
    pytest.param(signal.SIGINT, "group", id="ctrl-c-to-the-group"),
    pytest.param(signal.SIGTERM, "command", id="sigterm-to-the-command"),
    pytest.param(signal.SIGTERM, "group", id="sigterm-to-the-group"),
    pytest.param(signal.SIGTERM, "unit", id="sigterm-to-every-process"),
    pytest.param(signal.SIGKILL, "command", id="sigkill-to-the-command"),
]


def _wait_until_gone(pids: list[int], timeout: float) -> list[int]:
    """The processes of ``pids`` still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "target"), SIGNALS)
def test_a_signal_ends_a_waiting_loop_and_its_temporary_prefect_api(
    tmp_path: Path, signum: signal.Signals, target: str
) -> None:
    # Given a loop waiting for labels on Prefect's temporary API (no PREFECT_API_URL)
    env = plain_env(tmp_path)
    posts = ROOT / "ner" / "resources" / "demo" / "posts.jsonl"
    args = ["loop", "--source", "jsonl", "--input-uri", str(posts), "--posts-per-round", "5"]
    args += ["--set", f"storage_uri={tmp_path / 'storage'}"]
    args += ["--set", f"mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    command = [sys.executable, "-m", "apps.cli", *args]
    kwargs: dict[str, Any] = {"cwd": tmp_path, "env": env, "text": True}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs
    ) as proc:
        deadline = time.monotonic() + 300
        # (just as the round's apply-ner run is over: Prefect's engine drops a Ctrl-C that
        # arrives while it ends a subflow, which apps.signals raises again)
        while "COMPLETED" not in _flow_run_states(tmp_path / "prefect"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(1)
        api = _children(proc.pid)
        assert api, "no temporary Prefect API under the command"
        # When the signal reaches the command's process group, the command alone, or every
        # process of it (then the API stops at once and the run cannot be recorded)
        if target == "command":
            proc.send_signal(signum)
        else:
            os.killpg(proc.pid, signum)
        if target == "unit":
            for pid in api:
                os.kill(pid, signum)
        # (a group SIGTERM took about 150 s before the API had a session of its own; a SIGTERM
        # to every process 211 s in trial AV, before the command's 15 s grace)
        _, err = proc.communicate(timeout=60)
    # Then the command ends within seconds, says so, and leaves no API behind
    assert proc.returncode == (-signum if signum == signal.SIGKILL else 128 + signum), err[-3000:]
    if signum != signal.SIGKILL:
        assert f"interrupted ({signum.name})" in err
    if target != "unit" and signum != signal.SIGKILL:
        # and its run is recorded as crashed, not running for good (trial AU, Ctrl-C)
        states = _flow_run_states(tmp_path / "prefect")
        assert "CRASHED" in states and not {"RUNNING", "PENDING"} & set(states), states
    # (with SIGKILL the API notices its command is gone and stops itself)
    assert not _wait_until_gone(api, timeout=30)


def _flow_run_states(prefect_home: Path) -> list[str]:
    """The state of each flow run in the SQLite database of Prefect's temporary API (none
    before the API has made its database)."""
    path = prefect_home / "prefect.db"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return [row[0] for row in db.execute("SELECT state_type FROM flow_run")]
        except sqlite3.OperationalError:  # its tables not made yet
            return []


@pytest.mark.slow
def test_ctrl_c_during_training_records_the_crash_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # Given the demo training its first challenger on Prefect's temporary API
    env = {**plain_env(tmp_path), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    command = [sys.executable, "-m", "apps.cli", "demo", "--dir", str(tmp_path / "demo")]
    kwargs: dict[str, Any] = {"cwd": tmp_path, "env": env, "text": True}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs
    ) as proc:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "tmp").glob("brandloop-train-request-*/request.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.5)
        api = _children(proc.pid)
        time.sleep(2)
        # When Ctrl-C reaches the terminal's process group
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    # Then the command ends, says so; its runs are recorded as crashed (none left running),
    # its training lease is released, and neither API nor temporary folder is left
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted (SIGINT)" in err
    states = _flow_run_states(tmp_path / "prefect")
    assert "CRASHED" in states and not {"RUNNING", "PENDING"} & set(states), states
    newest = [sorted(d.glob("*.json"))[-1] for d in (tmp_path / "demo").rglob("leases/*")]
    assert newest and all(json.loads(p.read_text())["released"] for p in newest), newest
    assert not _wait_until_gone(api, timeout=30)
    deadline = time.monotonic() + 30
    while (left := list((tmp_path / "tmp").glob("brandloop-*"))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left


def test_labelstudio_setup_status_and_counts_on_a_real_server(
    label_studio: LabelStudioService, tmp_path: Path, clean_env: None
) -> None:
    title = f"cli-{secrets.token_hex(4)}"
    settings = {
        "label_studio_url": label_studio.url,
        "label_studio_api_key": label_studio.token,
        "label_studio_project": title,
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "storage_uri": str(tmp_path / "storage"),
    }
    flags = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    # Before setup there is no project, and status creates none
    code, _, err = _invoke("labelstudio", "status", *flags)
    assert code == 1 and f"no project titled '{title}'" in err
    hook_url = f"http://{LOCALHOST}:{free_port()}/webhook"
    # When set up (twice: it is idempotent)
    code, out, err = _invoke("labelstudio", "setup", "--webhook-url", hook_url, *flags)
    assert code == 0, err
    assert f"'{title}' on {label_studio.url} (labels: BRAND)" in out
    assert f"posts annotation events (created, updated, deleted) to {hook_url}" in out
    code, again, err = _invoke("labelstudio", "setup", "--webhook-url", hook_url, *flags)
    # Then the first run says it created the project, the second that it found the same one
    assert code == 0, err
    assert out.startswith("created project ") and again.startswith("found project ")
    assert again.removeprefix("found") == out.removeprefix("created")
    # And setup with another label says it added it, and a later setup without it says
    # that the project offers a label the pull would reject (a trial saw only "found")
    code, more, err = _invoke("labelstudio", "setup", *flags, "--set", "labels=BRAND,PRODUCT")
    assert code == 0, err
    assert "added the labels PRODUCT to its labelling config" in more
    code, back, err = _invoke("labelstudio", "setup", *flags)
    assert code == 0, err
    assert "(labels: BRAND, PRODUCT)" in back and "added the labels" not in back
    assert "the project also offers PRODUCT, which NER_LABELS (BRAND) has not" in back
    client_module = cli.labelstudio_client_module()  # moving into ner/labelstudio/
    project = client_module.LabelStudioProject.connect(load_settings(**settings))
    hooks = project.client.webhooks.list(project=str(project.project_id))
    assert [h.url for h in hooks if h.project == project.project_id] == [hook_url]
    # And people label one task and skip another of three
    ids = project.import_tasks(
        [{"data": {"post_id": f"p{n}", "text": f"post {n} glossier"}} for n in range(3)]
    )
    project.client.annotations.create(id=ids[0], result=[])
    project.client.annotations.create(id=ids[1], result=[], was_cancelled=True)
    # Then both status commands count them
    code, out, err = _invoke("labelstudio", "status", *flags)
    assert code == 0, err
    assert f"project {project.project_id} '{title}'" in out
    assert "3 tasks, 1 labelled, 1 skipped" in out
    code, out, err = _invoke("status", *flags)
    assert code == 0, err
    assert "label studio: project" in out and "3 tasks, 1 labelled, 1 skipped" in out
    # And doctor finds the server and accepts the key
    code, out, _ = _invoke("doctor", *flags)
    assert f"✓ label studio  {label_studio.url} reachable" in out
    assert "✓ label studio key  accepted" in out


def _delete_block(server: PrefectService, name: str) -> None:
    """Delete the Secret block ``name`` on ``server`` if it exists (Prefect REST API)."""
    url = f"{server.api_url}/block_types/slug/secret/block_documents/name/{name}"
    found = requests.get(url, timeout=10)
    if found.status_code == 200:
        gone = requests.delete(f"{server.api_url}/block_documents/{found.json()['id']}", timeout=10)
        assert gone.status_code == 204, gone.text


def test_deploy_prepares_an_environment_on_a_prefect_server(
    prefect_server: PrefectService, tmp_path: Path
) -> None:
    token = f"sentinel-{secrets.token_hex(8)}"
    deploy_env = {
        "BRANDLOOP_PROJECT_DIR": str(ROOT),
        "BRANDLOOP_DEV_STORAGE_URI": str(tmp_path / "storage"),
        "BRANDLOOP_DEV_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "BRANDLOOP_DEV_X_BEARER_TOKEN": token,
    }
    # A missing deploy-time variable is listed and named, and nothing is done
    partial = {k: v for k, v in deploy_env.items() if k != "BRANDLOOP_DEV_STORAGE_URI"}
    done = run_cli({**_inherited(), **prefect_server.env(), **partial}, "deploy", "--env", "dev")
    assert done.returncode == 1
    assert "missing: BRANDLOOP_DEV_LABEL_STUDIO_URL" in done.stdout
    assert "missing: BRANDLOOP_DEV_STORAGE_URI" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("error: 2 deploy-time variable(s)")
    # Without a Prefect server there is nothing to deploy to
    full = {**deploy_env, "BRANDLOOP_DEV_LABEL_STUDIO_URL": "http://127.0.0.1:9"}
    done = run_cli(
        {**_inherited(), **full, "PREFECT_HOME": str(tmp_path / "ph")}, "deploy", "--env", "dev"
    )
    assert done.returncode == 1
    assert "error: PREFECT_API_URL is not set" in done.stderr
    # With the server, the pool and the Secret blocks are made (no secret printed)
    _delete_block(prefect_server, "label-studio-api-key-dev")  # another test may have made it
    args = ("deploy", "--env", "dev", "--no-deploy", "--secrets-from-env")
    done = run_cli({**_inherited(), **prefect_server.env(), **full}, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "secret blocks: x-bearer-token-dev saved, label-studio-api-key-dev " in done.stdout
    # (and each pool's fate: a trial read "work pools created: none" as nothing set up)
    assert re.search(r"work pools: brandloop-dev (created|exists);", done.stdout), done.stdout
    # (the Label Studio key was not given: its block is new and empty, and the output says so)
    assert "note: Secret block label-studio-api-key-dev was created empty" in done.stdout
    assert token not in done.stdout + done.stderr
    pool = requests.get(f"{prefect_server.api_url}/work_pools/brandloop-dev", timeout=10)
    assert pool.status_code == 200 and pool.json()["type"] == "process"
