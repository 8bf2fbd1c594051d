"""People labelling in a real Label Studio, as API calls (the tests of ``ner.labelstudio``).

A fresh project per test (:func:`project_settings`, and the ``project``/``storage`` fixtures
over a test module's own ``ls_settings`` fixture), and a human's annotation written as the
Label Studio editor saves it (:func:`result`, :func:`annotate`), with spans in code points.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from ner.labelstudio.client import LabelStudioProject
from ner.labelstudio.exchange import import_items
from ner.settings import Settings, load_settings
from ner.storage import Storage, open_storage
from ner.types import Post, Span
from tests.support.servers import LabelStudioService


def unique(prefix: str) -> str:
    """``prefix-`` and 8 random hex digits (a project title no other test uses)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def project_settings(
    label_studio: LabelStudioService, tmp_path: Path, prefix: str, **extra: Any
) -> Settings:
    """Settings for a fresh project on the test server (its own title, its own storage)."""
    return load_settings(
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
        label_studio_project=unique(prefix),
        storage_uri=str(tmp_path / "storage"),
        **extra,
    )


@pytest.fixture
def project(ls_settings: Settings) -> LabelStudioProject:
    """The test's project, created on first connect."""
    return LabelStudioProject.connect(ls_settings)


@pytest.fixture
def storage(ls_settings: Settings) -> Storage:
    """The test's storage (under its ``tmp_path``)."""
    return open_storage(ls_settings.storage_uri, ls_settings.env)


def brand(text: str, needle: str, nth: int = 0) -> Span:
    """The code-point span of the ``nth`` occurrence of ``needle`` in ``text``."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    return Span(start, start + len(needle), "BRAND", needle)


def result(start: int, end: int, text: str, label: str = "BRAND") -> dict[str, Any]:
    """One region as the Label Studio editor saves it for our generated config."""
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "origin": "manual",
        "value": {"start": start, "end": end, "text": text, "labels": [label]},
    }


def annotate(project: LabelStudioProject, task_id: int, spans: list[Span], **extra: Any) -> int:
    """A human submits an annotation of ``task_id`` with ``spans`` (code points)."""
    created = project.client.annotations.create(
        id=task_id, result=[result(s.start, s.end, s.text, s.label) for s in spans], **extra
    )
    assert created.id is not None
    return int(created.id)


def tasks_by_post(project: LabelStudioProject) -> dict[str, dict[str, Any]]:
    """The project's tasks (all fields) by the post id in their data."""
    return {str(t["data"]["post_id"]): t for t in project.iter_tasks(fields="all")}


def import_posts(project: LabelStudioProject, items: Iterable[Post]) -> dict[str, dict[str, Any]]:
    """Import ``items`` as tasks without predictions; the project's tasks by post id."""
    import_items(project, ((post, None) for post in items))
    return tasks_by_post(project)
