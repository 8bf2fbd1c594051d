"""Train a challenger brand model with spaCy, driven by ``ner/configs/train.cfg``.

The recipe fine-tunes the ``ner`` component of a starting pipeline: the pretrained base
(``settings.base_model``) or the current champion. The training pool must already exclude
gold posts (see :mod:`ner.datasets`); a slice of it is held back as spaCy's dev set for
checkpoint selection, so the gold set is never seen during training.

Knobs of the recipe (:class:`ner.settings.TrainSettings`, ``settings.train``):

* ``label_map`` - train our labels under labels the starting ``ner`` already knows
  (``{"BRAND": "ORG"}``), so fine-tuning starts from the pretrained output weights of that
  label instead of a fresh one; the saved pipeline's label filter maps them back.
* ``negative_fraction`` - the share of posts without any span that is trained on (seeded,
  per post). Labelled social posts are mostly brand-free; keeping all of them teaches the
  model to say "no brand" everywhere.
* ``lowercase`` - the share of training posts lower-cased in each epoch (augmentation).
* ``checkpoint`` - keep the checkpoint that scored best on the held-back slice of the
  pool (``"best"``), or the last one (``"last"``): the slice comes from the same posts as
  the training data, so for brands never seen in training it favours over-cautious models.
* ``hard_negatives`` - at most this many unlabelled posts in which the starting ``ner``
  finds entities but no organisation or product, trained as brand-less posts with those
  entities under their own labels (dropped again by the label filter at prediction).
* ``rehearsal_uri`` - labelled posts of a general source trained beside the labels
  (:func:`ner.rehearsal.rehearsal_set`; the flow reads them, :func:`train` takes them as
  ``rehearsal``).
* ``learn_rate``, ``dropout``, ``max_epochs`` … as in spaCy's config.

A starting pipeline with static vectors (``en_core_web_md``, the default base) hands them to
training (``paths.vectors``); without that the sourced ``ner`` cannot run.

Bench/README.md records how the defaults of :class:`ner.settings.TrainSettings` were chosen.

Training runs in a process of its own (:func:`ner.training_worker.train_isolated`, through
``python -m ner.training_worker``): spaCy draws batches and dropout masks from the global
random generators, so only a fresh process makes the model a function of data, recipe and
seed; and the child is started from a module entry point, so it never re-imports the
caller's script (no ``if __name__ == "__main__"`` guard needed).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import metadata, resources
from pathlib import Path
from typing import IO, Any

import spacy
from spacy.language import Language

from ner import __version__
from ner.datasets import dataset_hash, split_point, to_docbin
from ner.errors import ConfigError, TrainingDataError, TrainingError
from ner.models import BrandList, add_gazetteer, add_label_filter, load_spacy
from ner.rehearsal import DEFAULT_SKIP, hard_negatives
from ner.settings import TrainSettings
from ner.tempfiles import owned_temp_dir
from ner.tokenizer import adapt_tokenizer
from ner.transformer import base_name
from ner.transformer_training import Corpus, fine_tune
from ner.types import Annotation, Rejected

log = logging.getLogger(__name__)

CURVE_LOGGER = "brandloop.CurveLogger.v1"
#: Fewest labelled posts a challenger trains on (one for training, one for its dev slice).
MIN_TRAIN_POSTS = 2


def default_config_path() -> Path:
    """The training config shipped inside the package."""
    return Path(str(resources.files("ner") / "configs" / "train.cfg"))


@dataclass(frozen=True)
class TrainResult:
    """A trained pipeline on disk and how training went."""

    model_dir: Path
    start_from: str
    train_size: int
    dev_size: int
    rejected: tuple[Rejected, ...]
    dev_scores: dict[str, float]
    curve: tuple[dict[str, float], ...]
    seconds: float
    #: Unlabelled posts trained on as hard negatives (``recipe.hard_negatives``).
    hard_negatives: int = 0
    #: Posts of the rehearsal set trained on (``recipe.rehearsal_uri``), after sampling.
    rehearsed: int = 0


@dataclass(frozen=True)
class EpochProgress:
    """One dev-slice evaluation while training: ``epoch`` (1-based) of ``max_epochs``, the
    optimizer ``step``, the ``ner`` loss summed over the ``batches`` trained since the
    previous evaluation and the dev F1 (0..1) of the held-back slice of the pool."""

    epoch: int
    max_epochs: int
    step: int
    loss: float
    dev_f1: float
    batches: int = 1

    @property
    def loss_per_batch(self) -> float:
        """The mean ``ner`` loss of a batch since the previous evaluation: comparable from one
        evaluation to the next (the sum covers 1 batch at step 0, then ``eval_frequency``)."""
        return self.loss / max(self.batches, 1)

    @classmethod
    def from_curve(
        cls, row: Mapping[str, Any], max_epochs: int, previous_step: int | None = None
    ) -> EpochProgress:
        """From one line of the training curve (see :func:`curve_logger`); ``previous_step``
        is the step of the evaluation before it (None for the first: spaCy evaluates after
        the first batch, step 0, then every ``eval_frequency`` steps)."""
        step = int(row.get("step", 0))
        return cls(
            epoch=int(row.get("epoch", 0)) + 1,  # spaCy counts epochs from 0
            max_epochs=max_epochs,
            step=step,
            loss=float(row.get("loss_ner", 0.0)),
            dev_f1=curve_f1(row),
            batches=step + 1 if previous_step is None else step - previous_step,
        )


def curve_f1(row: Mapping[str, Any]) -> float:
    """The held-back slice's F1 on a curve row: of our labels (``labels_f``) when the row has
    it, else spaCy's ``ents_f`` (every entity type), else the checkpoint score."""
    return float(row.get("labels_f", row.get("ents_f", row.get("score", 0.0))))


