"""The replay annotator (ner/replay.py): gold labels handed back for the tasks sent."""

from __future__ import annotations

import pytest

from ner.errors import DataError
from ner.replay import ReplayAnnotator


def _gold_task(data: dict[str, str], task_id: int | None, text: str = "Glossier balm") -> dict:
    result = [
        {"from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": 0, "end": 8, "text": "Glossier", "labels": ["BRAND"]}}
    ]  # fmt: skip
    task = {"data": {"text": text, **data}, "annotations": [{"id": 1, "result": result}]}
    return task if task_id is None else {"id": task_id, **task}


def test_gold_tasks_are_matched_by_the_pulls_post_id_rule() -> None:
    # Given gold tasks keyed as the pull reads them: data.post_id, data.id, and a task made
    # by hand with only its task id (a trial's was refused although the pull reads it)
    annotator = ReplayAnnotator(
        [_gold_task({"post_id": "p1"}, 1), _gold_task({"id": "p2"}, 2), _gold_task({}, 7)]
    )
    assert [annotator.knows(i) for i in ("p1", "p2", "7", "1")] == [True, True, True, False]
    # When apply's tasks (data.post_id) are sent, each known post is labelled
    sent = [{"data": {"post_id": i, "text": "Glossier balm"}} for i in ("p1", "p2", "7", "x")]
    exported = annotator.annotate(sent)
    assert [task["data"]["post_id"] for task in exported] == ["p1", "p2", "7"]
    assert exported[2]["annotations"][0]["completed_by"] == "replay-annotator"


def test_a_gold_task_with_no_id_at_all_is_refused() -> None:
    with pytest.raises(DataError, match=r"gold task has no post id \(data.post_id, data.id, id\)"):
        ReplayAnnotator([_gold_task({}, None)])
