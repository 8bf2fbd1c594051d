"""The canary split (ner.canary): which labelled posts the training pool never gets."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from ner.canary import (
    CanaryRule,
    CanarySet,
    Holdout,
    PostStamp,
    canary_point,
    parse_created_at,
    split_holdout,
)
from ner.errors import DataError
from ner.types import Post

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def stamp(post_id: str, day: float | None, source: str = "x") -> PostStamp:
    return PostStamp(post_id, None if day is None else T0 + timedelta(days=day), source)


def corpus() -> list[PostStamp]:
    """3 weeks of X posts (days 0-20, one a day), plus 3 JSONL posts from day 19."""
    posts = [stamp(f"x{d:02d}", d) for d in range(21)]
    posts += [stamp(f"j{i}", 19, "jsonl") for i in range(3)]
    return posts


def test_freeze_takes_the_window_back_from_the_newest_post_and_its_sources() -> None:
    rule = CanaryRule.freeze(corpus(), window=timedelta(days=7), fraction=1.0)
    # newest is day 20: cutoff day 13; sources at or after it: x and jsonl
    assert rule.cutoff == T0 + timedelta(days=13)
    assert rule.home_sources == frozenset({"x", "jsonl"})
    given = CanaryRule.freeze(corpus(), window=timedelta(days=7), home_sources=["x"])
    assert given.home_sources == frozenset({"x"})


def test_posts_an_earlier_pool_held_are_never_canary_or_recent_and_stay_trainable() -> None:
    # Given the posts of a gold set frozen after a retirement, two of them trained on before:
    # x05 (an earlier window: the rule makes it canary) and x20 (the newest: recent)
    posts = corpus()
    rule = CanaryRule.freeze(posts, window=timedelta(days=7), fraction=1.0, home_sources=["x"])
    # When they are split with the posts an earlier training pool held
    split = split_holdout(posts, rule, recent_fraction=0.25, trained={"x05", "x20"})
    # Then both go to the pool; the recent slice takes the newest untrained posts instead
    assert "x05" not in split.canary and {"x05", "x20"} <= set(split.pool)
    assert split.recent == ("x19", "x18")
    assert split.exempt == ("x05",)  # the rule's match that stays trainable
    # And the frozen canary set keeps it trainable in later rounds, while the rule still holds
    # out a post labelled later in an earlier window
    frozen = CanarySet("g", rule, split.canary, "h", exempt=split.exempt)
    later = {"x05": stamp("x05", 5), "late": stamp("late", 2)}
    assert frozen.held_out(later) == set(split.canary) | {"late"}
    assert CanarySet.from_dict(frozen.to_dict()) == frozen


def test_every_off_window_post_is_canary_at_fraction_one() -> None:
    posts = corpus()
    rule = CanaryRule.freeze(posts, window=timedelta(days=7), fraction=1.0, home_sources=["x"])
    split = split_holdout(posts, rule, recent_fraction=0.25)
    # earlier windows: days 0..12 (13 posts); other source: the 3 JSONL posts
    assert split.canary == tuple(sorted([f"x{d:02d}" for d in range(13)] + ["j0", "j1", "j2"]))
    assert (split.n_earlier_window, split.n_other_source) == (13, 3)
    # current window: days 13..20 (8 posts); ceil(0.25 * 8) = 2 newest, newest first
    assert split.recent == ("x20", "x19")
    assert split.pool == tuple(f"x{d:02d}" for d in range(13, 19))
    assert split.side("x05") is Holdout.CANARY
    assert split.side("x20") is Holdout.RECENT
    assert split.side("x13") is Holdout.POOL
    with pytest.raises(KeyError):
        split.side("never-labelled")


def test_fraction_zero_keeps_no_canary_and_the_day_boundary_is_inclusive() -> None:
    posts = corpus()
    rule = CanaryRule.freeze(posts, window=timedelta(days=7), fraction=0.0, home_sources=["x"])
    split = split_holdout(posts, rule, recent_fraction=0.0)
    assert split.canary == ()
    assert split.recent == ()
    assert len(split.pool) == len(posts)
    # a post exactly at the cutoff is in the current window, one second before is not
    at = PostStamp("a", rule.cutoff, "x")
    before = PostStamp("b", T0 + timedelta(days=13, seconds=-1), "x")
    assert rule.off_window(at) is None
    assert rule.off_window(before) == "earlier_window"


def test_a_partial_fraction_draws_by_the_hashed_id() -> None:
    posts = [stamp(f"old{i}", i / 10, "x") for i in range(200)] + [stamp("new", 60)]
    rule = CanaryRule.freeze(posts, window=timedelta(days=7), fraction=0.3)
    split = split_holdout(posts, rule, recent_fraction=1.0)
    expected = sorted(f"old{i}" for i in range(200) if canary_point(f"old{i}") < 0.3)
    assert list(split.canary) == expected
    assert 40 <= len(split.canary) <= 80  # about 30 % of 200
    assert split.recent == ("new",)
    # another salt draws another sample
    other = CanaryRule(rule.cutoff, rule.home_sources, 0.3, salt="another")
    assert split_holdout(posts, other).canary != split.canary


def test_the_split_is_disjoint_covering_and_independent_of_order() -> None:
    posts = [*corpus(), stamp("u-x", None), stamp("u-j", None, "jsonl")]
    rule = CanaryRule.freeze(posts, window=timedelta(days=5), fraction=0.5, home_sources=["x"])
    split = split_holdout(posts, rule)
    sides = [set(split.canary), set(split.recent), set(split.pool)]
    assert sum(len(s) for s in sides) == len(posts)
    assert set().union(*sides) == {p.post_id for p in posts}
    shuffled = list(posts)
    random.Random(4).shuffle(shuffled)
    assert split_holdout(shuffled, rule) == split
    assert split.undated == ("u-j", "u-x")


def test_undated_posts_are_canary_only_when_from_another_source() -> None:
    posts = [stamp("u-x", None), stamp("u-j", None, "jsonl"), stamp("d", 3)]
    rule = CanaryRule.freeze(posts, fraction=1.0, home_sources=["x"])
    split = split_holdout(posts, rule, recent_fraction=1.0)
    assert split.canary == ("u-j",)
    assert split.recent == ("d",)
    assert split.pool == ("u-x",)


def test_new_posts_never_move_a_post_in_or_out_of_the_canary() -> None:
    # round 1 freezes the rule; round 2 brings newer and backfilled older posts
    first = corpus()
    rule = CanaryRule.freeze(first, window=timedelta(days=7), fraction=0.5)
    round1 = split_holdout(first, rule)
    later = first + [stamp(f"n{i}", 21 + i) for i in range(10)] + [stamp("old-backfill", 2)]
    round2 = split_holdout(later, rule)
    assert set(round1.canary) <= set(round2.canary)
    assert set(round2.canary) - set(round1.canary) <= {"old-backfill"}
    # no post of round 1's pool (trained on) is a canary post in round 2
    assert not set(round1.pool) & set(round2.canary)


def test_without_any_date_only_the_source_rule_applies() -> None:
    posts = [stamp("a", None), stamp("b", None, "jsonl")]
    rule = CanaryRule.freeze(posts, fraction=1.0)
    assert rule.cutoff is None
    assert rule.home_sources == frozenset({"x", "jsonl"})
    split = split_holdout(posts, rule)
    assert split.canary == ()
    assert split.pool == ("a", "b")


def test_duplicate_posts_and_bad_settings_are_refused() -> None:
    rule = CanaryRule(None, frozenset({"x"}))
    with pytest.raises(DataError, match="'p1'"):
        split_holdout([stamp("p1", 1), stamp("p1", 2)], rule)
    with pytest.raises(ValueError, match="recent_fraction"):
        split_holdout([], rule, recent_fraction=1.5)
    with pytest.raises(ValueError, match="fraction"):
        CanaryRule(None, frozenset(), fraction=-0.1)
    with pytest.raises(ValueError, match="window"):
        CanaryRule.freeze([], window=timedelta(0))


def test_created_at_parsing_names_the_post() -> None:
    assert parse_created_at("p", "2026-11-01T10:00:00.000Z") == datetime(
        2026, 11, 1, 10, tzinfo=UTC
    )
    assert parse_created_at("p", "2026-11-01T10:00:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert parse_created_at("p", None) is None
    with pytest.raises(DataError, match=r"'p9'.*yesterday"):
        parse_created_at("p9", "yesterday")
    post = Post(id="42", text="hi", created_at="2026-11-02T00:00:00+02:00", source="x_api")
    assert PostStamp.from_post(post) == PostStamp(
        "42", datetime(2026, 11, 1, 22, tzinfo=UTC), "x_api"
    )


def test_rule_and_split_records_round_trip() -> None:
    rule = CanaryRule.freeze(corpus(), fraction=0.4)
    assert CanaryRule.from_dict(rule.to_dict()) == rule
    record = split_holdout(corpus(), rule).to_dict()
    assert record["rule"] == rule.to_dict()
    assert record["n_pool"] + len(record["canary"]) + len(record["recent"]) == len(corpus())
    with pytest.raises(ValueError, match="malformed"):
        CanaryRule.from_dict({"cutoff": None})