#: ``on_epoch(progress)``: called after each dev-slice evaluation while training.
OnEpoch = Callable[[EpochProgress], None]


@spacy.registry.loggers(CURVE_LOGGER)
def curve_logger(path: str | None = None, labels: Sequence[str] = ()) -> Callable[..., Any]:
    """spaCy training logger that appends one JSON line per evaluation to ``path``.

    With ``labels`` (the names the ``ner`` is trained with), each line also has
    ``labels_f``: the F1 of those labels alone (their mean with several), since spaCy's
    ``ents_f`` counts every entity the starting pipeline still predicts (``PERSON``,
    ``GPE`` ...) as false positives on a slice whose gold holds only our labels."""

    def setup(
        nlp: Language, stdout: IO[str] | None = None, stderr: IO[str] | None = None
    ) -> tuple[Callable[[dict[str, Any] | None], None], Callable[[], None]]:
        handle = Path(path).open("a", encoding="utf-8") if path else None  # noqa: SIM115

        def log_step(info: dict[str, Any] | None) -> None:
            if info is None:
                return
            row = {
                "epoch": info.get("epoch", 0),
                "step": info.get("step", 0),
                "score": float(info.get("score") or 0.0),
                "loss_ner": float((info.get("losses") or {}).get("ner", 0.0)),
                "words": info.get("words", 0),
            }
            scores = info.get("other_scores") or {}
            for key in ("ents_p", "ents_r", "ents_f"):
                value = scores.get(key)
                if value is not None:
                    row[key] = float(value)
            if labels:
                row["labels_f"] = _labels_f(scores.get("ents_per_type") or {}, labels)
            log.debug("training step %s", row)
            if handle is not None:
                handle.write(json.dumps(row) + "\n")
                handle.flush()

        def finalize() -> None:
            if handle is not None:
                handle.close()

        return log_step, finalize

    return setup


def _labels_f(per_type: Mapping[str, Any], labels: Sequence[str]) -> float:
    """The mean F1 of ``labels`` in spaCy's ``ents_per_type`` (a label with no gold span
    and no prediction on the slice is absent there, and left out; none at all: 0)."""
    found = [float(per_type[label].get("f") or 0.0) for label in labels if label in per_type]
    return sum(found) / len(found) if found else 0.0


