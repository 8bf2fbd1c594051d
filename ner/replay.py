"""The replay annotator: a stand-in for the human in demos and tests.

Label Studio is where people correct predictions. Where there are no people (the demo, the
end-to-end tests, simulations), :class:`ReplayAnnotator` plays their part: given the tasks
that were sent for labelling, it hands back the gold labels it was built with, in Label
Studio's export format, exactly as a human's finished export would look. Tasks it has no
gold for stay unlabelled, like tasks nobody got to.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from ner.errors import ConfigError, DataError, NotFoundError
from ner.labelstudio.export import task_post_id_text

log = logging.getLogger(__name__)


def demo_posts_path() -> Path:
    """The bundled demo posts (synthetic beauty posts, see ner/resources/demo/README.md)."""
    return Path(str(resources.files("ner") / "resources" / "demo" / "posts.jsonl"))


def demo_gold_path() -> Path:
    """Gold brand spans of the demo posts, in Label Studio export format."""
    return Path(str(resources.files("ner") / "resources" / "demo" / "gold_export.json"))


def demo_rehearsal_path() -> Path:
    """The shipped rehearsal set: WNUT-17 train with its brands, in Label Studio export
    format (``scripts/export_other_posts.py``; CC-BY 4.0)."""
    return demo_gold_path().with_name("other_gold_export.json")


def _post_id(task: Mapping[str, Any]) -> str | None:
    """The post id of a task by the pull's rule (``data.post_id``, else ``data.id``, else the
    task id of a task made by hand: :func:`ner.labelstudio.export.task_post_id`)."""
    return task_post_id_text(task.get("data"), task.get("id"))


class ReplayAnnotator:
    """Answers labelling requests from a fixed set of gold labels."""

    name = "replay-annotator"

    def __init__(self, gold_export: Sequence[Mapping[str, Any]]) -> None:
        self._gold: dict[str, Mapping[str, Any]] = {}
        for task in gold_export:
            post_id = _post_id(task)
            if post_id is None:
                raise DataError(None, "gold task has no post id (data.post_id, data.id, id)")
            self._gold[post_id] = task

    @classmethod
    def from_file(cls, path: Path) -> ReplayAnnotator:
        """The annotator of a Label Studio JSON export at ``path``. Raises
        :class:`NotFoundError` when there is no such file, :class:`ConfigError` when it is
        not a JSON list of tasks (neither can succeed on retry)."""
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NotFoundError(f"gold export {path}: no such file") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"gold export {path}: not a readable JSON export ({exc})") from exc
        if not isinstance(tasks, list):
            raise ConfigError(f"gold export {path}: a Label Studio JSON export is a list of tasks")
        return cls(tasks)

    @classmethod
    def demo(cls) -> ReplayAnnotator:
        return cls.from_file(demo_gold_path())

    def __len__(self) -> int:
        return len(self._gold)

    def knows(self, post_id: str) -> bool:
        return post_id in self._gold

    def annotate(
        self, tasks: Iterable[Mapping[str, Any]], *, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Label Studio export JSON for ``tasks`` (import format), one entry per known post.

        The sent task's data and predictions are kept, as in a real export; the
        annotations are the gold ones, stamped as completed by the replay annotator now.
        """
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        exported: list[dict[str, Any]] = []
        missing = 0
        for task in tasks:
            post_id = _post_id(task)
            gold = self._gold.get(post_id or "")
            if gold is None:
                missing += 1
                continue
            annotations = []
            for ann in gold.get("annotations", []):
                ann = copy.deepcopy(dict(ann))
                ann["completed_by"] = self.name
                ann["updated_at"] = stamp
                ann.setdefault("created_at", stamp)
                annotations.append(ann)
            exported.append(
                {
                    "id": task.get("id", gold.get("id")),
                    "data": dict(task.get("data") or gold.get("data") or {}),
                    "annotations": annotations,
                    "predictions": list(task.get("predictions", [])),
                }
            )
        if missing:
            log.info("replay annotator has no gold for %d of the tasks; left unlabelled", missing)
        return exported
