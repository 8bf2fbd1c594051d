"""Train a challenger brand model with spaCy, driven by ``ner/configs/train.cfg``.

The recipe fine-tunes the ``ner`` component of a starting pipeline: the pretrained base
(``settings.base_model``) or the current champion. The training pool must already exclude
gold posts (see :mod:`ner.datasets`); a slice of it is held back as spaCy's dev set for
checkpoint selection, so the gold set is never seen during training.

Knobs of the recipe (:class:`TrainOptions`, set from :class:`ner.settings.Settings`):

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
* ``learn_rate``, ``dropout``, ``max_epochs`` … as in spaCy's config.

Bench/README.md records how the defaults of :class:`ner.settings.Settings` were chosen.
"""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import IO, Any, Literal

import spacy
from spacy.language import Language

from ner.datasets import split_point, to_docbin
from ner.errors import TrainingError
from ner.models import add_gazetteer, add_label_filter, load_spacy
from ner.types import Annotation, Rejected

log = logging.getLogger(__name__)

CURVE_LOGGER = "brandloop.CurveLogger.v1"


def default_config_path() -> Path:
    """The training config shipped inside the package."""
    return Path(str(resources.files("ner") / "configs" / "train.cfg"))


@dataclass(frozen=True)
class TrainOptions:
    """What a training run may change without editing the config file."""

    seed: int = 17
    max_epochs: int = 30
    max_steps: int = 0
    patience: int = 400
    dropout: float = 0.2
    eval_frequency: int = 25
    dev_fraction: float = 0.15
    with_gazetteer: bool = True
    learn_rate: float = 0.001
    negative_fraction: float = 1.0
    lowercase: float = 0.0
    label_map: Mapping[str, str] = field(default_factory=dict)
    checkpoint: Literal["best", "last"] = "best"
    config_path: Path | None = None
    extra_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_fraction <= 1.0:
            raise ValueError(
                f"negative_fraction must be within [0, 1], got {self.negative_fraction}"
            )
        if not 0.0 <= self.lowercase <= 1.0:
            raise ValueError(f"lowercase must be within [0, 1], got {self.lowercase}")
        if self.learn_rate <= 0.0:
            raise ValueError(f"learn_rate must be positive, got {self.learn_rate}")
        if self.checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {self.checkpoint!r}")

    def overrides(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "system.seed": self.seed,
            "training.max_epochs": self.max_epochs,
            "training.max_steps": self.max_steps,
            "training.patience": self.patience,
            "training.dropout": self.dropout,
            "training.eval_frequency": self.eval_frequency,
            "training.optimizer.learn_rate": self.learn_rate,
        }
        if self.lowercase > 0.0:  # without it, no augmenter draws from the training RNG
            values["corpora.train.augmenter"] = {
                "@augmenters": "spacy.lower_case.v1",
                "level": self.lowercase,
            }
        return {**values, **self.extra_overrides}

    def as_params(self) -> dict[str, Any]:
        """For MLflow params."""
        params = {
            k.split(".")[-1]: v
            for k, v in self.overrides().items()
            if k != "corpora.train.augmenter"
        }
        params["lowercase"] = self.lowercase
        params["dev_fraction"] = self.dev_fraction
        params["with_gazetteer"] = self.with_gazetteer
        params["negative_fraction"] = self.negative_fraction
        params["checkpoint"] = self.checkpoint
        params["label_map"] = ",".join(f"{k}->{v}" for k, v in sorted(self.label_map.items()))
        params["config"] = (self.config_path or default_config_path()).name
        return params


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


@spacy.registry.loggers(CURVE_LOGGER)
def curve_logger(path: str | None = None) -> Callable[..., Any]:
    """spaCy training logger that appends one JSON line per evaluation to ``path``."""

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
            for key in ("ents_p", "ents_r", "ents_f"):
                value = (info.get("other_scores") or {}).get(key)
                if value is not None:
                    row[key] = float(value)
            log.debug("training step %s", row)
            if handle is not None:
                handle.write(json.dumps(row) + "\n")
                handle.flush()

        def finalize() -> None:
            if handle is not None:
                handle.close()

        return log_step, finalize

    return setup


def prepare_start(start_from: str, labels: Sequence[str], out_dir: Path) -> Path:
    """Save a copy of the starting pipeline whose ``ner`` knows our labels."""
    nlp = load_spacy(start_from)
    if "ner" not in nlp.pipe_names:
        raise TrainingError(f"{start_from!r} has no 'ner' component to fine-tune")
    ner = nlp.get_pipe("ner")
    for label in labels:
        ner.add_label(label)  # type: ignore[attr-defined]
    keep = {"ner"} | {
        name
        for name in nlp.pipe_names
        if name != "ner" and "ner" in (getattr(nlp.get_pipe(name), "listening_components", []))
    }
    for name in list(nlp.pipe_names):
        if name not in keep:
            nlp.remove_pipe(name)
    nlp.to_disk(out_dir)
    return out_dir


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


def _split_dev(
    annotations: Sequence[Annotation], fraction: float, seed: int
) -> tuple[list[Annotation], list[Annotation]]:
    ordered = sorted(annotations, key=lambda a: a.post_id)
    random.Random(seed).shuffle(ordered)
    n_dev = max(1, round(len(ordered) * fraction)) if len(ordered) > 1 else 0
    return ordered[n_dev:], ordered[:n_dev]