@dataclass(frozen=True)
class StartPipeline:
    """The saved copy of the starting pipeline (:func:`prepare_start_pipeline`): its
    ``path``, and whether it has static word vectors (a non-empty vectors table)."""

    path: Path
    has_vectors: bool


def prepare_start_pipeline(start_from: str, labels: Sequence[str], out_dir: Path) -> StartPipeline:
    """Save into ``out_dir`` a copy of the starting pipeline whose ``ner`` knows our
    ``labels`` (only ``ner`` and the components it listens to are kept). Raises
    :class:`TrainingError` when ``start_from`` has no ``ner``."""
    return save_start(load_start(start_from), labels, out_dir)


def load_start(start_from: str) -> Language:
    """The starting pipeline with only ``ner`` and the components it listens to; raises
    :class:`TrainingError` when it has no ``ner``."""
    nlp = load_spacy(start_from)
    if "ner" not in nlp.pipe_names:
        raise TrainingError(f"{start_from!r} has no 'ner' component to fine-tune")
    keep = {"ner"} | {
        name
        for name in nlp.pipe_names
        if name != "ner" and "ner" in (getattr(nlp.get_pipe(name), "listening_components", []))
    }
    for name in list(nlp.pipe_names):
        if name not in keep:
            nlp.remove_pipe(name)
    return nlp


def save_start(nlp: Language, labels: Sequence[str], out_dir: Path) -> StartPipeline:
    """Add ``labels`` to the ``ner`` of ``nlp`` (from :func:`load_start`) and save it."""
    ner = nlp.get_pipe("ner")
    for label in labels:
        ner.add_label(label)  # type: ignore[attr-defined]
    nlp.to_disk(out_dir)
    return StartPipeline(out_dir, has_vectors=nlp.vocab.vectors.shape[0] > 0)


def prepare_start(start_from: str, labels: Sequence[str], out_dir: Path) -> Path:
    """The path of :func:`prepare_start_pipeline` (for callers that need only the path)."""
    return prepare_start_pipeline(start_from, labels, out_dir).path


def sample_negatives(
    annotations: Sequence[Annotation], fraction: float, seed: int
) -> list[Annotation]:
    """Every post with a span, and about ``fraction`` of the posts without one.

    Whether a span-less post is kept depends only on its id and ``seed``, not on the other
    posts or their order, so a post keeps its fate as the labelled set grows.
    """
    if fraction >= 1.0:
        return list(annotations)
    salt = f"brandloop-negatives-{seed}"
    return [a for a in annotations if a.spans or split_point(a.post_id, salt) < fraction]


def relabel(annotations: Sequence[Annotation], mapping: Mapping[str, str]) -> list[Annotation]:
    """The annotations with each span label ``l`` renamed to ``mapping.get(l, l)``."""
    if not mapping:
        return list(annotations)
    return [
        replace(a, spans=tuple(replace(s, label=mapping.get(s.label, s.label)) for s in a.spans))
        for a in annotations
    ]


def dev_slice_size(n_posts: int, fraction: float) -> int:
    """How many of ``n_posts`` labelled posts training holds back as its dev slice (the
    per-epoch F1): ``fraction`` of them rounded, at least 1, none of a single post."""
    return max(1, round(n_posts * fraction)) if n_posts > 1 else 0


def _split_dev(
    annotations: Sequence[Annotation], fraction: float, seed: int
) -> tuple[list[Annotation], list[Annotation]]:
    ordered = sorted(annotations, key=lambda a: a.post_id)
    random.Random(seed).shuffle(ordered)
    n_dev = dev_slice_size(len(ordered), fraction)
    return ordered[n_dev:], ordered[:n_dev]


