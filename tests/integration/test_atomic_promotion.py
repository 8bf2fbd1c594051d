"""Alias moves and their audit records agree, even when MLflow dies between the two.

Each test breaks a private MLflow server at an exact point of an alias move, by wrapping
:meth:`ner.registry.Registry._move_alias` (the move itself still runs against the real
server): just after the move (before its audit is completed), or just before it (after its
intent was written). Then the repair runs as it would in production: the retry of the
promote task, the next train-ner run, or a retried rollback. After it, every alias move has
exactly one FINISHED audit record, no audit run is left RUNNING, and the repair is reported
by name.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from flows.context import flow_run_id
from flows.train_ner import TrainStatus, train_ner
from ner.audit import MOVE_STATE_TAG, OWNER_TAG
from ner.errors import PromotionError, RegistryError
from ner.registry import Registry, decide
from tests.support import outages
from tests.support.flows import attempts
from tests.support.models import register_gazetteer
from tests.support.outages import failed_run, fault_once, labelled_posts, pause_for
from tests.support.servers import MlflowService, PrefectService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOLD = "a" * 64

# Fixtures: a private MLflow server (this module's own instance), the session's Prefect
# server as the API, MLflow's client retries off.
own_mlflow = outages.own_mlflow
fail_fast_mlflow = outages.fail_fast_mlflow


def break_move(
    monkeypatch: pytest.MonkeyPatch, alias: str, fault: Callable[[], None], *, after: bool
) -> Callable[[], None]:
    """Run ``fault`` once, just after (or before) the first move of ``@alias``; returns a
    function that removes the wrapper."""

    def moves_alias(registry: Registry, moved: str, *args: Any) -> bool:
        return moved == alias

    return fault_once(monkeypatch, Registry, "_move_alias", fault, after=after, when=moves_alias)


def champion_and_better(registry: Registry, tmp_path: Path) -> tuple[str, str]:
    """Version 1 promoted (F1 0.5), version 2 registered and evaluated (F1 0.9)."""
    v1 = register_gazetteer(registry, tmp_path, ["Glossier"], 0.5, GOLD)
    registry.promote(v1, gold_hash=GOLD, decision=decide(0.5, None, 0.2), metrics={})
    v2 = register_gazetteer(registry, tmp_path, ["Glossier", "Fenty Beauty"], 0.9, GOLD)
    return v1, v2


def fresh_champion(mlflow: MlflowService, tmp_path: Path, prefix: str) -> tuple[Registry, str, str]:
    """A registry of a model of its own on ``mlflow``, with :func:`champion_and_better`."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    registry = Registry(mlflow.url, model_name=name, experiment_name=name)
    return (registry, *champion_and_better(registry, tmp_path))


def moves(registry: Registry) -> list[tuple[str, str | None, str | None]]:
    """The audit log as ``(alias, from, to)``."""
    return [(e.alias, e.from_version, e.to_version) for e in registry.audit_log()]


def version_tags(registry: Registry, version: str) -> dict[str, str]:
    return dict(registry.client.get_model_version(registry.model_name, version).tags)


