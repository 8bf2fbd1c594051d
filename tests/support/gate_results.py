"""Gate results for tests of what prints or publishes them (pure data, no run)."""

from __future__ import annotations

from flows.train_ner import GateResult, RuleVerdict


def refused_gate(*verdicts: tuple[str, str, str]) -> GateResult:
    """A refusal by every ``(rule, status, reason)`` whose status is ``refused``."""
    rules = [RuleVerdict(rule=r, status=s, reason=why, numbers={}) for r, s, why in verdicts]
    refused = [v.rule for v in rules if v.status == "refused"]
    return GateResult(
        promote=False,
        outcome="refused",
        reason=f"refused by {', '.join(refused)}",
        refused_by=refused,
        verdicts=rules,
    )