def train(
    annotations: Sequence[Annotation],
    *,
    start_from: str,
    output_dir: Path,
    labels: Sequence[str] = ("BRAND",),
    recipe: TrainSettings | None = None,
    seed: int = 17,
    curve_path: Path | None = None,
    unlabelled: Sequence[Annotation] = (),
    rehearsal: Sequence[Annotation] = (),
    brands: BrandList | None = None,
) -> TrainResult:
    """Fine-tune ``start_from`` on ``annotations`` and save the final pipeline.

    ``start_from`` is a spaCy package name or a path to a saved pipeline (for example a
    downloaded champion); when it has static vectors, training uses them. The saved
    pipeline has ``ner``, the label filter and, with ``recipe.gazetteer``, the brand
    gazetteer after them (``brands``, default the shipped lists). ``unlabelled``: posts
    nobody labelled (their spans are ignored), from which up to ``recipe.hard_negatives``
    hard negatives are added to the training part (:func:`ner.rehearsal.hard_negatives`,
    judged by the starting ``ner``).
    ``rehearsal``: labelled posts of a general source (:func:`ner.rehearsal.rehearsal_set`),
    added to the training part only (never to the dev slice), labels renamed and brand-less
    posts sampled as for ``annotations``; a post id of ``annotations`` wins over its copy.
    Raises :class:`TrainingDataError` for fewer than :data:`MIN_TRAIN_POSTS` posts or a bad
    ``label_map`` (permanent), :class:`TrainingError` for a failed spaCy run.
    ``curve_path``: where the curve is appended while training, one JSON line per dev-slice
    evaluation (another process can follow it); by default a temporary file.
    """
    recipe = recipe or TrainSettings()
    _check_enough(annotations)
    trained_as = _trained_labels(labels, recipe.label_map)
    rehearsed = _rehearsal_part(rehearsal, annotations, recipe, seed)
    if recipe.recipe == "accurate":
        return _train_accurate(
            annotations, output_dir, labels, recipe, seed, curve_path, rehearsed, brands
        )
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    with owned_temp_dir("brandloop-train-") as work:
        curve_file = curve_path or work / "curve.jsonl"
        start_nlp = load_start(start_from)
        hard = _hard_negatives(
            start_nlp, [*annotations, *rehearsed], unlabelled, trained_as, recipe
        )
        sizes, rejected = _write_corpora(annotations, recipe, seed, work, [*hard, *rehearsed])
        silver_labels = sorted({s.label for a in hard for s in a.spans} - set(trained_as))
        start = save_start(start_nlp, [*trained_as, *silver_labels], work / "start")
        config_path = Path(recipe.config) if recipe.config else default_config_path()
        overrides = _training_overrides(work, start, curve_file, recipe, seed, trained_as)
        nlp = _run_spacy_training(config_path, overrides, work / "output")
        final = _finish(nlp, work / "output" / "model-best", recipe, labels, brands)
        final.meta["brandloop"] = _provenance(start_from, seed, recipe, len(hard), len(rehearsed))
        result = _save_result(
            final, output_dir, curve_file, (recipe, labels), started, start_from, sizes
        )
    log.info("trained on %d posts (%d dev) in %.1fs", sizes[0], sizes[1], result.seconds)
    return replace(result, rejected=rejected, hard_negatives=len(hard), rehearsed=len(rehearsed))


def _check_enough(annotations: Sequence[Annotation]) -> None:
    """:class:`TrainingDataError` for fewer than :data:`MIN_TRAIN_POSTS` posts."""
    if len(annotations) < MIN_TRAIN_POSTS:
        raise TrainingDataError(
            f"need at least {MIN_TRAIN_POSTS} labelled posts to train, got {len(annotations)}"
        )


def _provenance(
    start_from: str, seed: int, recipe: TrainSettings, n_hard: int, n_rehearsed: int
) -> dict[str, Any]:
    """What a trained pipeline's ``meta["brandloop"]`` records of its training."""
    return {
        "start_from": start_from,
        "seed": seed,
        "label_map": dict(recipe.label_map),
        "hard_negatives": n_hard,
        "rehearsed": n_rehearsed,
    }


