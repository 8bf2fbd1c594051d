"""Pure helpers of the Label Studio API client: task bookkeeping and batching (the server
side is tested in tests/integration/test_labelstudio_api.py)."""

from __future__ import annotations

import pytest

from ner.labelstudio.client import batched, post_id_of


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
