"""The accurate recipe's training helpers (ner.transformer_training): checkpoint averaging
and frozen embeddings and layers.

Needs torch and the base weights (``make install-accurate``): marker ``accurate``, run by
``make test-accurate``."""

from __future__ import annotations

from typing import Any

import pytest
import spacy

from ner.errors import ModelError
from ner.transformer import (
    FACTORY,
    TransformerTagger,
    base_weights,
    load_classifier,
    require_torch,
    tag_names,
)
from ner.transformer_training import (
    WeightAverage,
    _optimizer,
    _step,
    freeze_embeddings,
    freeze_layers,
)

pytestmark = pytest.mark.accurate


def test_the_average_is_the_mean_of_the_checkpoints_added() -> None:
    torch, _ = require_torch()
    model = torch.nn.BatchNorm1d(2)  # float weights and an integer buffer
    average = WeightAverage()
    # Given three checkpoints whose weights are 1, 2 and 6
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            model.weight.fill_(value)
            model.num_batches_tracked.fill_(int(value))
        average.add(model)
    # When the mean is loaded back
    average.load_into(model)
    # Then each float weight is their mean, and the integer buffer keeps the last value
    assert average.count == 3
    assert model.weight.tolist() == pytest.approx([3.0, 3.0])
    assert int(model.num_batches_tracked) == 6


def test_adding_copies_so_later_training_does_not_change_the_mean() -> None:
    torch, _ = require_torch()
    model = torch.nn.Linear(2, 1)
    average = WeightAverage()
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.add(model)
    with torch.no_grad():
        model.weight.fill_(5.0)  # training goes on after the checkpoint
    average.load_into(model)
    assert model.weight.tolist() == [[1.0, 1.0]]


def _tagger() -> TransformerTagger:
    """A tagger for ORG over the base weights, with a fixed head initialisation."""
    torch, _ = require_torch()
    torch.manual_seed(0)
    model, tokenizer = load_classifier(base_weights(), tag_names(["ORG"]))
    tagger = spacy.blank("en").add_pipe(FACTORY, config={"labels": ["ORG"]})
    assert isinstance(tagger, TransformerTagger)
    tagger.set_model(model, tokenizer)
    return tagger


def _train_one_step(tagger: TransformerTagger, optimizer: Any) -> None:
    """One optimizer step on a post with a brand."""
    doc = spacy.blank("en").make_doc("love my nike shoes")
    doc.ents = [doc.char_span(8, 12, label="ORG")]
    _step(tagger, [doc], optimizer)


def test_frozen_embeddings_stay_as_pretrained_while_the_layers_learn() -> None:
    torch, _ = require_torch()
    tagger = _tagger()
    model = tagger.model
    # Given the embedding layer frozen
    freeze_embeddings(model)
    words = model.base_model.embeddings.word_embeddings.weight.detach().clone()
    layer = model.base_model.encoder.layer[0].output.dense.weight.detach().clone()
    optimizer, _ = _optimizer(model, 1e-3, steps=1)
    # Then the optimizer holds only the trainable parameters
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.base_model.embeddings.word_embeddings.weight) not in held
    assert len(held) == sum(1 for p in model.parameters() if p.requires_grad) > 0
    # When one step is trained
    _train_one_step(tagger, optimizer)
    # Then the embeddings are unchanged and the first layer moved
    assert torch.equal(model.base_model.embeddings.word_embeddings.weight, words)
    assert not torch.equal(model.base_model.encoder.layer[0].output.dense.weight, layer)


def test_frozen_lower_layers_stay_as_pretrained_while_the_upper_ones_learn() -> None:
    torch, _ = require_torch()
    tagger = _tagger()
    layers = tagger.model.base_model.encoder.layer
    # Given the two lowest of the base's layers frozen
    freeze_layers(tagger.model, 2)
    before = [layer.output.dense.weight.detach().clone() for layer in layers]
    # When one step is trained
    _train_one_step(tagger, _optimizer(tagger.model, 1e-3, steps=1)[0])
    # Then layers 0 and 1 are unchanged and every layer above them moved
    after = [layer.output.dense.weight for layer in layers]
    assert [torch.equal(a, b) for a, b in zip(after, before, strict=True)] == [
        True,
        True,
        *[False] * (len(layers) - 2),
    ]


def test_freezing_more_layers_than_the_base_has_is_refused() -> None:
    model, _ = load_classifier(base_weights(), tag_names(["ORG"]))
    with pytest.raises(ModelError, match="accurate_freeze_layers=7, but the base model has 6"):
        freeze_layers(model, 7)


def test_a_bfloat16_step_trains_the_float32_weights_as_a_float32_step_does() -> None:
    torch, _ = require_torch()
    doc = spacy.blank("en").make_doc("love my nike shoes")
    doc.ents = [doc.char_span(8, 12, label="ORG")]
    losses, moved = [], []
    for bf16 in (False, True):
        tagger = _tagger()  # the same head initialisation each time
        head = tagger.model.classifier.weight.detach().clone()
        optimizer, _ = _optimizer(tagger.model, 1e-3, steps=1)
        losses.append(_step(tagger, [doc], optimizer, bf16=bf16))
        # the weights stay float32 and move
        assert tagger.model.classifier.weight.dtype == torch.float32
        moved.append(tagger.model.classifier.weight.detach() - head)
    # Then the loss is the float32 loss within bfloat16's precision (8 bits of mantissa), and
    # the head moved the same way
    assert losses[1] == pytest.approx(losses[0], rel=0.05)
    assert (
        float(torch.nn.functional.cosine_similarity(moved[0].flatten(), moved[1].flatten(), 0))
        > 0.9
    )