def training_fingerprint(
    annotations: Sequence[Annotation],
    *,
    start_from: str,
    labels: Sequence[str],
    recipe: TrainSettings,
    seed: int,
    unlabelled: Sequence[Annotation] = (),
    rehearsal: Sequence[Annotation] = (),
    context: Mapping[str, str | None] | None = None,
) -> str:
    """sha256 hex of everything :func:`train` makes a model from: the arguments of the same
    names (posts by :func:`ner.datasets.dataset_hash`, unlabelled posts only when the recipe
    draws hard negatives from them, every knob of the recipe and the bytes of its ``config``
    file), the versions of spaCy, brandloop and (accurate recipe) torch, and ``context``
    (for example the code's commit). Training is a function of
    these (``bench/README.md``, "Reproducible training"), so two runs with one fingerprint
    make the same model. ``start_from`` names the start (a package, or ``champion v3``), not its
    bytes. Raises :class:`ConfigError` when ``recipe.config`` cannot be read."""
    try:
        config = Path(recipe.config).read_bytes() if recipe.config else b""
    except OSError as exc:
        raise ConfigError(
            f"NER_TRAIN__CONFIG: cannot read the training config {recipe.config}: {exc}"
        ) from exc
    payload = {
        "posts": dataset_hash(annotations),
        "unlabelled": dataset_hash(unlabelled) if recipe.hard_negatives else None,
        "rehearsal": dataset_hash(rehearsal),
        "start_from": start_from,
        "labels": list(labels),
        "recipe": recipe.model_dump(mode="json"),
        "seed": seed,
        "config": hashlib.sha256(config).hexdigest(),
        "spacy": spacy.__version__,
        "brandloop": __version__,
        "torch": _installed("torch") if recipe.recipe == "accurate" else None,
        "context": dict(context or {}),
    }
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _installed(package: str) -> str | None:
    """The installed version of ``package`` (read from its metadata, not imported)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _rehearsal_part(
    rehearsal: Sequence[Annotation],
    annotations: Sequence[Annotation],
    recipe: TrainSettings,
    seed: int,
) -> list[Annotation]:
    """The rehearsal posts trained on: those whose id is not among ``annotations``, labels
    renamed by ``recipe.label_map``, brand-less ones sampled by ``recipe.negative_fraction``."""
    ours = {a.post_id for a in annotations}
    kept = [a for a in rehearsal if a.post_id not in ours]
    return sample_negatives(relabel(kept, recipe.label_map), recipe.negative_fraction, seed)


def _save_result(
    final: Language,
    output_dir: Path,
    curve_file: Path,
    trained: tuple[TrainSettings, Sequence[str]],
    started: float,
    start_from: str,
    sizes: tuple[int, int],
) -> TrainResult:
    """Put ``final`` in ``output_dir`` (replacing it) and describe the run: its curve (read
    from ``curve_file``), dev-slice scores of our labels (``trained``: the recipe and our
    labels), sizes and seconds since ``started``; the caller adds what it rejected."""
    recipe, labels = trained
    _replace_dir(final, output_dir)
    return TrainResult(
        model_dir=output_dir,
        start_from=start_from,
        train_size=sizes[0],
        dev_size=sizes[1],
        rejected=(),
        dev_scores=_dev_scores(final.meta.get("performance") or {}, recipe.label_map, labels),
        curve=_read_curve(curve_file),
        seconds=time.perf_counter() - started,
    )


def _training_overrides(
    work: Path,
    start: StartPipeline,
    curve_file: Path,
    recipe: TrainSettings,
    seed: int,
    trained_as: Sequence[str],
) -> dict[str, Any]:
    """spaCy dotted overrides of one training run: corpora and start pipeline in ``work``,
    the curve file and the labels it scores, the start's vectors if it has any, and the
    recipe's knobs."""
    return {
        "paths.train": str(work / "train.spacy"),
        "paths.dev": str(work / "dev.spacy"),
        "paths.base": str(start.path),
        "paths.curve": str(curve_file),
        "training.logger.labels": list(trained_as),
        **_vectors_override(start),
        **recipe.spacy_overrides(seed),
    }


def _replace_dir(nlp: Language, output_dir: Path) -> None:
    """Save ``nlp`` to ``output_dir``, replacing what was there."""
    if output_dir.exists():
        shutil.rmtree(output_dir)
    nlp.to_disk(output_dir)


