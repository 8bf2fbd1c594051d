"""The canary set outlives gold set revisions, through train-ner's own tasks.

A trial deleted a gold post's task in Label Studio: train-ner revised the gold set
(``<name>-r2``, drop and re-hash) and from then on found no canary set, counted the canary
posts as "left out", and the run after it trained on one of them. Here train-ner's pull and
split tasks run on a real Prefect server over local storage: the first split freezes the
gold and canary sets from dated posts of two windows; the second drops a withdrawn gold post
(as a deletion in Label Studio does); the third runs on the revised gold set. A withdrawn
canary post leaves the canary set the same way, and is never trained on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.context import RunContext
from flows.train_ner import Splits, prepare_gold, pull_annotations
from ner import canary, layout
from ner.datasets import load_gold_set, read_annotations
from ner.settings import load_settings
from tests.support.gate_data import write_two_windows
from tests.support.servers import PrefectService

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def split(ctx: RunContext, stamp: str, withdrawn: list[str] | None = None) -> Splits:
    pulled = pull_annotations.fn(ctx, "storage", None, stamp)
    return prepare_gold.fn(ctx, pulled.annotations_key, stamp, withdrawn)


def pool_of(ctx: RunContext, stamp: str) -> set[str]:
    return {a.post_id for a in read_annotations(ctx.storage, layout.training_pool(stamp))}


def two_windows(tmp_path: Path) -> RunContext:
    """A run context on local storage holding dated posts of two windows and their labels."""
    settings = load_settings(
        storage_uri=str(tmp_path / "storage"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        canary_fraction=1.0,
    )
    ctx = RunContext.open(settings)
    write_two_windows(ctx.storage)
    return ctx


def test_a_revised_gold_set_keeps_its_canary_set_out_of_training(
    prefect: PrefectService, tmp_path: Path
) -> None:
    ctx = two_windows(tmp_path)
    # Given the first split: a gold set and, beside it, a canary set of the older posts
    first = split(ctx, "s1")
    loaded = load_gold_set(ctx.storage)
    assert loaded is not None and first.n_canary > 0
    frozen = canary.load_canary_set(ctx.storage, loaded[0].name)
    assert frozen is not None
    canary_ids = set(frozen[0].post_ids)
    assert canary_ids.isdisjoint(pool_of(ctx, "s1"))
    # When a gold post is withdrawn (its labels deleted upstream): a new gold set version
    withdrawn = loaded[0].post_ids[0]
    second = split(ctx, "s2", [withdrawn])
    revised = load_gold_set(ctx.storage)
    assert revised is not None and revised[0].name == f"{loaded[0].name}-r2"
    assert second.n_gold == first.n_gold - 1
    # Then that run and the next find the same canary set and never train on it
    third = split(ctx, "s3")
    for stamp, splits in (("s2", second), ("s3", third)):
        assert (splits.n_canary, splits.canary_hash) == (first.n_canary, first.canary_hash)
        assert canary_ids.isdisjoint(pool_of(ctx, stamp)), stamp
    assert pool_of(ctx, "s3") == pool_of(ctx, "s1")


def test_a_withdrawn_canary_post_stops_scoring_models_and_is_never_trained_on(
    prefect: PrefectService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = two_windows(tmp_path)
    # Given the first split: a gold set and a canary set beside it
    first = split(ctx, "s1")
    frozen = canary.load_canary_set(ctx.storage, str(first.gold_name))
    assert frozen is not None and first.n_canary > 1
    gone = frozen[0].post_ids[0]
    # When one canary post is withdrawn (its labels deleted in Label Studio; the stored
    # export still holds its old label)
    with caplog.at_level("INFO"):
        second = split(ctx, "s2", [gone])
    [line] = [r.getMessage() for r in caplog.records if "labelled posts:" in r.getMessage()]
    assert ", 1 withdrawn from the canary set (never trained on)" in line
    assert "left out" not in line  # (a trial's line called it a post of the gold split)
    # Then the run scores on a canary set without it, beside the same gold posts and hash
    assert second.n_canary == first.n_canary - 1 and second.canary_hash != first.canary_hash
    assert (second.gold_hash, second.n_gold) == (first.gold_hash, first.n_gold)
    assert second.gold_name == f"{first.gold_name}-r2"
    assert gone not in {a.post_id for a in read_annotations(ctx.storage, str(second.canary_key))}
    # And `brandloop status` counts the canary set beside the gold set, the withdrawn post too
    from apps.cli import _gold_line
    from apps.status import StatusReport, current_gold

    gold = current_gold(ctx.settings)
    assert gold is not None and (gold.n_canary, gold.n_canary_dropped) == (second.n_canary, 1)
    report = StatusReport("m", "uri", gold, (), (), (), None, "")
    assert _gold_line(report).endswith(
        f"{first.n_gold} posts; canary set {second.n_canary} posts, 1 withdrawn)"
    )
    # And neither that run nor the next trains on it; the next finds the same smaller set
    third = split(ctx, "s3")
    assert (third.n_canary, third.canary_hash) == (second.n_canary, second.canary_hash)
    for stamp in ("s2", "s3"):
        assert gone not in pool_of(ctx, stamp), stamp
