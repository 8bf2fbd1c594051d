"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the shared data is: ``$BRANDLOOP_SHARED_DATA``, else ``../shared/data`` when the
    workplace has it, else the repository's verbatim copy in ``data/`` (clean clones)."""
    if os.environ.get("BRANDLOOP_SHARED_DATA"):
        return Path(os.environ["BRANDLOOP_SHARED_DATA"])
    workplace = PROJECT_ROOT.parent / "shared" / "data"
    return workplace if workplace.is_dir() else PROJECT_ROOT / "data"


@pytest.fixture(autouse=True)
def _serving_defaults_restored() -> Iterator[None]:
    """Undo what a serving command run in-process (``brandloop serve`` through CliRunner) set
    (:func:`apps.serving.serving_mlflow_defaults`): MLflow's pool class, left set in
    ``os.environ``, makes every later test's MLflow log a line on standard error."""
    import logging

    from apps.serving import MLFLOW_DB_LOGGER, SERVE_MLFLOW_ENV

    saved = {name: os.environ.get(name) for name in SERVE_MLFLOW_ENV}
    level = logging.getLogger(MLFLOW_DB_LOGGER).level
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    logging.getLogger(MLFLOW_DB_LOGGER).setLevel(level)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data (WNUT-17, gazetteers). Missing is an error, not a skip."""
    path = shared_data_dir()
    if not (path / "wnut17").is_dir() or not (path / "gazetteers").is_dir():
        raise FileNotFoundError(
            f"shared data folder {path} is missing or incomplete (wnut17/, gazetteers/): "
            "set BRANDLOOP_SHARED_DATA or restore data/"
        )
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No NER_/MLFLOW_ variables leak into a test, nor the BRANDLOOP_<ENV>_ storage and
    MLflow of a deployment (the command line takes them: ner.settings.deployment_overrides)."""
    for name in list(os.environ):
        deployment = name.startswith("BRANDLOOP_") and name.endswith(
            ("_STORAGE_URI", "_MLFLOW_TRACKING_URI")
        )
        if name.startswith(("NER_", "MLFLOW_")) or deployment:
            monkeypatch.delenv(name)
    yield


#: What brandloop writes in the working directory by default (``sqlite:///mlflow.db``, the
#: local storage): a test must write into its own ``tmp_path`` instead.
DEFAULT_OUTPUTS = ("mlflow.db", "mlruns", ".brandloop")


@pytest.fixture(autouse=True)
def _writes_nothing_in_the_working_directory() -> Iterator[None]:
    """Fail the test that creates one of :data:`DEFAULT_OUTPUTS` in the working directory
    (a later test would read that stale store through the defaults), and remove what it
    created."""
    before = {name for name in DEFAULT_OUTPUTS if os.path.lexists(name)}
    yield
    created = {name for name in DEFAULT_OUTPUTS if os.path.lexists(name)} - before
    for name in created:  # so the next test that writes one is caught too
        shutil.rmtree(name) if os.path.isdir(name) else os.unlink(name)
    assert not created, f"the test left {sorted(created)} in {os.getcwd()}: use tmp_path"


@contextmanager
def _mlflow_uris_kept() -> Iterator[None]:
    """Undo, on exit, what ``mlflow.set_tracking_uri``/``set_registry_uri`` changed inside:
    the process globals (MLflow's private module state, mlflow 3.x) and the
    ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` variables they export. Without it a later
    test's ``MlflowClient(tracking_uri=...)`` or ``mlflow.spacy.load_model("models:/...")``
    answers from an earlier test's (stopped) registry."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
        patch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(autouse=True)
def _mlflow_uris_restored() -> Iterator[None]:
    """Each test's MLflow URIs are undone after it (:func:`_mlflow_uris_kept`)."""
    with _mlflow_uris_kept():
        yield


@pytest.fixture(autouse=True, scope="module")
def _mlflow_uris_restored_after_the_module() -> Iterator[None]:
    """And a module's, which its module-scoped fixtures set before any test began."""
    with _mlflow_uris_kept():
        yield
