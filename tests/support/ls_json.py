"""Label Studio JSON for unit tests: spans by needle, results, exported tasks."""

from __future__ import annotations

from typing import Any

from ner.labelstudio.export import codepoint_to_utf16
from ner.types import Span


def span(text: str, needle: str, label: str = "BRAND", nth: int = 0) -> Span:
    """The span of the ``nth`` occurrence of ``needle`` in ``text`` (code points)."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    return Span(start, start + len(needle), label, needle)


def result(
    start: Any,
    end: Any,
    text: str | None,
    label: str = "BRAND",
    *,
    from_name: str = "label",
    to_name: str = "text",
    kind: str = "labels",
) -> dict[str, Any]:
    value: dict[str, Any] = {"start": start, "end": end, "labels": [label]}
    if text is not None:
        value["text"] = text
    return {
        "id": f"r{start}",
        "from_name": from_name,
        "to_name": to_name,
        "type": kind,
        "value": value,
    }


def task(
    task_id: int,
    text: str,
    results: list[dict[str, Any]],
    *,
    post_id: str | None = None,
    updated_at: str = "2026-11-20T10:00:00Z",
    cancelled: bool = False,
    completed_by: Any = 1,
) -> dict[str, Any]:
    data: dict[str, Any] = {"text": text}
    if post_id is not None:
        data["post_id"] = post_id
    return {
        "id": task_id,
        "data": data,
        "annotations": [
            {
                "id": task_id * 10,
                "result": results,
                "completed_by": completed_by,
                "updated_at": updated_at,
                "was_cancelled": cancelled,
            }
        ],
    }


def ls_utf16(text: str, sp: Span) -> dict[str, Any]:
    """A result as a UTF-16 counting front end would store it."""
    return result(codepoint_to_utf16(text, sp.start), codepoint_to_utf16(text, sp.end), sp.text)
