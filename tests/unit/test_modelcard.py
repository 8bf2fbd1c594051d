"""The model card (ner.modelcard): what MLflow shows on a model version's page."""

from __future__ import annotations

import dataclasses

import pytest

from ner.evaluation import LabelScores
from ner.gate import GatePolicy, Interval, ModelScores, decide_promotion
from ner.modelcard import (
    BELOW_NOTES,
    MLFLOW_DESCRIPTION_LIMIT,
    ModelCard,
    Recipe,
    SetMetrics,
    TrainingData,
    known_limits,
    manual_promotion_note,
    render_model_card,
    replaced_note,
    restored_note,
    rollback_note,
    with_alias_note,
)
from tests.support.gate_data import canary, gold_win

TRAIN_HASH = "ab" * 32
GOLD_HASH = "cd" * 32


def card_of(challenger_canary: int, **changes: object) -> ModelCard:
    """A card for the challenger of :func:`gold_win`, whose canary finds ``challenger_canary``
    of 10 spans where the champion finds 8."""
    gold_mine, gold_theirs = gold_win()
    mine = ModelScores(gold_mine, canary(challenger_canary))
    theirs = ModelScores(gold_theirs, canary(8))
    card = ModelCard(
        model_name="brand-ner",
        version="7",
        training=TrainingData(1200, TRAIN_HASH, n_dev=130, n_rejected_spans=3),
        recipe=Recipe("en_core_web_sm", "fast", {"seed": 17, "max_epochs": 10}),
        evaluations=(
            SetMetrics.from_scores("gold", mine.gold, champion=theirs.gold, dataset_hash=GOLD_HASH),
            SetMetrics.from_scores("canary", canary(challenger_canary), champion=theirs.canary),
        ),
        decision=decide_promotion(mine, theirs, GatePolicy(threshold=0.5)),
        run_id="run-123",
    )
    return dataclasses.replace(card, **changes)


def test_a_refused_card_says_which_rule_refused_and_with_what_numbers() -> None:
    text = render_model_card(card_of(4))
    assert text.startswith("# brand-ner version 7\n")
    assert "**Gate: refused** (not promoted) by `canary`: canary F1 0.8889 -> 0.5714" in text
    assert "| canary | refused | canary F1 0.8889 -> 0.5714 (-0.3175, 95% interval [" in text
    assert "| threshold | passed | challenger F1 1.0000 >= threshold 0.5000 |" in text
    # gold row: challenger finds every span, so every resample scores 1; champion 28/34
    assert "| gold (`cdcdcdcdcdcd`) | 20 | 1.000 | 1.000 | 1.000 [1.000, 1.000] | 0.824 |" in text
    assert "| canary | 10 | 1.000 | 0.400 | 0.571 [" in text
    assert "| BRAND | 1.000 | 0.400 | 0.571 | 10 |" in text


def test_the_card_names_the_training_data_and_the_recipe() -> None:
    text = render_model_card(card_of(8))
    assert (
        "training posts: 1,200, and 130 more held out as the dev slice (epoch scores), "
        f"dataset hash `{TRAIN_HASH}`"
    ) in text
    assert "spans left out of training: 3" in text
    assert "the pool holds" not in text  # no pool size given
    # a trial could not tell why a pool of 6 trained 4 posts (and 1 for the dev slice)
    small = dataclasses.replace(card_of(8), training=TrainingData(4, TRAIN_HASH, 1, n_pool=6))
    assert (
        "the pool holds 6 labelled posts; the recipe drew the posts above from it "
        "(`negative_fraction` samples brand-less posts, `labelled_copies` repeats labelled ones)"
    ) in render_model_card(small)
    assert "training run: `run-123`" in text
    assert "base model: `en_core_web_sm`" in text
    assert "recipe: fast" in text
    assert "`seed` = `17`" in text
    unmapped = Recipe("en_core_web_sm", "fast", {"label_map": {}, "extra": ""})
    said = render_model_card(card_of(8, recipe=unmapped))
    assert "`label_map`: none" in said and "`extra`: none" in said  # not an empty `` ``
    assert "- recipe: fast\n" in said  # no knob changed from the recipe's defaults
    # the demo's champion (knobs of its own) read only "recipe: fast" (trial V)
    from apps.cli import DEMO_RECIPE
    from ner.settings import load_settings

    changed = load_settings(DEMO_RECIPE).train.changed_knobs()
    assert {"learn_rate", "max_epochs", "lowercase"} <= set(changed)
    assert load_settings().train.changed_knobs() == ()
    demo = render_model_card(card_of(8, recipe=dataclasses.replace(unmapped, changed=changed)))
    assert "recipe: fast, changed from its defaults: `checkpoint`, `gazetteer`, " in demo
    assert "**Gate: promoted.**" in text
    titled = render_model_card(card_of(8, champion_version="6"))
    # (trained as: the title stays once it is champion, and a trial read it as current)
    assert titled.startswith("# brand-ner version 7 (trained as the challenger of version 6)\n")
    # A rehearsal set is named beside the pool, with its size and hash; none, no line
    assert "rehearsal set" not in text
    general = TrainingData(
        1200, TRAIN_HASH, n_rehearsed=2035, rehearsal_uri="gs://b/general.json",
        rehearsal_hash="ef" * 32,
    )  # fmt: skip
    rehearsed = render_model_card(card_of(8, training=general))
    assert (
        "rehearsal set (trained beside the pool, not part of it): 2,035 posts of "
        f"`gs://b/general.json`, hash `{'ef' * 32}`"
    ) in rehearsed