def test_mlflow_killed_between_the_champion_move_and_its_audit_then_the_next_run_completes_it(
    own_mlflow: MlflowService,
    prefect: PrefectService,
    fail_fast_mlflow: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given labelled posts, no champion yet, and MLflow killed right after @champion moved
    settings = labelled_posts(tmp_path, own_mlflow, "killed-move")
    name = settings["registered_model_name"]
    restore = break_move(monkeypatch, "champion", own_mlflow.server.kill, after=True)
    # When train-ner runs, then it fails: the audit cannot be completed, nor retried
    state: Any = train_ner(source="storage", overrides=settings, return_state=True)
    flow_run_id = failed_run(state, RegistryError)
    assert attempts(prefect, flow_run_id, "promote_if_better") == [4]

    # When MLflow is back: the half-done move of the issue (2 moves, 1 audit record)
    restore()
    own_mlflow.restart()
    registry = Registry(own_mlflow.url, model_name=name, experiment_name=name)
    assert registry.alias_version("champion") == "1"
    assert registry.alias_version("challenger") == "1"
    assert moves(registry) == [("challenger", None, "1")]
    [pending] = registry.pending_moves()
    assert pending.name == "@champion: - -> 1"
    assert registry.client.get_run(pending.run_id).info.status == "RUNNING"
    assert "brandloop.champion_since" not in version_tags(registry, "1")

    # When the next train-ner run starts (a threshold the champion meets: no training)
    nxt = train_ner(source="storage", overrides={**settings, "threshold": 0.0})
    # Then it reports the repair by name, and the alias and its audit record agree
    assert nxt.status == TrainStatus.THRESHOLD_MET
    assert nxt.repaired == ["@champion: - -> 1 completed"]
    assert registry.alias_version("champion") == "1"
    assert moves(registry) == [
        ("challenger", None, "1"),
        ("champion", None, "1"),
        ("challenger", "1", None),
    ]
    run = registry.client.get_run(pending.run_id)
    assert (run.info.status, run.data.tags[MOVE_STATE_TAG]) == ("FINISHED", "done")
    assert run.data.tags[OWNER_TAG] == flow_run_id
    assert registry.alias_version("challenger") is None
    assert "brandloop.champion_since" in version_tags(registry, "1")
    assert registry.pending_moves() == []


def test_a_retry_after_the_move_completes_the_audit_instead_of_skipping_it(
    own_mlflow: MlflowService,
    prefect: PrefectService,
    fail_fast_mlflow: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given MLflow requests that time out after 2 s, and MLflow frozen for 3 s right after
    # @champion moved: completing the audit times out, the promote task is retried
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = labelled_posts(tmp_path, own_mlflow, "retried-move")
    name = settings["registered_model_name"]

    break_move(monkeypatch, "champion", lambda: pause_for(own_mlflow, 3.0), after=True)
    # When train-ner runs
    state: Any = train_ner(source="storage", overrides=settings, return_state=True)
    # Then it completed: the retry found the alias already moved and completed its audit
    assert state.is_completed(), state
    summary = state.result()
    assert summary.status == TrainStatus.PROMOTED
    assert summary.repaired == ["@champion: - -> 1 completed"]
    [tries] = attempts(prefect, str(state.state_details.flow_run_id), "promote_if_better")
    assert tries >= 2
    # And each of the 3 alias moves has exactly one audit record, none is left open
    registry = Registry(own_mlflow.url, model_name=name, experiment_name=name)
    assert moves(registry) == [
        ("challenger", None, "1"),
        ("champion", None, "1"),
        ("challenger", "1", None),
    ]
    assert registry.pending_moves() == []
    assert registry.alias_version("champion") == "1"
    assert registry.alias_version("challenger") is None
    assert "brandloop.champion_since" in version_tags(registry, "1")


@flow(name="promote-once")
def promote_once(tracking_uri: str, name: str, version: str) -> None:
    """A promotion made by a flow run (its id on the audit runs), as train-ner makes it."""
    registry = Registry(tracking_uri, model_name=name, experiment_name=name)
    registry.promote(
        version,
        gold_hash=GOLD,
        decision=decide(0.9, 0.5, 0.2),
        metrics={"challenger_f1": 0.9},
        actor="test",
        tags={OWNER_TAG: flow_run_id() or ""},
    )


def test_a_pending_move_whose_alias_never_moved_is_reverted_and_the_alias_kept(
    own_mlflow: MlflowService,
    prefect: PrefectService,
    fail_fast_mlflow: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given version 1 the champion and version 2 evaluated, better
    settings = labelled_posts(tmp_path, own_mlflow, "never-moved")
    name = settings["registered_model_name"]
    registry = Registry(own_mlflow.url, model_name=name, experiment_name=name)
    v1, v2 = champion_and_better(registry, tmp_path)
    # When a flow promotes version 2 and MLflow is killed after its intent, before the move
    restore = break_move(monkeypatch, "champion", own_mlflow.server.kill, after=False)
    state: Any = promote_once(own_mlflow.url, name, v2, return_state=True)
    assert state.is_failed(), state
    restore()
    own_mlflow.restart()
    # Then the intent is pending and @champion did not move
    [pending] = [m for m in registry.pending_moves() if m.alias == "champion"]
    assert pending.name == f"@champion: {v1} -> {v2}"
    assert registry.alias_version("champion") == v1

    # When the next train-ner run starts (a threshold the champion meets: no training)
    nxt = train_ner(source="storage", overrides={**settings, "threshold": 0.0})
    # Then it reverted the intent, by name, and left @champion where it was
    assert nxt.repaired == [f"@champion: {v1} -> {v2} reverted"]
    assert registry.alias_version("champion") == v1
    run = registry.client.get_run(pending.run_id)
    assert (run.info.status, run.data.tags[MOVE_STATE_TAG]) == ("FAILED", "reverted")
    assert run.data.tags["brandloop.end_reason"] == (
        f"reverted: @champion still points at {v1}: the move to {v2} never happened"
    )
    assert ("champion", v1, v2) not in moves(registry)
    assert registry.pending_moves() == []
    assert "brandloop.champion_since" not in version_tags(registry, v2)


def test_a_rollback_killed_after_the_champion_move_is_finished_by_its_retry(
    own_mlflow: MlflowService,
    fail_fast_mlflow: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given version 2 the champion, version 1 the previous one
    registry, v1, v2 = fresh_champion(own_mlflow, tmp_path, "rollback")
    registry.promote(v2, gold_hash=GOLD, decision=decide(0.9, 0.5, 0.2), metrics={})
    # When a rollback is interrupted by MLflow dying right after @champion moved back
    restore = break_move(monkeypatch, "champion", own_mlflow.server.kill, after=True)
    with pytest.raises(RegistryError, match="the alias moved"):
        registry.rollback(actor="oncall", reason="bad slang")
    restore()
    own_mlflow.restart()
    assert registry.alias_version("champion") == registry.alias_version("previous") == v1
    # And the same rollback is retried
    event = registry.rollback(actor="oncall", reason="bad slang")
    # Then it completed the champion move's audit and finished the rollback
    assert (event.from_version, event.to_version) == (v2, v1)
    assert registry.alias_version("champion") == v1
    assert registry.alias_version("previous") is None
    assert moves(registry)[-2:] == [("champion", v2, v1), ("previous", v1, None)]
    assert [m for m in moves(registry) if m[0] == "champion"] == [
        ("champion", None, v1),
        ("champion", v1, v2),
        ("champion", v2, v1),
    ]
    assert registry.pending_moves() == []
    assert version_tags(registry, v2)["brandloop.rolled_back"] == "bad slang"


def test_a_promotion_killed_before_the_champion_move_leaves_previous_to_the_next_rollback(
    own_mlflow: MlflowService,
    fail_fast_mlflow: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given version 1 the champion (nothing before it) and version 2 evaluated, better
    registry, v1, v2 = fresh_champion(own_mlflow, tmp_path, "halfway")
    # When a promotion of version 2 moves @previous, and MLflow dies before @champion moves
    # (a trial's: @previous stayed on the champion, and rollback then refused)
    restore = break_move(monkeypatch, "champion", own_mlflow.server.kill, after=False)
    with pytest.raises(RegistryError):
        registry.promote(v2, gold_hash=GOLD, decision=decide(0.9, 0.5, 0.2), metrics={})
    restore()
    own_mlflow.restart()
    assert registry.alias_version("champion") == registry.alias_version("previous") == v1
    # Then a rollback puts @previous back where it was, audited, and says there is nothing
    # before version 1 to roll back to
    with pytest.raises(PromotionError, match="no @previous version"):
        registry.rollback(actor="oncall", reason="bad slang")
    assert registry.alias_version("champion") == v1
    assert registry.alias_version("previous") is None
    assert moves(registry)[-2:] == [("previous", None, v1), ("previous", v1, None)]
    undone = registry.audit_log()[-1]
    assert undone.reason.startswith(f"undone: version {v1} was not replaced (replaced by version")
    # And the promotion, made again, moves both aliases
    registry.promote(v2, gold_hash=GOLD, decision=decide(0.9, 0.5, 0.2), metrics={})
    assert (registry.alias_version("champion"), registry.alias_version("previous")) == (v2, v1)
    assert registry.pending_moves() == []


def test_a_champion_move_mlflow_refuses_puts_previous_back_at_once(
    own_mlflow: MlflowService,
    fail_fast_mlflow: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.exceptions import MlflowException

    # Given version 1 the champion and version 2 evaluated, better
    registry, v1, v2 = fresh_champion(own_mlflow, tmp_path, "refused")

    def refuse() -> None:
        raise MlflowException("the registry refused the alias")

    # When MLflow, still up, refuses the champion move of a promotion of version 2
    restore = break_move(monkeypatch, "champion", refuse, after=False)
    with pytest.raises(RegistryError, match="alias move @champion"):
        registry.promote(v2, gold_hash=GOLD, decision=decide(0.9, 0.5, 0.2), metrics={})
    restore()
    # Then @previous, moved first, is put back at once, and no move is left open
    assert registry.alias_version("champion") == v1
    assert registry.alias_version("previous") is None
    assert moves(registry)[-2:] == [("previous", None, v1), ("previous", v1, None)]
    assert registry.pending_moves() == []
