"""Human-readable wording: counts of things, and summaries of a loop run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def quantity(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` agreeing in number: ``"1 post"``, ``"0 posts"``, ``"1,234 posts"``;
    ``plural`` for a noun that does not take an ``s`` (``"batch"``, ``"batches"``)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def rounds_table(rounds: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: one row per feedback-loop round."""
    header = (
        "| round | posts sent | labels (total) | champion F1 (gold) | challenger F1 (gold) "
        "| promoted | champion after | outcome |"
    )
    lines = [header, "|" + "---|" * 8]
    for r in rounds:
        lines.append(
            "| "
            + " | ".join(
                _fmt(v)
                for v in (
                    r.get("round"),
                    r.get("posts_sent"),
                    r.get("labels"),
                    r.get("champion_f1"),
                    r.get("challenger_f1"),
                    ("yes (v" + str(r["promoted_version"]) + ")")
                    if r.get("promoted_version")
                    else "no",
                    f"v{r['champion_version']}"
                    if r.get("champion_version")
                    else r.get("champion_model"),
                    r.get("status"),
                )
            )
            + " |"
        )
    return "\n".join(lines)