def _hard_negatives(
    start: Language,
    annotations: Sequence[Annotation],
    unlabelled: Sequence[Annotation],
    trained_as: Sequence[str],
    recipe: TrainSettings,
) -> list[Annotation]:
    """Up to ``recipe.hard_negatives`` posts of ``unlabelled`` (none of ``annotations``) in
    which ``start`` finds entities but no brand-like one (ORG, PRODUCT, our trained labels)."""
    if recipe.hard_negatives == 0 or not unlabelled:
        return []
    labelled = {a.post_id for a in annotations}
    candidates = [p for p in unlabelled if p.post_id not in labelled]
    brand_like = {*DEFAULT_SKIP, *trained_as}
    found = hard_negatives(candidates, start, brand_labels=brand_like, limit=recipe.hard_negatives)
    log.info("%d hard negatives from %d unlabelled posts", len(found), len(candidates))
    return found


def _vectors_override(start: StartPipeline) -> dict[str, str]:
    """``paths.vectors`` = the start pipeline when it has static vectors: the sourced
    ``ner`` then trains with them (else spaCy warns W113 and the vectors table is empty)."""
    return {"paths.vectors": str(start.path)} if start.has_vectors else {}


def _read_curve(path: Path) -> tuple[dict[str, float], ...]:
    """The rows of a training curve file (see :func:`curve_logger`), each with ``dev_f1``
    (:func:`curve_f1`)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return tuple({**row, "dev_f1": curve_f1(row)} for row in rows)


def _trained_labels(labels: Sequence[str], label_map: Mapping[str, str]) -> list[str]:
    """The labels the ``ner`` component is trained with (ours, renamed by ``label_map``)."""
    unknown = set(label_map) - set(labels)
    if unknown:
        raise TrainingDataError(f"label_map maps {sorted(unknown)}, which are not among {labels}")
    trained_as = list(dict.fromkeys(label_map.get(label, label) for label in labels))
    if len(trained_as) != len(labels):
        raise TrainingDataError(f"label_map {dict(label_map)} merges two of {labels}")
    return trained_as


def _write_corpora(
    annotations: Sequence[Annotation],
    recipe: TrainSettings,
    seed: int,
    work: Path,
    extra: Sequence[Annotation] = (),
) -> tuple[tuple[int, int], tuple[Rejected, ...]]:
    """Split off the dev slice, sample negatives, repeat the labelled posts
    ``recipe.labelled_copies`` times, add ``extra`` (hard negatives, rehearsal posts) to the
    training part, and
    write ``train.spacy`` and ``dev.spacy`` into ``work``; returns (train size in documents,
    copies included; dev size) and the rejected posts."""
    blank = adapt_tokenizer(spacy.blank("en")) if recipe.post_tokenizer else spacy.blank("en")
    train_part, dev_part = _split_dev(
        relabel(annotations, recipe.label_map), recipe.dev_fraction, seed
    )
    sampled = sample_negatives(train_part, recipe.negative_fraction, seed)
    train_part = [*sampled * recipe.labelled_copies, *extra]
    train_bin, rejected_train = to_docbin(train_part, blank)
    dev_bin, rejected_dev = to_docbin(dev_part, blank)
    rejected = tuple(dict.fromkeys((*rejected_train, *rejected_dev)))  # a copied post once
    for item in rejected:
        log.warning("not trained on %s", item)
    if len(train_bin) == 0:
        raise TrainingDataError("no usable training posts after alignment")
    train_bin.to_disk(work / "train.spacy")
    dev_bin.to_disk(work / "dev.spacy")
    return (len(train_bin), len(dev_bin)), rejected


def _finish(
    last: Language,
    best_dir: Path,
    recipe: TrainSettings,
    labels: Sequence[str],
    brands: BrandList | None = None,
) -> Language:
    """The checkpoint the recipe keeps, with our label filter and (optionally) the
    gazetteer after it: a listed brand the model calls something else (``Huda Beauty`` as
    PERSON) is dropped by the filter first, then found by the list; before the filter, the
    list could not add it over the model's entity and the filter then dropped it."""
    keep_best = recipe.checkpoint == "best" and best_dir.exists()
    final = load_spacy(str(best_dir)) if keep_best else last
    add_label_filter(final, {v: k for k, v in recipe.label_map.items()}, labels)
    if recipe.post_tokenizer:  # as the training posts were tokenized; saved with the model
        adapt_tokenizer(final)
    if recipe.gazetteer:
        brands = brands or BrandList.shipped()  # last: after the label filter
        add_gazetteer(final, brands.names, brands.exact_case, label=labels[0])
    final.meta["name"] = "brand_ner"
    return final


