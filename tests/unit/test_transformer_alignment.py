"""The accurate recipe's pure parts (ner.transformer): BIO tags from spaCy entities, word
pieces <-> spaCy tokens, span decoding, the recipe setting. No torch needed."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
from spacy.tokens import Doc, Span

from ner.errors import ConfigError, ModelError, OptionalInstallError
from ner.inference import unneeded_pipes
from ner.models import add_label_filter
from ner.settings import TrainSettings, load_settings
from ner.transformer import (
    COMPONENT,
    FACTORY,
    IGNORE,
    base_weights,
    best_tags,
    check_installed,
    decode_spans,
    first_pieces,
    piece_labels,
    require_torch,
    tag_names,
    uses_bf16,
    word_tags,
)
from ner.transformer_training import batches

TAGS = tag_names(["BRAND"])  # O, B-BRAND, I-BRAND


def test_tag_names_give_each_label_a_begin_and_inside_class() -> None:
    assert tag_names(["BRAND"]) == ["O", "B-BRAND", "I-BRAND"]
    assert tag_names(["ORG", "PRODUCT"]) == ["O", "B-ORG", "I-ORG", "B-PRODUCT", "I-PRODUCT"]


def test_word_tags_follow_doc_ents_and_ignore_unknown_labels() -> None:
    # Given a post with a two-token brand, a one-token brand and a place
    doc = spacy.blank("en")("new Fenty Beauty gloss from Sephora in Paris")
    doc.ents = [
        Span(doc, 1, 3, "BRAND"),
        Span(doc, 5, 6, "BRAND"),
        Span(doc, 7, 8, "GPE"),
    ]
    # Then the brands are B/I per token, the place (not a trained label) and the rest O
    assert word_tags(doc, TAGS) == [0, 1, 2, 0, 0, 1, 0, 0]


def test_only_the_first_word_piece_of_a_word_carries_its_tag() -> None:
    # Given "I love FentyBeauty": [CLS] i love fenty ##bea ##uty [SEP], word 2 is a brand
    word_ids = [None, 0, 1, 2, 2, 2, None, None]  # the last None is padding
    labels = piece_labels(word_ids, [0, 0, 1])
    # Then the special tokens and later pieces are ignored by the loss
    assert labels == [IGNORE, 0, 0, 1, IGNORE, IGNORE, IGNORE, IGNORE]


def test_a_repeated_word_index_after_a_gap_is_not_a_new_word() -> None:
    # Word ids only grow; the same index twice in a row is the same word
    assert piece_labels([None, 0, 0, 1, None], [1, 2]) == [IGNORE, 1, IGNORE, 2, IGNORE]


def test_first_pieces_map_words_back_and_mark_words_without_pieces() -> None:
    # Given 5 spaCy tokens where token 2 is whitespace (no piece) and token 4 was cut off
    word_ids = [None, 0, 1, 1, 3, None]
    # Then each token points at its first piece, or None
    assert first_pieces(word_ids, 5) == [1, 2, None, 4, None]


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        (["O", "B-BRAND", "I-BRAND", "O"], [(1, 3, "BRAND")]),
        (["B-BRAND", "B-BRAND"], [(0, 1, "BRAND"), (1, 2, "BRAND")]),
        (["O", "I-BRAND", "I-BRAND"], [(1, 3, "BRAND")]),  # I- after O starts a span
        (["B-ORG", "I-PRODUCT"], [(0, 1, "ORG"), (1, 2, "PRODUCT")]),  # label change
        (["O", "B-BRAND"], [(1, 2, "BRAND")]),  # a span ending at the last token
        (["O", "O"], []),
        ([], []),
    ],
)
def test_decode_spans_reads_bio_tags(tags: list[str], spans: list[tuple[int, int, str]]) -> None:
    assert decode_spans(tags) == spans


TAGS = ["O", "B-BRAND", "I-BRAND", "B-ORG", "I-ORG"]


def log_rows(*rows: list[float]) -> np.ndarray:
    """Log-probabilities from rows of probabilities over :data:`TAGS`."""
    with np.errstate(divide="ignore"):
        return np.log(np.array(rows, dtype=float))


def test_best_tags_is_the_argmax_when_the_argmax_obeys_bio() -> None:
    rows = log_rows(
        [0.8, 0.1, 0.0, 0.1, 0.0],
        [0.1, 0.7, 0.1, 0.1, 0.0],
        [0.2, 0.0, 0.6, 0.1, 0.1],
    )
    assert best_tags(rows, TAGS) == ["O", "B-BRAND", "I-BRAND"]


def test_a_stray_inside_tag_after_outside_is_never_decoded() -> None:
    # Given a token whose argmax is I-BRAND right after an O: argmax would make it a span
    rows = log_rows([0.9, 0.05, 0.05, 0.0, 0.0], [0.4, 0.1, 0.5, 0.0, 0.0])
    assert decode_spans(["O", "I-BRAND"]) == [(1, 2, "BRAND")]
    # Then the best valid path is chosen instead: O O (0.9*0.4) beats O B (0.9*0.1)
    assert best_tags(rows, TAGS) == ["O", "O"]


def test_a_strong_continuation_pulls_its_start_into_a_span() -> None:
    # Given a weak B-BRAND and a confident I-BRAND after it
    rows = log_rows([0.55, 0.45, 0.0, 0.0, 0.0], [0.05, 0.0, 0.95, 0.0, 0.0])
    # Then B I (0.45*0.95) beats O O (0.55*0.05): one two-token span
    assert best_tags(rows, TAGS) == ["B-BRAND", "I-BRAND"]


def test_inside_never_continues_another_label_nor_starts_a_post() -> None:
    # Given I-ORG after B-BRAND, and I-BRAND as the first token's argmax
    rows = log_rows([0.1, 0.3, 0.6, 0.0, 0.0], [0.0, 0.1, 0.25, 0.15, 0.5])
    # Then the best valid path: B-BRAND I-BRAND (0.3*0.25) over B-BRAND B-ORG (0.3*0.15)
    assert best_tags(rows, TAGS) == ["B-BRAND", "I-BRAND"]
    assert best_tags(np.empty((0, len(TAGS))), TAGS) == []


def test_decoded_spans_are_spacy_token_spans() -> None:
    # Given a post and one tag per spaCy token, as the component derives them
    doc = spacy.blank("en")("got the new iPhone 15 Pro at #BestBuy today")
    tags = ["O", "O", "O", "B-BRAND", "I-BRAND", "I-BRAND", "O", "O", "B-BRAND", "O"]
    assert len(tags) == len(doc)
    # Then the spans snap to token boundaries and read back as text
    doc.ents = [Span(doc, s, e, label) for s, e, label in decode_spans(tags)]
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("iPhone 15 Pro", "BRAND"),
        ("BestBuy", "BRAND"),
    ]


def test_recipe_is_a_setting_with_its_own_knobs(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the default settings, the fast recipe is chosen and its epochs count
    default = load_settings().train
    assert default.recipe == "fast" and default.epochs == default.max_epochs
    assert default.as_params(1)["recipe"] == "fast"
    assert default.as_params(1)["recipe_changed"] == "none"
    assert "accurate_epochs" not in default.as_params(1)
    # When the environment chooses the accurate recipe
    monkeypatch.setenv("NER_TRAIN__RECIPE", "accurate")
    monkeypatch.setenv("NER_TRAIN__ACCURATE_EPOCHS", "3")
    train = load_settings().train
    # Then its epochs are the ones that count, and its knobs are MLflow params
    assert train.recipe == "accurate" and train.epochs == 3
    params = train.as_params(1)
    assert params["recipe"] == "accurate" and params["accurate_epochs"] == 3
    assert params["recipe_changed"] == "accurate_epochs"
    assert params["accurate_learn_rate"] == train.accurate_learn_rate
    assert params["accurate_average"] == train.accurate_average


def test_averaging_more_epochs_than_are_trained_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert TrainSettings(accurate_epochs=3, accurate_average=3).accurate_average == 3
    with pytest.raises(ValueError, match="accurate_average"):
        TrainSettings(accurate_epochs=2, accurate_average=5)
    # And from the environment, the error names what to fix
    monkeypatch.setenv("NER_TRAIN__ACCURATE_AVERAGE", "7")
    with pytest.raises(ConfigError, match="accurate_epochs") as refused:
        load_settings()
    # without dumping every training knob's value
    assert "NER_TRAIN__ACCURATE_AVERAGE=7 cannot exceed NER_TRAIN__ACCURATE_EPOCHS=6" in str(
        refused.value
    )
    assert "--set train.accurate_average" in str(refused.value)
    assert "lower accurate_average or raise accurate_epochs" in str(refused.value)
    assert "max_epochs" not in str(refused.value)


def test_the_accurate_recipes_params_hold_no_spacy_knob() -> None:
    params = TrainSettings(recipe="accurate").as_params(4)
    assert params["seed"] == 4 and params["accurate_average"] == 1
    assert params["accurate_freeze_embeddings"] is True
    assert params["accurate_freeze_layers"] == 0
    assert {"max_epochs", "learn_rate", "dropout", "checkpoint"}.isdisjoint(params)
    # The fast recipe's params are the spaCy knobs, not the accurate ones
    fast = TrainSettings().as_params(4)
    assert fast["max_epochs"] == 10 and "accurate_average" not in fast


def test_the_accurate_recipes_params_name_its_encoder_and_speed_knobs(tmp_path: Path) -> None:
    from ner.transformer import base_dir

    # The default folder is named by the encoder's published name, another by its folder's
    assert TrainSettings(recipe="accurate").as_params(1)["accurate_model"] == "all-MiniLM-L6-v2"
    shipped = TrainSettings(recipe="accurate", accurate_model=str(base_dir()))
    assert shipped.as_params(1)["accurate_model"] == "all-MiniLM-L6-v2"
    other = TrainSettings(recipe="accurate", accurate_model=str(tmp_path / "all-mpnet-base-v2"))
    params = other.as_params(1)
    assert params["accurate_model"] == "all-mpnet-base-v2"
    assert "accurate_model" in params["recipe_changed"].split(",")
    # The speed knobs are off by default; bfloat16 is recorded as this machine runs it
    assert (params["accurate_length_buckets"], params["accurate_bf16"]) == (False, False)
    fast = TrainSettings(recipe="accurate", accurate_length_buckets=True, accurate_bf16="auto")
    assert set(fast.changed_knobs()) == {"accurate_bf16", "accurate_length_buckets"}
    assert fast.as_params(1)["accurate_bf16"] is uses_bf16("auto")


@pytest.mark.parametrize(
    ("setting", "flags", "expected"),
    [
        ("auto", "fpu sse avx512f amx_bf16 amx_tile", True),
        ("auto", "fpu sse avx512f avx512_bf16", True),
        ("auto", "fpu sse avx2", False),
        ("auto", None, False),  # no /proc/cpuinfo (macOS): float32
        (True, "fpu sse avx2", True),
        (False, "amx_bf16", False),
    ],
)
def test_bf16_is_used_as_set_or_where_the_cpu_has_native_bfloat16(
    tmp_path: Path, setting: bool | str, flags: str | None, expected: bool
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
    assert uses_bf16(setting, cpuinfo) is expected


def test_length_buckets_keep_every_post_once_in_as_many_batches_of_similar_length() -> None:
    nlp = spacy.blank("en")
    rng = random.Random(3)
    docs = [nlp(" ".join(["w"] * rng.randint(1, 60))) for _ in range(1000)]
    plain = batches(docs, 16, None)
    # Without buckets: the posts in their order, cut every 16
    assert [d for b in plain for d in b] == docs and [len(b) for b in plain[:-1]] == [16] * 62
    bucketed = batches(docs, 16, random.Random(1))
    # With buckets: the same posts once each, in as many batches (the last partial batch
    # of each 800-post pool: one here) ...
    assert sorted(map(id, (d for b in bucketed for d in b))) == sorted(map(id, docs))
    assert len(bucketed) == len(plain) == 63

    def padded(cut: list[list[Doc]]) -> int:
        return sum(max(len(d) for d in b) * len(b) for b in cut)

    # ... each padding far fewer tokens, in an order drawn from the generator given
    assert padded(bucketed) < 0.8 * padded(plain)
    assert bucketed != sorted(bucketed, key=lambda b: len(b[0]))
    assert [list(map(id, b)) for b in batches(docs, 16, random.Random(1))] == [
        list(map(id, b)) for b in bucketed
    ]


def test_an_unknown_recipe_is_refused() -> None:
    with pytest.raises(ValueError, match="fast"):
        TrainSettings(recipe="precise")  # type: ignore[arg-type]


def test_without_torch_the_error_names_the_install_target(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a Python where torch cannot be imported
    monkeypatch.setitem(sys.modules, "torch", None)
    # Then using the accurate recipe's model says what to install
    with pytest.raises(ModelError, match="make install-accurate"):
        require_torch()


def test_a_run_choosing_the_accurate_recipe_without_its_install_fails_at_once(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flows.context import PERMANENT_ERRORS, RunContext

    # Given a Python where torch cannot be imported, and settings that choose the recipe
    monkeypatch.setitem(sys.modules, "torch", None)
    settings = load_settings(
        {
            "storage_uri": str(tmp_path / "storage"),
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "train": {"recipe": "accurate"},
        }
    )
    # When a flow run opens its context, it fails before any work, naming the fix
    with pytest.raises(OptionalInstallError, match=r"make install-accurate.*torch") as caught:
        RunContext.open(settings)
    # And the error is permanent: Prefect's retry policy does not retry it
    assert isinstance(caught.value, PERMANENT_ERRORS)
    # The same check names missing weights when the packages are there
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    with pytest.raises(OptionalInstallError, match="no all-MiniLM-L6-v2 weights"):
        check_installed(str(tmp_path / "weights"))
    # And the fast recipe needs none of it
    RunContext.open(settings.model_copy(update={"train": TrainSettings()}))


def test_freezing_more_layers_than_the_base_has_fails_before_any_work(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flows.context import PERMANENT_ERRORS, RunContext

    # Given base weights whose config declares 6 layers, and the packages present
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text('{"num_hidden_layers": 6}', encoding="utf-8")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    # Then freezing all 6 passes the check, and 7 is refused naming the setting and the count
    TrainSettings(
        recipe="accurate", accurate_model=str(weights), accurate_freeze_layers=6
    ).check_installed()
    seven = TrainSettings(recipe="accurate", accurate_model=str(weights), accurate_freeze_layers=7)
    with pytest.raises(ConfigError, match=r"NER_TRAIN__ACCURATE_FREEZE_LAYERS=7.*has 6 layers"):
        seven.check_installed()
    # And a flow run choosing it fails when it opens its context, permanently
    train = {"recipe": "accurate", "accurate_model": str(weights), "accurate_freeze_layers": 7}
    settings = load_settings(
        {
            "storage_uri": str(tmp_path / "storage"),
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "train": train,
        }
    )
    with pytest.raises(ConfigError, match="6 or fewer") as caught:
        RunContext.open(settings)
    assert isinstance(caught.value, PERMANENT_ERRORS)
    assert not isinstance(caught.value, OptionalInstallError)
    # A config without the key leaves the check to loading the weights
    (weights / "config.json").write_text("{}", encoding="utf-8")
    seven.check_installed()


def test_missing_base_weights_name_the_install_target(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="make install-accurate"):
        base_weights(str(tmp_path))


def test_an_untrained_component_refuses_to_predict() -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe(FACTORY, name=COMPONENT)
    with pytest.raises(ModelError, match="no model"):
        nlp("a post about Nike")


def test_prediction_keeps_the_classifier_among_the_pipes_it_runs() -> None:
    # Given a pipeline as the accurate recipe saves it, plus a pipe that sets no entities
    nlp = spacy.blank("en")
    nlp.add_pipe(FACTORY, name=COMPONENT)
    nlp.add_pipe("sentencizer")
    add_label_filter(nlp, {"ORG": "BRAND"}, ["BRAND"])
    # Then the apply flow and the evaluation skip only the pipe that sets no entities
    assert unneeded_pipes(nlp) == ["sentencizer"]
