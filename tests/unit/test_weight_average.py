"""Checkpoint averaging of the accurate recipe (ner.transformer_training.WeightAverage).

Needs torch (``make install-accurate``): marker ``accurate``, run by ``make test-accurate``."""

from __future__ import annotations

import pytest

from ner.transformer import require_torch
from ner.transformer_training import WeightAverage

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