def train(
    annotations: Sequence[Annotation],
    *,
    start_from: str,
    output_dir: Path,
    labels: Sequence[str] = ("BRAND",),
    options: TrainOptions | None = None,
) -> TrainResult:
    """Fine-tune ``start_from`` on ``annotations`` and save the final pipeline.

    ``start_from`` is a spaCy package name or a path to a saved pipeline (for example a
    downloaded champion). The saved pipeline has ``ner``, the label filter and, with
    ``options.with_gazetteer``, the brand gazetteer after the model.
    """
    options = options or TrainOptions()
    if len(annotations) < 2:
        raise TrainingError(f"need at least 2 labelled posts to train, got {len(annotations)}")
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    unknown = set(options.label_map) - set(labels)
    if unknown:
        raise TrainingError(f"label_map maps {sorted(unknown)}, which are not among {labels}")
    trained_as = list(dict.fromkeys(options.label_map.get(label, label) for label in labels))
    if len(trained_as) != len(labels):
        raise TrainingError(f"label_map {dict(options.label_map)} merges two of {labels}")
    with tempfile.TemporaryDirectory(prefix="brandloop-train-") as tmp:
        work = Path(tmp)
        base_dir = prepare_start(start_from, trained_as, work / "start")
        blank = spacy.blank("en")
        train_part, dev_part = _split_dev(
            relabel(annotations, options.label_map), options.dev_fraction, options.seed
        )
        train_part = sample_negatives(train_part, options.negative_fraction, options.seed)
        train_bin, rejected_train = to_docbin(train_part, blank)
        dev_bin, rejected_dev = to_docbin(dev_part, blank)
        rejected = (*rejected_train, *rejected_dev)
        for item in rejected:
            log.warning("not trained on %s", item)
        if len(train_bin) == 0:
            raise TrainingError("no usable training posts after alignment")
        train_bin.to_disk(work / "train.spacy")
        dev_bin.to_disk(work / "dev.spacy")
        curve_path = work / "curve.jsonl"
        overrides = {
            "paths.train": str(work / "train.spacy"),
            "paths.dev": str(work / "dev.spacy"),
            "paths.base": str(base_dir),
            "paths.curve": str(curve_path),
            **options.overrides(),
        }
        config_path = options.config_path or default_config_path()
        nlp = _run_spacy_training(config_path, overrides, work / "output")
        best = work / "output" / "model-best"
        final = load_spacy(str(best)) if options.checkpoint == "best" and best.exists() else nlp
        add_label_filter(final, {v: k for k, v in options.label_map.items()}, labels)
        if options.with_gazetteer:
            add_gazetteer(final, label=labels[0], after_model=True)
        final.meta["name"] = "brand_ner"
        final.meta["brandloop"] = {
            "start_from": start_from,
            "seed": options.seed,
            "label_map": dict(options.label_map),
        }
        if output_dir.exists():
            shutil.rmtree(output_dir)
        final.to_disk(output_dir)
        curve = tuple(
            json.loads(line) for line in curve_path.read_text().splitlines() if line.strip()
        )
        dev_scores = _dev_scores(final.meta.get("performance") or {}, options.label_map)
    seconds = time.perf_counter() - started
    log.info("trained on %d posts (%d dev) in %.1fs", len(train_bin), len(dev_bin), seconds)
    return TrainResult(
        model_dir=output_dir,
        start_from=start_from,
        train_size=len(train_bin),
        dev_size=len(dev_bin),
        rejected=rejected,
        dev_scores=dev_scores,
        curve=curve,
        seconds=seconds,
    )


def _dev_scores(performance: Mapping[str, Any], label_map: Mapping[str, str]) -> dict[str, float]:
    """spaCy's checkpoint scores as flat numbers: ``ents_f`` …, and per label (in our
    labels) ``BRAND_p``, ``BRAND_r``, ``BRAND_f``."""
    scores = {k: float(v) for k, v in performance.items() if isinstance(v, int | float)}
    ours = {v: k for k, v in label_map.items()}
    per_type = performance.get("ents_per_type") or {}
    if isinstance(per_type, Mapping):
        for label, values in per_type.items():
            if not isinstance(values, Mapping):
                continue
            for key in ("p", "r", "f"):
                value = values.get(key)
                if isinstance(value, int | float):
                    scores[f"{ours.get(label, label)}_{key}"] = float(value)
    return scores


def train_isolated(
    annotations: Sequence[Annotation],
    *,
    start_from: str,
    output_dir: Path,
    labels: Sequence[str] = ("BRAND",),
    options: TrainOptions | None = None,
) -> TrainResult:
    """:func:`train` in a fresh (spawned) Python process; same arguments, same result.

    spaCy's training loop draws from the process-wide ``random`` and ``numpy.random``
    generators, seeded once at its start. In a long-lived process (a Prefect flow run, with
    its API, log and event threads) anything else that draws from them meanwhile changes the
    batches and dropout masks, so one seed gave dev F1 from 0.12 to 0.16 on WNUT-17 across
    runs. A process of its own makes the model a function of the data, the recipe and the
    seed, and returns its memory when done. A training error is raised here as it was there;
    a worker that dies (killed, out of memory) raises :class:`TrainingError`.
    """
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        future = pool.submit(
            train,
            list(annotations),
            start_from=start_from,
            output_dir=output_dir,
            labels=tuple(labels),
            options=options,
        )
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise TrainingError(f"the training process died before it finished: {exc}") from exc


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
