"""The repair of half-done alias moves: what to do with a pending move (pure logic)."""

from __future__ import annotations

import pytest

from ner.audit import PendingMove, Repair, RepairAction, decide_repair, is_abandoned


def move(alias: str = "champion", frm: str | None = "1", to: str | None = "2") -> PendingMove:
    return PendingMove(
        run_id="r1", alias=alias, from_version=frm, to_version=to, actor="a", started=0.0
    )


def test_alias_at_the_target_completes_the_move() -> None:
    decision = decide_repair(move(frm="1", to="2"), alias_now="2")
    assert decision.action is RepairAction.COMPLETED
    assert decision.reason == "@champion points at 2: the move happened, its audit is completed"


def test_alias_still_at_the_source_reverts_the_move() -> None:
    decision = decide_repair(move(frm="1", to="2"), alias_now="1")
    assert decision.action is RepairAction.REVERTED
    assert decision.reason == "@champion still points at 1: the move to 2 never happened"


def test_first_promotion_that_never_happened_is_reverted() -> None:
    decision = decide_repair(move(frm=None, to="1"), alias_now=None)
    assert decision.action is RepairAction.REVERTED
    assert "still points at no version" in decision.reason


def test_alias_elsewhere_reverts_the_move_and_says_where_it_points() -> None:
    decision = decide_repair(move(frm="1", to="2"), alias_now="3")
    assert decision.action is RepairAction.REVERTED
    assert decision.reason == "@champion points at 3, neither 1 nor 2: the move did not stick"


@pytest.mark.parametrize(
    ("alias_now", "expected"),
    [(None, RepairAction.COMPLETED), ("4", RepairAction.REVERTED)],
)
def test_deleting_an_alias_is_complete_once_the_alias_is_gone(
    alias_now: str | None, expected: RepairAction
) -> None:
    decision = decide_repair(move("challenger", frm="4", to=None), alias_now=alias_now)
    assert decision.action is expected


def test_a_repair_is_reported_by_the_name_of_its_move() -> None:
    repair = Repair(move=move(frm=None, to="1"), action=RepairAction.COMPLETED, reason="x")
    assert repair.name == "@champion: - -> 1 completed"
    assert Repair(move=move(), action=RepairAction.REVERTED, reason="x").name == (
        "@champion: 1 -> 2 reverted"
    )


def owned(owner: str | None) -> PendingMove:
    return PendingMove(
        run_id="r", alias="champion", from_version=None, to_version="1", actor="a",
        started=0.0, owner=owner,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("owner", "ended", "age_s", "expected"),
    [
        ("flow-a", False, 1.0, True),  # this flow run's own move (a retry)
        ("flow-b", True, 1.0, True),  # its flow run has ended
        ("flow-b", False, 1.0, False),  # its flow run is still going: leave it
        (None, False, 1.0, False),  # made outside a flow a second ago: may be in progress
        (None, False, 601.0, True),  # ... ten minutes ago: abandoned
        ("flow-b", False, 601.0, True),
    ],
)
def test_only_abandoned_moves_are_repaired(
    owner: str | None, ended: bool, age_s: float, expected: bool
) -> None:
    assert (
        is_abandoned(
            owned(owner), current_owner="flow-a", ended_owner=ended, age_s=age_s, stale_s=600.0
        )
        is expected
    )
