"""MLflow flavor glue: a spaCy model that is also a pyfunc.

MLflow's spaCy flavor adds ``python_function`` only to text classifiers, so an NER pipeline
logged with it cannot be served by ``mlflow models serve``. :func:`save_model` saves with
the spaCy flavor (``mlflow.spacy.load_model`` keeps working) and then adds a pyfunc flavor
whose loader is :func:`_load_pyfunc` below. Use it as the ``flavor`` of
``mlflow.models.Model.log``.

Serving input: a DataFrame (or list of records) with a ``text`` column and an optional
``id`` column. Output: one row per input with ``id`` (the input's, else the row number)
and ``entities`` (a list of ``{start, end, label, text}``, code-point offsets).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import spacy
from spacy.language import Language

import ner.components  # noqa: F401  (registers the label filter factory)
from ner.inference import predict_texts

DATA_SUBPATH = "model.spacy"


class BrandPyfunc:
    """What ``mlflow.pyfunc.load_model`` returns for a brandloop model."""

    def __init__(self, nlp: Language, labels: Sequence[str] = ("BRAND",)) -> None:
        self.nlp = nlp
        self.labels = tuple(labels)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        frame = (
            model_input
            if isinstance(model_input, pd.DataFrame)
            else pd.DataFrame(model_input if isinstance(model_input, list) else [model_input])
        )
        if "text" not in frame.columns:
            raise ValueError("input needs a 'text' column")
        texts = ["" if t is None else str(t) for t in frame["text"].tolist()]
        ids = row_ids(frame["id"].tolist() if "id" in frame.columns else [None] * len(texts))
        spans = predict_texts(self.nlp, texts, self.labels)
        return pd.DataFrame(
            {"id": ids, "entities": [[s.to_dict() for s in found] for found in spans]}
        )


def row_ids(ids: Sequence[Any]) -> list[str]:
    """Each row's id as text; a missing one (None, or the NaN pandas puts in a column where
    some rows have none) becomes the row's number, counted from 0."""
    return [
        str(number)
        if value is None or (isinstance(value, float) and math.isnan(value))
        else str(value)
        for number, value in enumerate(ids)
    ]


def _load_pyfunc(data_path: str) -> BrandPyfunc:
    """pyfunc loader: ``data_path`` is the saved spaCy pipeline."""
    nlp = spacy.load(data_path)
    labels: Sequence[str] = ("BRAND",)
    if "brandloop_labels" in nlp.pipe_names:
        labels = tuple(nlp.get_pipe("brandloop_labels").keep)  # type: ignore[attr-defined]
    return BrandPyfunc(nlp, labels)


class _OnlySpacyFlavorNotice(logging.Filter):
    """Drops the spaCy flavor's notice that the model "cannot be loaded back using pyfunc
    APIs": :func:`save_model` adds the pyfunc flavor right after, so for our models the
    notice is false (``mlflow.spacy.save_model`` emits it for every pipeline without a text
    classifier, with no option to turn it off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(SPACY_ONLY_NOTICE)


#: The start of the spaCy flavor's (here false) "no pyfunc flavor" notice.
SPACY_ONLY_NOTICE = "Generating only the spacy flavor"


def conda_env(pip_requirements: Sequence[str]) -> dict[str, Any]:
    """The model's conda environment: this Python, pip, and ``pip_requirements``.

    Written out here so MLflow does not ask the installed pip for its version (a uv
    environment has no pip, and MLflow then warns that it cannot resolve it)."""
    python = ".".join(str(part) for part in sys.version_info[:3])
    return {
        "name": "brandloop-model",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": list(pip_requirements)}],
    }


def save_model(spacy_model: Language, path: str, mlflow_model: Any = None, **kwargs: Any) -> None:
    """Save with the spaCy flavor, then add the pyfunc flavor over the same data.

    ``pip_requirements`` (a list) becomes an explicit :func:`conda_env`, so MLflow neither
    infers requirements nor queries pip."""
    import mlflow.spacy
    from mlflow import pyfunc
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME

    requirements = kwargs.pop("pip_requirements", None)
    if requirements is not None and kwargs.get("conda_env") is None:
        kwargs["conda_env"] = conda_env(requirements)
    mlflow_model = mlflow_model or Model()
    notice = _OnlySpacyFlavorNotice()
    spacy_logger = logging.getLogger(mlflow.spacy.__name__)
    spacy_logger.addFilter(notice)
    try:
        mlflow.spacy.save_model(spacy_model, path, mlflow_model=mlflow_model, **kwargs)
    finally:
        spacy_logger.removeFilter(notice)
    pyfunc.add_to_model(
        mlflow_model,
        loader_module=__name__,
        data=DATA_SUBPATH,
        conda_env="conda.yaml",
        python_env="python_env.yaml",
    )
    mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))
