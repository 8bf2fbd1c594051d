"""Fine-tune the accurate recipe's token classifier (:mod:`ner.transformer`).

A plain torch loop over spaCy-tokenised posts whose gold spans are already aligned to tokens
(the ``train.spacy`` / ``dev.spacy`` corpora :func:`ner.training.train` writes for both
recipes, after the same dev split, negative sampling and label renaming): AdamW with weight
decay 0.01, linear warm-up over the first tenth of the steps then linear decay to 0,
batches of :data:`BATCH_SIZE` posts, gradients clipped at norm 1, and a fixed seed (head
initialisation, dropout, batch order). After each epoch the pipeline is scored on the dev
slice and one line appended to the curve file (the format of :func:`ner.training.curve_logger`,
so progress lines and MLflow curves work unchanged). The last epoch's model is kept, or the
mean of the last ``accurate_average`` epochs' weights (checkpoint averaging).

Knobs (:class:`ner.settings.TrainSettings`): ``accurate_epochs``, ``accurate_learn_rate``,
``accurate_average``, ``accurate_freeze_embeddings``, ``accurate_freeze_layers``,
``accurate_threads`` (torch threads, 0 = torch's default), ``accurate_model`` (base weights
folder), ``accurate_length_buckets`` (batches of posts of similar length, :func:`batches`),
``accurate_bf16`` (bfloat16 forward passes: true, false, or ``auto`` = where the CPU has
native bfloat16, :func:`ner.transformer.uses_bf16`). Raises :class:`ner.errors.ModelError` when
torch is missing (naming ``make install-accurate``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from ner.errors import ModelError
from ner.settings import TrainSettings
from ner.transformer import (
    COMPONENT,
    FACTORY,
    IGNORE,
    TransformerTagger,
    base_weights,
    encode,
    load_classifier,
    piece_labels,
    require_torch,
    tag_names,
    uses_bf16,
    word_tags,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 16
#: Word pieces per training post (WNUT-17 tweets have at most about 90).
TRAIN_MAX_LENGTH = 128
WARMUP_SHARE = 0.1
WEIGHT_DECAY = 0.01
#: Label smoothing of the cross-entropy (0: none, the recipe as measured; a module constant
#: that bench/experiments sets for a run, as :data:`BATCH_SIZE`).
LABEL_SMOOTHING = 0.0
#: Batches per pool sorted by length under ``accurate_length_buckets`` (:func:`batches`).
BUCKET_BATCHES = 50


@dataclass(frozen=True)
class Corpus:
    """Training posts as spaCy docs with gold ``doc.ents``, and the dev slice."""

    train: list[Doc]
    dev: list[Doc]

    @classmethod
    def from_disk(cls, train_path: Path, dev_path: Path, nlp: Language) -> Corpus:
        """Read the two DocBin files :func:`ner.training.train` wrote."""
        read = [list(DocBin().from_disk(p).get_docs(nlp.vocab)) for p in (train_path, dev_path)]
        return cls(read[0], read[1])


def fine_tune(
    corpus: Corpus, labels: Sequence[str], recipe: TrainSettings, seed: int, curve_file: Path
) -> Language:
    """A blank English pipeline with a :class:`~ner.transformer.TransformerTagger` for
    ``labels`` fine-tuned on ``corpus.train`` for ``recipe.accurate_epochs`` epochs.

    Its ``meta["performance"]`` holds the last epoch's dev-slice scores in spaCy's form
    (``ents_f``, ``ents_per_type`` ...). Raises :class:`ModelError` without torch or the
    base weights."""
    torch, _ = require_torch()
    if recipe.accurate_threads:
        torch.set_num_threads(recipe.accurate_threads)
    torch.manual_seed(seed)
    nlp = spacy.blank("en")
    tags = tag_names(labels)
    model, tokenizer = load_classifier(base_weights(recipe.accurate_model), tags)
    tagger = nlp.add_pipe(FACTORY, name=COMPONENT, config={"labels": list(labels)})
    if not isinstance(tagger, TransformerTagger):  # another package took the factory name
        raise ModelError(f"factory {FACTORY!r} did not build a TransformerTagger")
    tagger.set_model(model, tokenizer)
    if recipe.accurate_freeze_embeddings:
        freeze_embeddings(model)
    freeze_layers(model, recipe.accurate_freeze_layers)
    steps = recipe.accurate_epochs * -(-len(corpus.train) // BATCH_SIZE)
    optimizer, schedule = _optimizer(model, recipe.accurate_learn_rate, steps)
    order = random.Random(seed)
    step, scores, average = 0, {}, WeightAverage()
    train_step = partial(_step, bf16=True) if uses_bf16(recipe.accurate_bf16) else _step
    for epoch in range(recipe.accurate_epochs):
        started = time.perf_counter()
        docs = list(corpus.train)
        order.shuffle(docs)
        loss = 0.0
        model.train()
        for batch in batches(docs, BATCH_SIZE, order if recipe.accurate_length_buckets else None):
            loss += train_step(tagger, batch, optimizer)
            schedule.step()
            step += 1
        scores = nlp.evaluate([Example(nlp.make_doc(d.text), d) for d in corpus.dev])
        _append_curve(curve_file, epoch, step, loss, scores, time.perf_counter() - started)
        if epoch >= recipe.accurate_epochs - recipe.accurate_average:
            average.add(model)
    if average.count > 1:
        average.load_into(model)
        scores = nlp.evaluate([Example(nlp.make_doc(d.text), d) for d in corpus.dev])
    nlp.meta["performance"] = scores
    return nlp


class WeightAverage:
    """Running mean of a torch model's floating-point weights over the checkpoints
    :meth:`add`-ed (checkpoint averaging; Izmailov et al. 2018, "Averaging Weights Leads to
    Wider Optima and Better Generalization")."""

    def __init__(self) -> None:
        self.mean: dict[str, Any] = {}
        self.count = 0

    def add(self, model: Any) -> None:
        """Fold ``model``'s current weights into the mean."""
        self.count += 1
        for name, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if name not in self.mean:
                self.mean[name] = value.detach().clone()
            else:
                self.mean[name].add_(value.detach() - self.mean[name], alpha=1.0 / self.count)

    def load_into(self, model: Any) -> None:
        """Set ``model``'s floating-point weights to the mean (other buffers are kept)."""
        model.load_state_dict(self.mean, strict=False)


def freeze_embeddings(model: Any) -> None:
    """Keep ``model``'s embedding layer (word pieces, positions, token types; about half of
    MiniLM-L6's 22 M parameters) as pretrained: it gets no gradient and no optimizer state."""
    model.base_model.embeddings.requires_grad_(False)


def freeze_layers(model: Any, count: int) -> None:
    """Keep ``model``'s lowest ``count`` transformer layers as pretrained (no gradient, no
    optimizer state). Raises :class:`ModelError` when the base has fewer layers."""
    layers = model.base_model.encoder.layer
    if count > len(layers):
        raise ModelError(
            f"accurate_freeze_layers={count}, but the base model has {len(layers)} layers"
        )
    for layer in layers[:count]:
        layer.requires_grad_(False)


def _optimizer(model: Any, learn_rate: float, steps: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters (weight decay off for biases and LayerNorm) and
    its linear warm-up/decay."""
    torch, transformers = require_torch()
    no_decay = ("bias", "LayerNorm.weight")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for n, p in trainable if not n.endswith(no_decay)],
            "weight_decay": WEIGHT_DECAY,
        },
        {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=learn_rate)
    warmup = int(steps * WARMUP_SHARE)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup, max(steps, 1))
    return optimizer, schedule


def training_batch(tagger: TransformerTagger, docs: Sequence[Doc]) -> tuple[Any, Any]:
    """``(batch, targets)`` of ``docs``: the tokenizer's encoding (word pieces padded to the
    longest post, at most :data:`TRAIN_MAX_LENGTH`) and a flat tensor of one tag id per
    word piece (:data:`IGNORE` where the loss does not look)."""
    torch, _ = require_torch()
    words = [[t.text for t in doc] for doc in docs]
    batch = encode(tagger.tokenizer, words, TRAIN_MAX_LENGTH)
    width = batch["input_ids"].shape[1]
    targets = []
    for i, doc in enumerate(docs):
        row = piece_labels(batch.word_ids(i), word_tags(doc, tagger.tags))
        targets.append(row + [IGNORE] * (width - len(row)))
    return batch, torch.tensor(targets).reshape(-1)


def batches(docs: Sequence[Doc], size: int, buckets: random.Random | None) -> list[list[Doc]]:
    """``docs`` (shuffled already) cut into batches of ``size``, in order. With ``buckets``
    (the batch order's random generator), each pool of :data:`BUCKET_BATCHES` batches' posts
    is sorted by length (spaCy tokens) before it is cut, and the batches are then shuffled:
    the same number of batches, each padding fewer word pieces (on WNUT-17 train, 41 % of a
    random batch's pieces are padding, 3 % of a bucketed one's)."""
    if buckets is None:
        return [list(docs[i : i + size]) for i in range(0, len(docs), size)]
    pool = BUCKET_BATCHES * size
    cut: list[list[Doc]] = []
    for start in range(0, len(docs), pool):
        part = sorted(docs[start : start + pool], key=len)
        cut.extend(part[i : i + size] for i in range(0, len(part), size))
    buckets.shuffle(cut)
    return cut


def _step(
    tagger: TransformerTagger, docs: Sequence[Doc], optimizer: Any, *, bf16: bool = False
) -> float:
    """One optimizer step of ``tagger``'s model on ``docs`` (the forward pass in bfloat16
    with ``bf16``: torch's CPU autocast); returns the batch's mean cross-entropy."""
    torch, _ = require_torch()
    batch, targets = training_batch(tagger, docs)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = tagger.model(**batch).logits
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets,
        ignore_index=IGNORE,
        label_smoothing=LABEL_SMOOTHING,
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_(tagger.model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.item())


def _append_curve(
    path: Path, epoch: int, step: int, loss: float, scores: dict[str, Any], seconds: float
) -> None:
    """One line of the training curve (the keys of :func:`ner.training.curve_logger`)."""
    f1 = float(scores.get("ents_f") or 0.0)
    row = {
        "epoch": epoch,
        "step": step,
        "score": f1,
        "loss_ner": loss,
        "ents_p": float(scores.get("ents_p") or 0.0),
        "ents_r": float(scores.get("ents_r") or 0.0),
        "ents_f": f1,
        "seconds": seconds,
    }
    log.info(
        "accurate recipe epoch %d: loss %.2f, dev F1 %.3f (%.0f s)", epoch + 1, loss, f1, seconds
    )
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
