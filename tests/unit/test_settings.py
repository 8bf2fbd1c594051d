from __future__ import annotations

import pytest
from pydantic import ValidationError

from ner.errors import ConfigError
from ner.settings import Settings, load_settings


def test_embedded_default_needs_no_variable(clean_env: None) -> None:
    # Given no NER_ variable, when settings are built
    settings = load_settings()
    # Then they point at a local folder and a local SQLite MLflow
    assert settings.env == "dev"
    assert settings.mlflow_tracking_uri == "sqlite:///mlflow.db"
    assert "://" not in settings.storage_uri
    assert settings.artifact_location() is not None
    assert settings.artifact_location().endswith("/mlartifacts")  # type: ignore[union-attr]


def test_env_prefix_and_plain_mlflow_variable(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NER_THRESHOLD", "0.55")
    monkeypatch.setenv("NER_KEYWORDS", '["lipstick", "#sephora"]')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    settings = Settings()
    assert settings.threshold == 0.55
    assert settings.keywords == ("lipstick", "#sephora")
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_settings_are_frozen(clean_env: None) -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.threshold = 0.1  # type: ignore[misc]


def test_invalid_value_names_the_variable(clean_env: None) -> None:
    with pytest.raises(ConfigError, match="NER_THRESHOLD"):
        load_settings(threshold=1.5)


def test_missing_secret_names_the_variable(clean_env: None) -> None:
    settings = Settings()
    with pytest.raises(ConfigError, match="NER_X_BEARER_TOKEN"):
        settings.require_secret("x_bearer_token")


def test_secrets_never_in_dumps_or_repr(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_X_BEARER_TOKEN", "s3cr3t-token-value")
    monkeypatch.setenv("NER_LABEL_STUDIO_API_KEY", "ls-key-value")
    settings = Settings()
    assert settings.require_secret("x_bearer_token") == "s3cr3t-token-value"
    for text in (repr(settings), str(settings.safe_dump()), str(settings.model_dump())):
        assert "s3cr3t-token-value" not in text
        assert "ls-key-value" not in text
    assert "x_bearer_token" not in settings.safe_dump()
