"""Logging a model and its datasets to a real MLflow SQLite store prints no warning a user
cannot act on: no ambiguous dataset source, no false "cannot be loaded back using pyfunc"
notice, no unresolved pip version (issue 10, part 2)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow.spacy
import pytest
import spacy
import yaml

from ner.models import add_gazetteer, add_label_filter
from ner.registry import Registry

AMBIGUOUS_SOURCE = "can be interpreted in multiple ways"
NO_PYFUNC = "cannot be loaded back using pyfunc APIs"
PIP_VERSION = "Failed to resolve installed pip version"


@pytest.fixture
def mlflow_records() -> Iterator[list[logging.LogRecord]]:
    """Every record of MLflow's loggers (they do not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, logger = Keep(level=logging.DEBUG), logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def saved_model(tmp_path: Path) -> Path:
    nlp = spacy.blank("en")
    add_gazetteer(nlp, ["Glossier"], exact_case=[])
    add_label_filter(nlp, {}, ["BRAND"])
    nlp.to_disk(tmp_path / "model")
    return tmp_path / "model"


def messages(records: list[logging.LogRecord], caught: list[warnings.WarningMessage]) -> str:
    return "\n".join([r.getMessage() for r in records] + [str(w.message) for w in caught])


def test_the_capture_sees_the_spacy_flavor_notice(
    tmp_path: Path, mlflow_records: list[logging.LogRecord]
) -> None:
    # Given the spaCy flavor alone, which warns for every pipeline without a text classifier
    nlp = spacy.load(saved_model(tmp_path))
    # When it saves our model
    mlflow.spacy.save_model(nlp, str(tmp_path / "plain"), pip_requirements=["spacy"])
    # Then the capture of the next test would see its notice
    assert NO_PYFUNC in messages(mlflow_records, [])


def test_logging_a_model_and_datasets_warns_about_nothing(
    tmp_path: Path, mlflow_records: list[logging.LogRecord]
) -> None:
    registry = Registry(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # When datasets (a file URI, a bare path, a GCS URI) and a model are logged to a run
        with registry.start_run("train") as run_id:
            registry.log_dataset(run_id, "train-pool", "a" * 64, tmp_path.as_uri(), "training")
            registry.log_dataset(run_id, "gold", "b" * 64, str(tmp_path), "evaluation")
            registry.log_dataset(run_id, "raw", "c" * 64, "gs://bucket/posts.jsonl", "training")
            model_uri, version = registry.log_model(saved_model(tmp_path), run_id)
    # Then none of the three warnings is emitted
    said = messages(mlflow_records, caught)
    for known in (AMBIGUOUS_SOURCE, NO_PYFUNC, PIP_VERSION):
        assert known not in said
    # And the datasets keep their sources, typed by scheme
    inputs = registry.client.get_run(run_id).inputs.dataset_inputs
    assert {i.dataset.name: i.dataset.source_type for i in inputs} == {
        "train-pool": "local",
        "gold": "local",
        "raw": "gs",
    }
    # And the model declares the pyfunc flavor, with the explicit requirements
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "dl")))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    assert {"spacy", "python_function"} <= set(mlmodel["flavors"])
    assert f"spacy=={spacy.__version__}" in (local / "requirements.txt").read_text()
    assert version == "1"
