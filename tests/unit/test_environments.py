"""dev, staging and prod share no state: storage prefix, MLflow experiment (and its audit
experiment), registered model, served model and Label Studio project all derive from
``env`` unless set explicitly; cross-environment promotion refuses environments that share."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from deployments import bootstrap
from ner.environments import check_apart
from ner.errors import ConfigError
from ner.settings import ENVIRONMENTS, Settings, load_settings
from ner.storage import open_storage

pytestmark = pytest.mark.usefixtures("clean_env")


def _names(settings: Settings) -> dict[str, str]:
    return {
        "experiment": settings.experiment_name,
        "audit experiment": f"{settings.experiment_name}-audit",
        "registered model": settings.registered_model_name,
        "served model": settings.serve_model,
        "project": settings.project_title,
    }


def _pairs(storage_uri: str) -> Iterator[tuple[Settings, Settings]]:
    every = [load_settings(env=env, storage_uri=storage_uri) for env in ENVIRONMENTS]
    return itertools.permutations(every, 2)


@pytest.mark.parametrize("storage_uri", ["/srv/brandloop", "gs://bucket/brandloop", "gs://b"])
def test_the_three_environments_share_no_prefix_experiment_model_or_project(
    storage_uri: str,
) -> None:
    for one, other in _pairs(storage_uri):
        # Then no storage prefix holds another environment's
        mine = open_storage(one.storage_uri, one.env).uri("").rstrip("/") + "/"
        theirs = open_storage(other.storage_uri, other.env).uri("").rstrip("/") + "/"
        assert not theirs.startswith(mine), (one.env, other.env, mine, theirs)
        # And no name is shared, nor is one name another's audit experiment
        assert not set(_names(one).values()) & set(_names(other).values()), (one.env, other.env)
        check_apart(one, other)


def test_names_derive_from_env_set_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NER_ENV", "prod")
    settings = load_settings()
    assert _names(settings) == {
        "experiment": "brand-ner-prod",
        "audit experiment": "brand-ner-prod-audit",
        "registered model": "brand-ner-prod",
        "served model": "models:/brand-ner-prod@champion",
        "project": "brandloop-prod",
    }
    assert open_storage("/srv/b", settings.env).uri("").endswith("/srv/b/prod")


def test_an_explicit_name_wins_and_the_served_model_follows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NER_REGISTERED_MODEL_NAME", "ner-eu")
    settings = load_settings(env="staging", label_studio_project="Brands EU")
    assert settings.registered_model_name == "ner-eu"
    assert settings.serve_model == "models:/ner-eu@champion"
    assert settings.experiment_name == "brand-ner-staging"
    assert settings.project_title == "Brands EU"
    assert load_settings(env="staging", serve_model="models:/x/3").serve_model == "models:/x/3"


def test_deployments_pin_no_name_so_each_environment_derives_its_own() -> None:
    config = bootstrap.load_prefect_file()
    seen: dict[str, set[str]] = {}
    for env in ENVIRONMENTS:
        for deployment in bootstrap.deployments_for(config, env):
            job_env = dict(deployment["work_pool"]["job_variables"]["env"])
            # Then the worker gets NER_ENV and no name that would override the env's defaults
            assert job_env["NER_ENV"] == env
            pinned = {"NER_EXPERIMENT_NAME", "NER_REGISTERED_MODEL_NAME", "NER_SERVE_MODEL"}
            assert not pinned & set(job_env) and "NER_LABEL_STUDIO_PROJECT" not in job_env
            settings = load_settings(env=job_env["NER_ENV"])
            seen.setdefault(env, set()).update(_names(settings).values())
    assert not seen["dev"] & seen["staging"] and not seen["staging"] & seen["prod"]
    assert not seen["dev"] & seen["prod"]


def test_promotion_across_refuses_environments_that_share() -> None:
    staging, prod = load_settings(env="staging"), load_settings(env="prod")
    with pytest.raises(ConfigError, match="both 'prod'"):
        check_apart(prod, prod)
    shared = load_settings(env="prod", registered_model_name="brand-ner-staging")
    with pytest.raises(ConfigError, match="share registered_model_name 'brand-ner-staging'"):
        check_apart(staging, shared)
    elsewhere = load_settings(env="prod", mlflow_tracking_uri="http://127.0.0.1:5001")
    with pytest.raises(ConfigError, match="different MLflow servers"):
        check_apart(staging, elsewhere)
