"""Human-readable wording: counts of things, and summaries of a loop run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def quantity(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` agreeing in number: ``"1 post"``, ``"0 posts"``, ``"1,234 posts"``;
    ``plural`` for a noun that does not take an ``s`` (``"batch"``, ``"batches"``)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (lone surrogates) and every character
    :meth:`str.isprintable` refuses but the space escaped (control characters such as NUL
    and tab, U+200B, U+2028...), for terminals and logs (a raw NUL made ``grep`` read a log
    as binary; a zero-width space could not be seen): ``"10\\x0103"`` for ``"10\x0103"``."""
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def first_ids(ids: Sequence[str], limit: int = 10) -> str:
    """``"a, b, c"``: the first ``limit`` of ``ids``, then ``" ..."`` when there are more."""
    return ", ".join(ids[:limit]) + (" ..." if len(ids) > limit else "")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (one line, pipes escaped)."""
    return " ".join(text.split()).replace("|", "\\|")


def value_cell(value: object) -> str:
    """A value as a Markdown table cell: scores (floats) to 4 places, as the gate's reasons
    print them."""
    return markdown_cell(f"{value:.4f}" if isinstance(value, float) else str(value))


def fields_table(fields: Mapping[str, Any]) -> list[str]:
    """The lines of a Markdown ``| field | value |`` table of ``fields``; None values left
    out."""
    rows = [f"| {k} | {value_cell(v)} |" for k, v in fields.items() if v is not None]
    return ["| field | value |", "|---|---|", *rows]


def _champion_after(row: Mapping[str, Any]) -> Any:
    """The champion a round left: the version it promoted, else the one it kept (its
    version, or the cold start's name)."""
    version = row.get("promoted_version") or row.get("champion_version")
    return f"v{version}" if version else row.get("champion_model")


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
                    _champion_after(r),
                    r.get("status"),
                )
            )
            + " |"
        )
    return "\n".join(lines)


def dropped_line(subject: str, dropped: Sequence[str], into: str, n_kept: int, digest: str) -> str:
    """The warning of a frozen set losing withdrawn posts: ``"gold set g: 2 withdrawn posts
    dropped (a, b) -> g-r2 (30 posts, hash 0123456789ab)"``."""
    return (
        f"{subject}: {quantity(len(dropped), 'withdrawn post')} dropped ({first_ids(dropped)}) "
        f"-> {into} ({quantity(n_kept, 'post')}, hash {digest[:12]})"
    )