def test_interval_values_come_from_the_bootstrap() -> None:
    card = card_of(8)
    interval = card.evaluations[1].f1_interval
    assert interval is not None
    assert interval.lower < 16 / 18 < interval.upper  # 8 of 10 found -> 16/18
    text = render_model_card(card)
    assert f"0.889 [{interval.lower:.3f}, {interval.upper:.3f}]" in text


def test_known_limits_follow_from_the_numbers() -> None:
    thin = SetMetrics(
        "wnut17-dev",
        n_posts=40,
        precision=0.5,
        recall=0.4,
        f1=0.444,
        f1_interval=Interval(0.444, 0.30, 0.58, 0.95, 1000),
        per_label=(LabelScores("BRAND", 20, 20, 30), LabelScores("PRODUCT", 1, 0, 2)),
    )
    card = card_of(8, evaluations=(thin,), decision=None, limits=("hashtags are one token",))
    limits = known_limits(card)
    assert limits == [
        "wnut17-dev: 40 posts, F1 interval 0.280 wide: smaller differences are noise",
        "wnut17-dev: fewer than 10 gold spans for PRODUCT: their F1 is unreliable",
        "no canary evaluation: older time windows and other sources not checked",
        "hashtags are one token",
    ]
    text = render_model_card(card)
    assert "**Gate:** not gated" in text
    assert "- hashtags are one token" in text


def test_the_first_model_card_lists_the_rules_that_did_not_apply() -> None:
    gold_mine, _ = gold_win()
    decision = decide_promotion(ModelScores(gold_mine), None, GatePolicy(threshold=0.5))
    limits = known_limits(card_of(8, decision=decision))
    assert "gate rule canary not applied: no canary set" in limits
    assert "gate rule confidence not applied: no champion to compare with" in limits


def test_table_cells_escape_pipes_and_newlines() -> None:
    odd = SetMetrics("a|b\nc", 1, 1.0, 1.0, 1.0, per_label=(LabelScores("X|Y", 1, 0, 0),))
    text = render_model_card(card_of(8, evaluations=(odd,)))
    assert "| a\\|b c | 1 |" in text
    assert "| X\\|Y | 1.000 |" in text


def many_labels_card() -> ModelCard:
    rows = tuple(LabelScores(f"LABEL_{i:03d}", i, 1, 1) for i in range(300))
    sets = tuple(SetMetrics(f"set {k}", 50, 0.5, 0.5, 0.5, per_label=rows) for k in range(2))
    params = {f"param_{i:02d}": i for i in range(40)}
    return card_of(4, evaluations=sets, recipe=Recipe("base", "accurate", params))


def test_a_long_card_is_compacted_within_mlflows_limit() -> None:
    text = render_model_card(many_labels_card())
    assert len(text) <= MLFLOW_DESCRIPTION_LIMIT
    # the decision stays; the label table keeps the 8 labels with most gold spans
    assert "**Gate: refused** (not promoted) by `canary`" in text
    assert "| LABEL_299 |" in text
    assert "| LABEL_000 |" not in text
    assert "... 292 more labels" in text
    assert "Per label on set 1" not in text
    assert "... and 34 more" in text  # 2 recipe lines + 40 params, 8 shown


def test_a_card_over_any_limit_is_cut_at_a_line_with_a_note() -> None:
    text = render_model_card(many_labels_card(), max_chars=600)
    assert len(text) <= 600
    assert text.endswith("_(card truncated to fit MLflow's description limit)_")
    assert text.startswith("# brand-ner version 7\n\n**Gate: refused**")
    with pytest.raises(ValueError, match="max_chars"):
        render_model_card(many_labels_card(), max_chars=100)


def test_a_card_without_its_alias_notes_is_the_card_as_trained() -> None:
    from ner.modelcard import without_alias_notes

    card = "# brand-ner version 3\n\n**Gate: refused** (not promoted) by `threshold`\n\n## Metrics"
    noted = with_alias_note(card, manual_promotion_note(reason="hotfix", actor="a", when="T1"))
    noted = with_alias_note(noted, rollback_note(reason="complaints", actor="b", when="T2"))
    assert noted != card
    assert without_alias_notes(noted) == card
    assert without_alias_notes(card) == card


