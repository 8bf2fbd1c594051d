"""``ner.layout``: every storage key keeps the format earlier runs wrote, and the parsers
read back what the formatters write."""

from __future__ import annotations

import pytest

from ner import layout


def test_batch_keys_keep_their_formats() -> None:
    stamp = "20260101T000000000000Z-abcd1234"
    assert layout.posts_batch(stamp) == f"posts/{stamp}.jsonl"
    assert layout.predictions(stamp) == f"predictions/{stamp}.jsonl"
    assert layout.shard_key(stamp, 7) == f"predictions/{stamp}/shard-00007.jsonl"
    assert layout.shard_part("predictions/x.jsonl", 0) == "predictions/x/shard-00000.jsonl"
    assert layout.selection(stamp) == f"selections/{stamp}.json"
    assert layout.tasks_import(stamp) == f"tasks/{stamp}.json"
    assert layout.import_receipt(stamp) == f"tasks/{stamp}.imported.json"
    # and a batch's stamp and its delivery marks read back
    assert layout.batch_stamp(layout.posts_batch(stamp)) == stamp
    assert layout.delivered_stamp(layout.tasks_import(stamp)) == stamp
    assert layout.delivered_stamp(layout.import_receipt(stamp)) == stamp
    assert layout.delivered_stamp("tasks/readme.txt") is None
    # and the report of the posts an import did not send marks nothing as delivered
    assert layout.import_rejected(stamp) == f"tasks/{stamp}.rejected.json"
    assert layout.delivered_stamp(layout.import_rejected(stamp)) is None


@pytest.mark.parametrize(
    ("key", "is_batch"),
    [
        ("posts/20260101-a.jsonl", True),
        ("posts/20260101-a.rejected.json", False),
        ("posts/old/20260101-a.jsonl", False),
        ("predictions/20260101-a.jsonl", False),
    ],
)
def test_only_fetched_batches_count_as_batches(key: str, is_batch: bool) -> None:
    assert layout.is_posts_batch(key) is is_batch


def test_export_gold_set_and_checkpoint_keys_keep_their_formats() -> None:
    assert layout.export_snapshot("s1", 4) == "exports/s1-ls-4.json"
    assert layout.export_snapshot("s1", 4, 2) == "exports/s1-ls-4-2.json"
    match = layout.export_snapshot_pattern(4).match(layout.export_snapshot("s1", 4, 2))
    assert match is not None and match.groups() == ("s1", "2")
    assert layout.export_snapshot_pattern(5).match("exports/s1-ls-4.json") is None
    assert layout.replay_export("s1") == "exports/s1-replay.json"
    assert layout.gold_set("g1") == "goldsets/g1.json"
    assert layout.gold_set_annotations("g1") == "goldsets/g1.annotations.jsonl"
    assert layout.GOLD_SET_CURRENT == "goldsets/CURRENT.json"
    names = [layout.gold_set_name(k) for k in ("goldsets/g1.json", layout.GOLD_SET_CURRENT)]
    assert names == ["g1", None]
    assert layout.gold_set_name(layout.gold_set_annotations("g1")) is None
    assert layout.X_CHECKPOINT == "checkpoints/x_since_id.json"
    assert layout.jsonl_checkpoint("ab12") == "checkpoints/jsonl-ab12.json"
    assert layout.labelstudio_checkpoint(3) == "checkpoints/labelstudio-3.json"
    assert layout.labelstudio_checkpoint(3, "trigger") == "checkpoints/labelstudio-3-trigger.json"


def test_annotation_and_report_keys_keep_their_formats() -> None:
    assert layout.pulled_annotations("s1") == "annotations/s1.jsonl"
    assert layout.training_pool("s1") == "annotations/s1.train.jsonl"
    assert layout.rejected_report("posts/s1.jsonl") == "posts/s1.rejected.json"
