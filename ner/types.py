"""Data contracts shared by every step of the loop.

Offsets are **Python code-point** offsets into the post text, end exclusive, and
``span.text == post_text[span.start:span.end]`` always holds for a span attached to a text.
The post ``id`` is the platform id and the idempotency key everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ner.errors import DataError
from ner.report import printable


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled character span. ``score`` is the model's confidence when it has one."""

    start: int
    end: int
    label: str
    text: str
    score: float | None = None

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"invalid span offsets [{self.start}, {self.end})")
        if len(self.text) != self.end - self.start:
            raise ValueError(
                f"span text {self.text!r} has length {len(self.text)}, "
                f"offsets say {self.end - self.start}"
            )

    @property
    def key(self) -> tuple[int, int, str]:
        """Identity used for exact matching: offsets and label."""
        return (self.start, self.end, self.label)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.score is None:
            del data["score"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Span:
        score = data.get("score")
        return cls(
            start=int(data["start"]),
            end=int(data["end"]),
            label=str(data["label"]),
            text=str(data["text"]),
            score=None if score is None else float(score),
        )


def check_spans(record_id: str, text: str, spans: Iterable[Span]) -> None:
    """Raise :class:`DataError` unless every span's text is ``text[start:end]``."""
    for span in spans:
        if span.end > len(text) or text[span.start : span.end] != span.text:
            raise DataError(
                record_id,
                f"span [{span.start}, {span.end}) {span.text!r} does not match the text "
                f"there ({text[span.start : span.end]!r})",
            )


@dataclass(frozen=True, slots=True)
class Post:
    """A social-media post as fetched from a source."""

    id: str
    text: str
    created_at: str | None = None
    author_id: str | None = None
    lang: str | None = None
    source: str = "jsonl"
    query: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise DataError(None, "post has no id")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Post:
        """Build a post from a JSON object; raises :class:`DataError` naming the record."""
        record_id = data.get("id")
        if record_id is None:
            raise DataError(None, "missing 'id'")
        if str(record_id).strip() == "":
            raise DataError(None, f"blank 'id' ({record_id!r})")
        text = data.get("text")
        if not isinstance(text, str):
            raise DataError(str(record_id), "missing or non-string 'text'")
        if not text.strip():
            raise DataError(str(record_id), "empty text")

        def opt(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            id=str(record_id),
            text=text,
            created_at=opt("created_at"),
            author_id=opt("author_id"),
            lang=opt("lang"),
            source=str(data.get("source") or "jsonl"),
            query=opt("query"),
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a model found in one post."""

    post_id: str
    spans: tuple[Span, ...]
    model_version: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "post_id": self.post_id,
            "spans": [s.to_dict() for s in self.spans],
            "model_version": self.model_version,
        }
        if self.score is not None:
            data["score"] = self.score
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        score = data.get("score")
        return cls(
            post_id=str(data["post_id"]),
            spans=tuple(Span.from_dict(s) for s in data.get("spans", [])),
            model_version=str(data.get("model_version", "")),
            score=None if score is None else float(score),
        )


@dataclass(frozen=True, slots=True)
class Annotation:
    """A human-checked post: the gold spans for one text."""

    post_id: str
    text: str
    spans: tuple[Span, ...]
    task_id: int | None = None
    annotator: str | None = None
    updated_at: str | None = None

    def __post_init__(self) -> None:
        check_spans(self.post_id, self.text, self.spans)

    def to_dict(self) -> dict[str, Any]:
        return {
            "post_id": self.post_id,
            "task_id": self.task_id,
            "text": self.text,
            "spans": [s.to_dict() for s in self.spans],
            "annotator": self.annotator,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Annotation:
        task_id = data.get("task_id")
        return cls(
            post_id=str(data["post_id"]),
            text=str(data["text"]),
            spans=tuple(Span.from_dict(s) for s in data.get("spans", [])),
            task_id=None if task_id is None else int(task_id),
            annotator=data.get("annotator"),
            updated_at=data.get("updated_at"),
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that was skipped, and why. Good records around it are kept."""

    record_id: str | None
    reason: str
    #: 1-based line of the record in its file, for records read from a JSONL file
    line: int | None = None

    def __str__(self) -> str:
        """``"<id>: <reason>"`` or ``"line 3 (<id>): <reason>"``, the id's control characters
        and lone surrogates escaped (:func:`ner.report.printable`)."""
        shown = printable(self.record_id) if self.record_id else None
        if self.line is None:
            return f"{shown or '<no id>'}: {self.reason}"
        which = f" ({shown})" if shown else ""
        return f"line {self.line}{which}: {self.reason}"

    def entry(self) -> dict[str, Any]:
        """This rejection as an entry of a ``.rejected.json`` report: ``{"post_id": str |
        None, "reason": str}``, with ``"line": int`` for a record of a JSONL file. The id is
        the record's own (JSON escapes its control characters), not the terminal's form."""
        found: dict[str, Any] = {"post_id": self.record_id, "reason": self.reason}
        return found if self.line is None else {"line": self.line, **found}


@dataclass(slots=True)
class Parsed:
    """Records parsed from an untrusted input, with the rejected ones named. ``unlabelled``:
    ids of tasks left out because nobody labelled them (any more), which is no error."""

    records: list[Any] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    repaired: int = 0
    #: post id -> how each repaired span of its record was repaired (posts with a repair
    #: only), e.g. ``"task 3: span [1, 9) 'Glossier' -> [0, 8) 'Glossier'"``
    repairs: dict[str, list[str]] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    #: post id -> ``updated_at`` (else ``created_at``) of the annotation of a task rejected
    #: whole, where it has one (Label Studio exports)
    rejected_at: dict[str, str] = field(default_factory=dict)
    #: spans of labels the reader does not score, per label, left out of ``records``
    #: (:func:`ner.labelstudio.export.read_labelled`: ``{"PERSON": 40}``)
    ignored_spans: dict[str, int] = field(default_factory=dict)