def test_a_copys_card_is_titled_as_the_copy_of_its_source() -> None:
    from ner.modelcard import titled_as_copy

    card = render_model_card(many_labels_card(), max_chars=600)
    copied = titled_as_copy(card, "brand-ner-prod", "2")
    # the copy's own name first, then the source's title (a trial read "brand-ner version 7"
    # on prod's version 2 as its name)
    assert copied.startswith("# brand-ner-prod version 2, a copy of brand-ner version 7\n")
    assert copied.splitlines()[1:] == card.splitlines()[1:]
    # and a card without the rendered title is left as it is
    assert titled_as_copy("no title", "brand-ner-prod", "2") == "no title"


def test_an_alias_note_goes_under_the_title_and_keeps_the_latest_of_each_kind() -> None:
    card = "# brand-ner version 3\n\n**Gate: refused** (not promoted) by `threshold`\n\n## Metrics"
    promoted = manual_promotion_note(reason="manual: hotfix", actor="cli:ana", when="T1")
    once = with_alias_note(card, promoted)
    again = with_alias_note(once, manual_promotion_note(reason="again", actor="b", when="T2"))
    rolled = with_alias_note(again, rollback_note(reason="complaints", actor="cli:bo", when="T3"))
    assert once.splitlines()[:3] == [
        "# brand-ner version 3",
        "",
        "**Promoted by hand** to @champion at T1 by cli:ana: manual: hotfix.",
    ]
    assert again.count("**Promoted by hand**") == 1 and "at T2 by b: again." in again
    # a rollback goes on top, and the promotion it undid stays under it (a trial read the
    # card as if the version had never been champion when the rollback replaced it)
    assert rolled.splitlines()[2:] == [
        "**Rolled back** from @champion at T3 by cli:bo: complaints.",
        "",
        "**Promoted by hand** to @champion at T2 by b: again.",
        "",
        BELOW_NOTES,  # once, however many notes (a trial read it on every line)
        "",
        "**Gate: refused** (not promoted) by `threshold`",
        "",
        "## Metrics",
    ]
    # promoted by hand once more: that note goes on top, the rollback's stays, one of each
    back = with_alias_note(rolled, manual_promotion_note(reason="fixed", actor="c", when="T4"))
    notes = [line for line in back.splitlines() if line.startswith("**")]
    assert [n.split(" at ")[1][:2] for n in notes[:2]] == ["T4", "T3"]
    assert back.count("**Promoted by hand**") == 1 and back.count("**Rolled back**") == 1
    assert back.count(BELOW_NOTES) == 1
    with pytest.raises(ValueError, match="not an alias note"):
        with_alias_note(card, "**Gate: passed**")


def test_the_version_a_rollback_restores_says_so_on_top() -> None:
    # a trial found the restored champion's card still topped by an old promotion by hand
    card = "# brand-ner version 1\n\n**Promoted by hand** to @champion at T1 by a: first."
    back = restored_note(reason="worse in prod", actor="cli:bo", when="T2", from_version="2")
    assert with_alias_note(card, back).splitlines()[2:5] == [
        "**Restored** to @champion at T2 by cli:bo, rolling back version 2: worse in prod.",
        "",
        "**Promoted by hand** to @champion at T1 by a: first.",
    ]


def test_a_champion_a_promotion_replaced_says_so_on_top() -> None:
    # a trial read a displaced version's card, topped by its promotion by hand, as champion
    card = (
        "# brand-ner version 1\n\n**Restored** to @champion at T1 by a, rolling back version 2: x."
    )
    replaced = with_alias_note(
        card, replaced_note(by_version="3", reason="promoted: F1 0.91 > 0.88", when="T2")
    )
    assert replaced.splitlines()[2:5] == [
        "**Replaced** as @champion at T2 by version 3: promoted: F1 0.91 > 0.88.",
        "",
        "**Restored** to @champion at T1 by a, rolling back version 2: x.",
    ]


def test_an_alias_note_without_a_card_and_within_the_limit() -> None:
    note = manual_promotion_note(reason="r | x\ny", actor="a", when="T")
    assert with_alias_note("", note) == "**Promoted by hand** to @champion at T by a: r \\| x y."
    long_card = "# m version 1\n\n" + "\n".join(["row " + "x" * 90] * 80)
    cut = with_alias_note(long_card, note)
    assert len(cut) <= MLFLOW_DESCRIPTION_LIMIT and cut.splitlines()[2].startswith("**Promoted")
    assert cut.endswith("_(card truncated to fit MLflow's description limit)_")


def test_a_rescored_note_replaces_the_earlier_one_and_keeps_the_other_kinds() -> None:
    from ner.modelcard import rescored_note

    card = "# brand-ner v2\n\n| gold | 0.9000 |"
    first = rescored_note(when="t1", f1=0.7, gold_hash="e" * 64, card_gold_hash="f" * 64)
    card = with_alias_note(card, first)
    card = with_alias_note(card, rollback_note(reason="bad", actor="ana", when="t2"))
    second = rescored_note(when="t3", f1=0.75, gold_hash="d" * 64, card_gold_hash="f" * 64)
    lines = [line for line in with_alias_note(card, second).splitlines() if line]
    assert lines[1] == second and lines[2].startswith("**Rolled back**")
    assert first not in lines and lines[-1] == "| gold | 0.9000 |"
