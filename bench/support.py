"""What several benchmarks share: the WNUT-17 data, fresh folders, flow settings, Prefect.

Not a benchmark module (listed in ``bench.INFRASTRUCTURE``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ner.types import Annotation

PROJECT_ROOT = Path(__file__).resolve().parents[1]

BASE_LABEL_MAP = {"ORG": "BRAND", "PRODUCT": "BRAND"}


def shared_data() -> Path:
    """``$BRANDLOOP_SHARED_DATA``, else ``../shared/data`` when present, else ``data/`` (the
    repository's verbatim copy, for clean clones); a missing folder is an error."""
    workplace = PROJECT_ROOT.parent / "shared" / "data"
    default = workplace if workplace.is_dir() else PROJECT_ROOT / "data"
    path = Path(os.environ.get("BRANDLOOP_SHARED_DATA") or default)
    if not (path / "wnut17").is_dir():
        raise FileNotFoundError(
            f"WNUT-17 not found under {path}: the benchmarks need ../shared/data/wnut17 "
            "(or BRANDLOOP_SHARED_DATA pointing at the folder that holds wnut17/)"
        )
    return path


def wnut(split: str) -> list[Annotation]:
    """WNUT-17 ``train`` or ``dev`` as brand annotations (corporation + product)."""
    from bench.wnut import load_split

    return load_split(shared_data(), split)


def fresh_dir(path: Path) -> Path:
    """``path`` emptied (removed and created again)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def flow_settings(
    root: Path, recipe: Mapping[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Settings for a flow run whose storage and MLflow live under ``root``, training with
    ``recipe`` (None: the defaults of :class:`ner.settings.Settings`).

    MLflow is ``sqlite:///<root>/mlflow.db`` with its artifacts in ``<root>/mlartifacts``.
    """
    return {
        "env": "dev",
        # The benchmark's own MLflow store keeps the name its results cite (brand-ner@champion).
        "registered_model_name": "brand-ner",
        "experiment_name": "brand-ner",
        "storage_uri": str(root / "storage"),
        "mlflow_tracking_uri": f"sqlite:///{(root / 'mlflow.db').resolve()}",
        "mlflow_artifact_location": (root / "mlartifacts").resolve().as_uri(),
        "cold_start": "gazetteer",
        "base_label_map": BASE_LABEL_MAP,
        **(recipe or {}),
        **overrides,
    }


def default_train_options(**changes: Any) -> Any:
    """The training recipe (:class:`ner.settings.TrainSettings`) the ``train-ner`` flow uses
    by default, with ``changes`` (``max_epochs=2``)."""
    from ner.settings import Settings

    return Settings().train.model_copy(update=changes)


def write_export(storage: Any, key: str, annotations: Iterable[Annotation]) -> str:
    """Write ``annotations`` to ``key`` as a finished Label Studio JSON export."""
    from ner.labelstudio.config import LabelConfig
    from ner.labelstudio.export import annotations_to_export

    config = LabelConfig.for_labels(("BRAND",))
    stamped = [a if a.updated_at else _stamp(a, "2026-11-01T00:00:00.000000Z") for a in annotations]
    uri: str = storage.write_json(key, annotations_to_export(stamped, config))
    return uri


def _stamp(annotation: Annotation, when: str) -> Annotation:
    from dataclasses import replace

    return replace(annotation, updated_at=when, annotator=annotation.annotator or "wnut17")


def prefect_environment(home: Path) -> None:
    """Point Prefect at a private ephemeral API under ``home`` unless an API is configured.

    Call before the first ``import prefect`` of the process.
    """
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(home.resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def warm_up_prefect() -> float:
    """Run an empty flow so Prefect's API is up; returns how long that took."""
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    clock = time.perf_counter()
    warm_up()
    return time.perf_counter() - clock


def run_flow(flow: Any, **kwargs: Any) -> tuple[dict[str, Any], str, float]:
    """Run a flow; returns its result (as JSON values), its flow-run id and its wall time in
    seconds."""
    clock = time.perf_counter()
    state = flow(**kwargs, return_state=True)
    seconds = time.perf_counter() - clock
    result: dict[str, Any] = state.result().model_dump(mode="json")
    return result, str(state.state_details.flow_run_id), seconds


def task_stages(flow_run_id: str) -> list[dict[str, Any]]:
    """The task runs of a flow run as ``{name, seconds, start, end, state}``, by start time.

    Read from the Prefect API, so the stages are timed by the orchestrator itself.
    """
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
        )
    stages = []
    for run in runs:
        if run.start_time is None or run.end_time is None:
            continue
        stages.append(
            {
                "name": run.name.rsplit("-", 1)[0],
                "task_key": run.task_key,
                "start": run.start_time.timestamp(),
                "end": run.end_time.timestamp(),
                "seconds": (run.end_time - run.start_time).total_seconds(),
                "state": run.state_type.value if run.state_type else None,
            }
        )
    return sorted(stages, key=lambda stage: stage["start"])


def merge_stages(stages: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> dict[str, float]:
    """Seconds per stage label: ``names`` maps task names to labels; repeats are summed,
    tasks not in ``names`` go to ``"other tasks"``."""
    totals: dict[str, float] = {}
    for stage in stages:
        label = names.get(str(stage["name"]), "other tasks")
        totals[label] = totals.get(label, 0.0) + float(stage["seconds"])
    return totals
