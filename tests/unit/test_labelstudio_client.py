"""Pure helpers of the Label Studio API client: task bookkeeping and batching (the server
side is tested in tests/integration/test_labelstudio_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ner.errors import LabelStudioError
from ner.labelstudio.client import LabelStudioProject, batched, post_id_of


# --- task bookkeeping -----------------------------------------------------------------------
def test_post_id_of_tasks_and_sdk_objects() -> None:
    class Task:
        data = {"post_id": 123}

    assert post_id_of({"data": {"post_id": "9"}}) == "9"
    assert post_id_of(Task()) == "123"
    for missing in ({"data": {"post_id": ""}}, {"data": None}, {}, {"data": {"text": "t"}}):
        assert post_id_of(missing) is None


def test_batched_splits_in_order_and_rejects_a_zero_size() -> None:
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError):
        list(batched([1], 0))


class _Listing(LabelStudioProject):
    """A project whose task listing is given (the live-set logic, without a server)."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.project_id = 3
        self.listed = tasks
        self.asked: dict[str, Any] = {}

    def iter_tasks(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.asked = kwargs
        return iter(self.listed)


def test_live_annotations_maps_tasks_to_annotation_ids() -> None:
    project = _Listing(
        [
            {"id": 1, "annotations": [{"id": 12}, {"id": 11}, {"id": "x"}]},
            {"id": 2, "annotations": []},
            {"id": "bad", "annotations": [{"id": 5}]},
        ]
    )
    assert project.live_annotations() == {1: [11, 12], 2: []}
    assert project.asked == {"include": "id,annotations", "fields": "all"}


def test_a_listing_without_annotations_is_refused_not_read_as_deletions() -> None:
    project = _Listing([{"id": 1, "annotations": [{"id": 11}]}, {"id": 2}])
    with pytest.raises(LabelStudioError, match="task 2 was listed without its annotations"):
        project.live_annotations()