def _dev_scores(
    performance: Mapping[str, Any], label_map: Mapping[str, str], labels: Sequence[str]
) -> dict[str, float]:
    """spaCy's checkpoint scores as flat numbers: ``ents_f`` …, and per label of ours
    (``labels``, trained under ``label_map``'s names) ``BRAND_p``, ``BRAND_r``, ``BRAND_f``.
    The starting pipeline's other labels (``PRODUCT``, ``GPE`` …) are left out: the dev
    slice has no gold span of theirs, so their scores say nothing."""
    scores = {k: float(v) for k, v in performance.items() if isinstance(v, int | float)}
    ours = {label_map.get(label, label): label for label in labels}
    per_type = performance.get("ents_per_type") or {}
    if isinstance(per_type, Mapping):
        for label, values in per_type.items():
            if not isinstance(values, Mapping) or label not in ours:
                continue
            for key in ("p", "r", "f"):
                value = values.get(key)
                if isinstance(value, int | float):
                    scores[f"{ours[label]}_{key}"] = float(value)
    return scores


def _run_spacy_training(config_path: Path, overrides: dict[str, Any], out: Path) -> Language:
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import train as train_loop

    out.mkdir(parents=True, exist_ok=True)
    try:
        config = spacy.util.load_config(config_path, overrides=overrides, interpolate=False)
        nlp = init_nlp(config, use_gpu=-1)
        nlp, _ = train_loop(nlp, out, use_gpu=-1, stdout=io.StringIO(), stderr=io.StringIO())
    except (ValueError, KeyError, OSError) as exc:
        raise TrainingError(f"spaCy training failed: {exc}") from exc
    except SystemExit as exc:  # spaCy's CLI helpers exit on config errors
        raise TrainingError(f"spaCy training refused the config (exit {exc.code})") from exc
    return nlp


def _train_accurate(
    annotations: Sequence[Annotation],
    output_dir: Path,
    labels: Sequence[str],
    recipe: TrainSettings,
    seed: int,
    curve_path: Path | None,
    rehearsed: Sequence[Annotation] = (),
    brands: BrandList | None = None,
) -> TrainResult:
    """:func:`train` with ``recipe.recipe == "accurate"``: the same corpora (dev slice,
    negative sampling, label renaming, ``rehearsed`` posts), a token classifier fine-tuned
    from ``recipe.accurate_model`` (all-MiniLM-L6-v2 by default;
    :func:`ner.transformer_training.fine_tune`) instead of spaCy's
    ``ner``, then the same label filter and gazetteer. ``hard_negatives`` and
    ``start_from`` do not apply."""
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    with owned_temp_dir("brandloop-train-") as work:
        curve_file = curve_path or work / "curve.jsonl"
        sizes, rejected = _write_corpora(annotations, recipe, seed, work, rehearsed)
        corpus = Corpus.from_disk(work / "train.spacy", work / "dev.spacy", spacy.blank("en"))
        nlp = fine_tune(corpus, _trained_labels(labels, recipe.label_map), recipe, seed, curve_file)
        final = _finish(nlp, work / "no-best-checkpoint", recipe, labels, brands)
        encoder = base_name(recipe.accurate_model)
        final.meta["brandloop"] = {"start_from": encoder, "seed": seed}
        final.meta["brandloop"].update(
            label_map=dict(recipe.label_map), recipe="accurate", rehearsed=len(rehearsed)
        )
        result = _save_result(
            final, output_dir, curve_file, (recipe, labels), started, encoder, sizes
        )
    return replace(result, rejected=rejected, rehearsed=len(rehearsed))
