"""Alias moves as intents: the audit record of a move is written before the move, completed
after it, and repaired when a crash left it in between.

An audited alias move (:meth:`ner.registry.Registry.set_alias`) has three steps:

1. **intent**: an audit run is opened (MLflow status RUNNING) with the move's alias, from and
   to version, actor, reason, gold-set hash and ``brandloop.move_state = pending``;
2. **move**: ``@alias`` is pointed at the version (or deleted);
3. **completion**: the version gets its ``<alias>_since`` tag, the state becomes ``done``
   and the run is ended FINISHED (the last write: a FINISHED audit run is a whole record).

A crash between the steps leaves the intent pending. The repair reads the alias as it is
now and decides (:func:`decide_repair`, pure): if the alias points at the intent's target
the move happened and its audit is completed; otherwise it never happened (or did not stick)
and the intent is ended FAILED with ``move_state = reverted``. The audit log lists FINISHED
runs only, so after a repair every alias move has exactly one audit record and every audit
record one move.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

TAG_PREFIX = "brandloop."
#: The state of a move's audit run (see the module docstring).
MOVE_STATE_TAG = f"{TAG_PREFIX}move_state"
#: The Prefect flow run that made the move, when a flow made it.
OWNER_TAG = f"{TAG_PREFIX}prefect_flow_run_id"


class MoveState(StrEnum):
    """Where an alias move is: intent written, completed, or found never to have happened."""

    PENDING = "pending"
    DONE = "done"
    REVERTED = "reverted"


class RepairAction(StrEnum):
    """What the repair did with a pending move."""

    COMPLETED = "completed"
    REVERTED = "reverted"


@dataclass(frozen=True)
class RepairDecision:
    """The repair of one pending move: the action and why."""

    action: RepairAction
    reason: str


@dataclass(frozen=True)
class PendingMove:
    """An alias move whose audit run is still open (RUNNING).

    ``started`` is the intent's time (seconds since the epoch); ``owner`` the Prefect flow
    run that made it, if a flow did.
    """

    run_id: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    started: float
    owner: str | None = None

    @property
    def name(self) -> str:
        """``@alias: from -> to`` (``-`` for no version), as the audit run is named."""
        return f"@{self.alias}: {self.from_version or '-'} -> {self.to_version or '-'}"


@dataclass(frozen=True)
class Repair:
    """One pending move the repair completed or reverted."""

    move: PendingMove
    action: RepairAction
    reason: str

    @property
    def name(self) -> str:
        """``@alias: from -> to completed|reverted``: how runs report the repair."""
        return f"{self.move.name} {self.action.value}"


def decide_repair(move: PendingMove, alias_now: str | None) -> RepairDecision:
    """Complete ``move`` if ``@alias`` points at its target now (``alias_now``, None if the
    alias does not exist), else revert it. Pure: no I/O."""
    target = move.to_version or "no version"
    if alias_now == move.to_version:
        return RepairDecision(
            RepairAction.COMPLETED,
            f"@{move.alias} points at {target}: the move happened, its audit is completed",
        )
    if alias_now == move.from_version:
        return RepairDecision(
            RepairAction.REVERTED,
            f"@{move.alias} still points at {move.from_version or 'no version'}: "
            f"the move to {target} never happened",
        )
    return RepairDecision(
        RepairAction.REVERTED,
        f"@{move.alias} points at {alias_now or 'no version'}, neither "
        f"{move.from_version or 'no version'} nor {target}: the move did not stick",
    )


def is_abandoned(
    move: PendingMove, *, current_owner: str | None, ended_owner: bool, age_s: float, stale_s: float
) -> bool:
    """Whether a run may repair ``move``: it is its own (a retry in the same flow run), its
    owner flow run has ended (``ended_owner``), or it is older than ``stale_s`` seconds
    (``age_s``; an alias move takes seconds). Pure: no I/O."""
    if move.owner is not None and move.owner == current_owner:
        return True
    return ended_owner or age_s > stale_s
