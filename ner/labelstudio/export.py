"""Label Studio's export JSON: pydantic models, parsing, writing, and the offset guard.

* :class:`SpanResult` is one ``labels`` region (a span) as Label Studio stores it; the same
  model writes pre-annotations and annotations and reads them back;
* :func:`load_export` reads the bytes of an export file into a list of tasks, or raises
  :class:`~ner.errors.ExportFileError` naming the file (not UTF-8, not JSON, nested too
  deeply, not a list);
* :func:`parse_export` turns a Label Studio JSON export into :class:`~ner.types.Annotation`
  records; :func:`annotations_to_export` writes annotations in that format (the replay
  annotator, benchmarks and tests use it);
* the offset guard, :func:`align_span` (with :func:`utf16_to_codepoint`), checks every span
  coming back and repairs the known ways Label Studio's offsets drift from Python code points.

Offsets we send are Python code points, which is what the ``Text`` tag uses for plain text.
Offsets we receive are checked anyway: some Label Studio versions and texts give UTF-16 code
units after astral characters (emoji), count ``\\r\\n`` as one character, or put a
``value.text`` with collapsed runs of whitespace (label-studio issues 1347, 4988, 3078).

Rejection policy of :func:`parse_export` (the good records are always kept):

* a task that is malformed (not an object, no text, no post id, a result list that is not a
  list) is rejected whole, with the task id and the reason;
* so is a task whose post id is neither a string nor an integer (``[1, 2]``, ``true``, ``1.5``)
  or whose text, post id, annotator or ``updated_at`` holds a lone UTF-16 surrogate (an
  escaped ``"\\ud83d"`` that no UTF-8 file can hold): its record could not be written;
* a task without a finished annotation (none, only cancelled ones, or every one deleted: a
  later snapshot holds it empty) is no error: it is left out and its post id listed in
  ``Parsed.unlabelled``; one whose annotations cannot be read is rejected;
* a *span* that is malformed (non-integer offsets, ``end <= start``, no single label), carries a
  label outside ``labels``, overlaps a longer span, or has offsets that cannot be repaired is
  dropped alone; the rest of the post is kept and the span is listed in ``Parsed.rejected``.
  With ``keep_partial=False`` a post that lost any span is rejected whole instead, so that a
  half-read annotation never becomes gold;
* when two tasks carry the same post id, the most recently updated annotation wins and the
  other one is listed in ``Parsed.rejected``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import reprlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from label_studio_sdk.label_interface.objects import PredictionValue
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from ner.errors import ConfigError, DataError, ExportFileError, LabelStudioError, OffsetError
from ner.labelstudio.config import LabelConfig
from ner.report import quantity
from ner.sources import input_bytes, looks_utf16
from ner.storage import Storage
from ner.types import Annotation, Parsed, Prediction, Rejected, Span

log = logging.getLogger(__name__)

#: Said in a superseded record whose post's two tasks hold different texts: worth a look,
#: where a newer annotation of the same text (a fixed label) is not.
TEXTS_DIFFER = "their texts differ"

#: ``type`` of a result made by a ``<Labels>`` control on a ``<Text>`` object.
RESULT_TYPE = "labels"

_WHITESPACE_RUN = re.compile(r"\s+")
_EPOCH = datetime.min.replace(tzinfo=UTC)
#: Short, ASCII-safe ``repr`` of foreign values in rejection reasons (bounded in depth and
#: length, so a deeply nested or huge value never makes a reason unreadable or unwritable).
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 4


def lone_surrogate(value: str) -> int | None:
    """Index of the first lone UTF-16 surrogate in ``value`` (a character UTF-8 cannot
    encode, as JSON's ``"\\ud83d"`` escape gives), or ``None`` when ``value`` is clean."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _surrogate_problem(value: str) -> str | None:
    index = lone_surrogate(value)
    if index is None:
        return None
    return f"lone surrogate U+{ord(value[index]):04X} at character {index}"


def _utf8(value: str) -> str:
    problem = _surrogate_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A string every UTF-8 file can hold (no lone surrogate).
Utf8Str = Annotated[StrictStr, AfterValidator(_utf8)]
#: A post or task id as Label Studio may give it: a string or an integer, never a bool,
#: a float or a list.
RecordId = StrictInt | Utf8Str


# --------------------------------------------------------------------------- models


class SpanValue(BaseModel):
    """``value`` of a span result: code-point offsets, the covered text, one label."""

    model_config = ConfigDict(extra="ignore")

    start: StrictInt
    end: StrictInt
    text: StrictStr | None = None
    labels: list[StrictStr]


class SpanResult(BaseModel):
    """One region of a ``<Labels>`` control on a ``<Text>`` object (a span)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    from_name: str
    to_name: str
    type: Literal["labels"] = "labels"
    value: SpanValue
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The result as Label Studio JSON (no ``score`` key without a score)."""
        return self.model_dump(exclude_none=True)


class _Result(BaseModel):
    """What every result has, whatever its type: read before anything else."""

    model_config = ConfigDict(extra="ignore")

    id: Any = None
    type: Any = None
    from_name: Any = None
    value: Any = None


class _Annotator(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Any = None
    email: Any = None


class ExportAnnotation(BaseModel):
    """One annotation of an exported task (``result`` is checked when it is used)."""

    model_config = ConfigDict(extra="ignore")

    id: Any = None
    result: Any = None
    was_cancelled: bool | None = False
    completed_by: _Annotator | int | str | None = None
    updated_at: Any = None
    created_at: Any = None

    def recency(self, position: int) -> tuple[datetime, int, int]:
        """Sort key: latest ``updated_at`` (else ``created_at``), then id, then position."""
        when = _timestamp(self.updated_at) or _timestamp(self.created_at)
        number = self.id if type(self.id) is int else -1
        return (when or _EPOCH, number, position)

    @property
    def annotator(self) -> str | None:
        who = self.completed_by
        if isinstance(who, _Annotator):
            who = who.email or who.id
        return _optional_str(who)


class TaskAnnotations(BaseModel):
    """Any task JSON (listed or exported) as far as its annotations go."""

    model_config = ConfigDict(extra="ignore")

    id: Any = None
    annotations: list[Any] | None = None

    def readable_annotations(self) -> list[ExportAnnotation]:
        """The annotations that are objects of the expected shape (others are ignored)."""
        found: list[ExportAnnotation] = []
        for raw in self.annotations or []:
            try:
                found.append(ExportAnnotation.model_validate(raw))
            except ValidationError:
                log.debug("task %r: ignoring an unreadable annotation %.80r", self.id, raw)
        return found


class ExportTask(TaskAnnotations):
    """One exported task: its ``data`` and its (raw) annotations."""

    id: RecordId | None = None
    data: dict[str, Any]
    annotations: list[Any] | None = Field(
        default=None, validation_alias=AliasChoices("annotations", "completions")
    )


class _TaskRef(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Any = None


_RESULTS = TypeAdapter(list[Any])
_RECORD_ID: TypeAdapter[int | str] = TypeAdapter(RecordId)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


# --------------------------------------------------------------------------- writing


def region_id(post_id: str, span: Span) -> str:
    """A short id for a result region, stable for the same post, offsets and label."""
    key = f"{post_id}\x1f{span.start}\x1f{span.end}\x1f{span.label}"
    return hashlib.sha1(key.encode("utf-8"), usedforsecurity=False).hexdigest()[:10]


def span_result(post_id: str, span: Span, config: LabelConfig, *, with_score: bool) -> SpanResult:
    """``span`` of post ``post_id`` as a result of the project's control ``config``."""
    return SpanResult(
        id=region_id(post_id, span),
        from_name=config.from_name,
        to_name=config.to_name,
        value=SpanValue(start=span.start, end=span.end, text=span.text, labels=[span.label]),
        score=span.score if with_score else None,
    )


def prediction_json(
    post_id: str, text: str, prediction: Prediction, config: LabelConfig
) -> dict[str, Any]:
    """A pre-annotation (the SDK's ``PredictionValue``) for ``prediction`` on ``text``.

    Raises :class:`DataError` for a prediction of another post and :class:`OffsetError` for
    a span that does not match ``text``, naming the post.
    """
    if prediction.post_id != post_id:
        raise DataError(post_id, f"prediction is for post {prediction.post_id!r}")
    for span in prediction.spans:
        if span.end > len(text) or text[span.start : span.end] != span.text:
            raise OffsetError(
                post_id,
                f"predicted span [{span.start}, {span.end}) {span.text!r} does not match "
                f"the post text there ({text[span.start : span.end]!r})",
            )
    value = PredictionValue(
        model_version=prediction.model_version,
        score=prediction.score,
        result=[
            span_result(post_id, s, config, with_score=True).to_json() for s in prediction.spans
        ],
    )
    return value.model_dump(exclude_none=True)


def annotations_to_export(
    annotations: Iterable[Annotation],
    config: LabelConfig,
    *,
    predictions: Mapping[str, Prediction] | None = None,
) -> list[dict[str, Any]]:
    """Write annotations as a Label Studio JSON export (a list of tasks).

    Each task has one annotation (``id``, ``result``, ``completed_by``, ``updated_at``,
    ``was_cancelled: false``); the task ``id`` is written only when the annotation has one.
    With ``predictions`` (by post id), matching tasks also carry their pre-annotation. Span
    scores are not written into annotations: human labels carry no confidence.
    :func:`parse_export` reads the output back into equal annotations.
    """
    tasks: list[dict[str, Any]] = []
    for number, annotation in enumerate(annotations, start=1):
        task: dict[str, Any] = {}
        if annotation.task_id is not None:
            task["id"] = annotation.task_id
        task["data"] = {config.text_key: annotation.text, "post_id": annotation.post_id}
        results = [
            span_result(annotation.post_id, span, config, with_score=False).to_json()
            for span in annotation.spans
        ]
        task["annotations"] = [
            {
                "id": number,
                "result": results,
                "completed_by": annotation.annotator,
                "updated_at": annotation.updated_at,
                "was_cancelled": False,
            }
        ]
        prediction = (predictions or {}).get(annotation.post_id)
        if prediction is not None:
            task["predictions"] = [
                prediction_json(annotation.post_id, annotation.text, prediction, config)
            ]
        tasks.append(task)
    return tasks


# --------------------------------------------------------------------------- offset guard


def utf16_to_codepoint(text: str, offset: int) -> int | None:
    """Code-point index in ``text`` of a UTF-16 code-unit ``offset``.

    Characters outside the Basic Multilingual Plane (most emoji) take two UTF-16 units and one
    code point. Returns ``None`` when ``offset`` is negative, past the end, or falls between
    the two halves of a surrogate pair.
    """
    if offset < 0:
        return None
    units = 0
    for index, char in enumerate(text):
        if units == offset:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
        if units > offset:
            return None
    return len(text) if units == offset else None


def codepoint_to_utf16(text: str, index: int) -> int:
    """UTF-16 code-unit offset of the code-point ``index`` in ``text`` (the inverse)."""
    if not 0 <= index <= len(text):
        raise ValueError(f"index {index} is outside the text (length {len(text)})")
    return index + sum(1 for char in text[:index] if ord(char) > 0xFFFF)


def _crlf_map(text: str) -> list[int]:
    """Map offsets in ``text`` with every ``\\r\\n`` collapsed to one char onto ``text``."""
    mapping: list[int] = []
    index = 0
    while index < len(text):
        mapping.append(index)
        index += 2 if text.startswith("\r\n", index) else 1
    mapping.append(len(text))
    return mapping


def _join_surrogates(value: str) -> str:
    """Turn UTF-16 surrogate pairs left in a string into the characters they encode."""
    if not any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        return value
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _squash(value: str) -> str:
    """``value`` with every run of whitespace (spaces, tabs, ``\\r\\n``) as one space."""
    return _WHITESPACE_RUN.sub(" ", value)


def _anchored_candidates(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Code-point offsets ``(start, end)`` could mean: as given, as UTF-16, with CRLF as one."""
    seen: set[tuple[int, int]] = set()

    def emit(pair: tuple[int | None, int | None]) -> Iterator[tuple[int, int]]:
        s, e = pair
        if s is not None and e is not None and 0 <= s < e <= len(text) and (s, e) not in seen:
            seen.add((s, e))
            yield (s, e)

    yield from emit((start, end))
    yield from emit((utf16_to_codepoint(text, start), utf16_to_codepoint(text, end)))
    if "\r\n" in text:
        collapsed = text.replace("\r\n", "\n")
        mapping = _crlf_map(text)

        def back(offset: int | None) -> int | None:
            return mapping[offset] if offset is not None and 0 <= offset < len(mapping) else None

        yield from emit((back(start), back(end)))
        yield from emit(
            (back(utf16_to_codepoint(collapsed, start)), back(utf16_to_codepoint(collapsed, end)))
        )


def _nearest(matches: Iterable[tuple[int, int]], start: int) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    for match in matches:
        if best is None or abs(match[0] - start) < abs(best[0] - start):
            best = match
    return best


def _occurrences(text: str, needle: str) -> Iterator[tuple[int, int]]:
    index = text.find(needle)
    while index != -1:
        yield (index, index + len(needle))
        index = text.find(needle, index + 1)


def _flexible_occurrences(text: str, needle: str) -> Iterator[tuple[int, int]]:
    words = needle.split()
    if not words:
        return
    pattern = r"\s+".join(re.escape(word) for word in words)
    if needle[0].isspace():
        pattern = r"\s+" + pattern
    if needle[-1].isspace():
        pattern += r"\s+"
    for match in re.finditer(pattern, text):
        yield (match.start(), match.end())


def align_span(text: str, start: int, end: int, value_text: str | None) -> tuple[int, int] | None:
    """Code-point offsets of the span Label Studio calls ``[start, end)`` / ``value_text``.

    Returns ``(start, end)`` unchanged when ``text[start:end] == value_text``. Otherwise tries,
    in order, and returns the first offsets whose slice is ``value_text``:

    1. the offsets read as UTF-16 code units (astral characters such as emoji before the span),
       as counted on a text whose ``\\r\\n`` are one character, or both (the slice may also
       differ from ``value_text`` by whitespace runs only, issue 3078);
    2. the occurrence of ``value_text`` nearest to ``start``;
    3. the nearest match of ``value_text``'s words separated by any run of whitespace.

    Returns ``None`` when nothing fits. Without ``value_text`` there is nothing to check
    against: offsets inside the text are trusted as they are, others give ``None``.
    """
    if not value_text:
        return (start, end) if 0 <= start < end <= len(text) else None
    value_text = _join_surrogates(value_text)
    if 0 <= start < end <= len(text) and text[start:end] == value_text:
        return (start, end)

    candidates = list(_anchored_candidates(text, start, end))
    for s, e in candidates:
        if text[s:e] == value_text:
            return (s, e)
    squashed = _squash(value_text)
    for s, e in candidates:
        if _squash(text[s:e]) == squashed:
            return (s, e)
    return _nearest(_occurrences(text, value_text), start) or _nearest(
        _flexible_occurrences(text, value_text), start
    )


# --------------------------------------------------------------------------- reading


def _ends_early(exc: json.JSONDecodeError) -> bool:
    """The document stops inside a value: an unterminated string, or the parser wanted more
    at the very end (``Expecting ...`` at the last non-blank character)."""
    end = len(exc.doc.rstrip())
    return exc.msg.startswith("Unterminated string") or exc.pos >= end


def load_export(data: bytes, source: str) -> list[Any]:
    """The tasks of one export file: ``data`` decoded as UTF-8 (a BOM is allowed), parsed as
    JSON, checked to be a list.

    Raises :class:`ExportFileError` naming ``source`` (the file's key) when the bytes are not
    UTF-8 (Latin-1, UTF-16, a stray ``\\xff``; the offset of the first bad byte is given), not
    JSON (or an integer too long to read), nested too deeply to read, or not a list of tasks.
    A lone surrogate escaped in the JSON is valid here: :func:`parse_export` rejects the
    record that holds it.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        what = "it looks UTF-16 (" if looks_utf16(data[:64]) else ""
        what += f"byte 0x{bad} at offset {exc.start}" + (")" if what else "")
        raise ExportFileError(source, f"not UTF-8: {what}; save it as UTF-8") from exc
    try:
        export = json.loads(text)
    except RecursionError as exc:
        raise ExportFileError(source, "JSON nested too deeply to read") from exc
    except ValueError as exc:  # JSONDecodeError, and integers past the digit limit
        if isinstance(exc, json.JSONDecodeError) and _ends_early(exc):  # a trial's cut-off
            raise ExportFileError(  # file was told to export "as JSON"
                source, f"the JSON ends early ({exc}): the file is cut off; export it again"
            ) from exc
        raise ExportFileError(
            source, f"not JSON: {exc}; export the project from Label Studio as JSON"
        ) from exc
    if not isinstance(export, list):
        raise ExportFileError(
            source, f"it holds a JSON {_json_kind(export)}, where an export is a list of tasks"
        )
    if export and all(_flat_record(item) for item in export):
        raise ExportFileError(
            source,
            "its records are flat (no 'data' nor 'annotations'): Label Studio's JSON-MIN or "
            "CSV-like export, which drops offsets' context and annotators; export the project "
            "as JSON instead",
        )
    return export


def _flat_record(item: Any) -> bool:
    """Whether ``item`` is a JSON-MIN record (``{"id", "text", "label": [...]}``), not a task."""
    return isinstance(item, dict) and "data" not in item and "annotations" not in item


@dataclass(slots=True)
class _TaskResult:
    ref: str
    annotation: Annotation | None = None
    rejected: list[Rejected] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)  # how each repaired span was
    recency: tuple[datetime, int, int] = (_EPOCH, -1, -1)
    unlabelled: str | None = None  # the post id of a task nobody labelled (any more)
    updated_at: str | None = None  # of the annotation read, rejected or not


def _value_problem(exc: ValidationError, raw: Mapping[str, Any]) -> str:
    """Why a span's ``value`` is unusable, checked in a fixed order (offsets first)."""
    fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    if fields & {"start", "end"}:
        return "offsets are not integers"
    if raw["end"] <= raw["start"]:
        return "end <= start"
    if "text" in fields:
        return "value.text is not a string"
    return f"expected exactly one label, got {_SHORT.repr(raw.get('labels'))}"


def _read_value(raw: Any, result_id: Any) -> SpanValue | str:
    """The span value of a result, or the reason it cannot be read."""
    if not isinstance(raw, Mapping):
        return f"result {_SHORT.repr(result_id)} has no 'value' object"
    where = (
        f"span [{_SHORT.repr(raw.get('start'))}, {_SHORT.repr(raw.get('end'))}) "
        f"{_SHORT.repr(raw.get('text'))}"
    )
    try:
        value = SpanValue.model_validate(raw)
    except ValidationError as exc:
        return f"{where}: {_value_problem(exc, raw)}"
    if value.end <= value.start:
        return f"{where}: end <= start"
    if len(value.labels) != 1:
        return f"{where}: expected exactly one label, got {value.labels!r}"
    return value


def task_post_id(data: Any, task_id: Any) -> tuple[str | None, Any] | None:
    """Which id a task's post is read under, and its raw value: ``data.post_id`` (what
    ``apply`` sends), else ``data.id``, else the task id (a task made by hand; key None);
    None when it has none. The pull and ``apply``'s check of a project's ids both use it."""
    for key in ("post_id", "id"):
        raw = data.get(key) if isinstance(data, Mapping) else None
        if raw is not None and raw != "":
            return key, raw
    return None if task_id is None else (None, task_id)


def task_post_id_text(data: Any, task_id: Any) -> str | None:
    """:func:`task_post_id`'s value as a string (None when the task has none), unchecked:
    how ``apply`` and the replay annotator find a task's post."""
    found = task_post_id(data, task_id)
    return None if found is None else str(found[1])


class _ExportReader:
    """Reads one export; holds the label set and config so helpers stay small."""

    def __init__(self, labels: Sequence[str], config: LabelConfig | None, keep_partial: bool):
        self.labels = frozenset(labels)
        self.config = config
        self.text_key = config.text_key if config is not None else "text"
        self.keep_partial = keep_partial

    def task(self, raw: Any, position: int) -> _TaskResult:
        """One exported task: its annotation, or the reasons it was rejected."""
        try:
            ident = _TaskRef.model_validate(raw).id
        except ValidationError:
            out = _TaskResult(f"export item #{position}", recency=(_EPOCH, -1, position))
            reason = f"not a task object ({type(raw).__name__})"
            out.rejected.append(Rejected(None, f"{out.ref}: {reason}"))
            return out
        out = _TaskResult(_task_ref(ident, position), recency=(_EPOCH, -1, position))
        try:
            task = ExportTask.model_validate(raw)
            post_id = _checked_post_id(task.data, task.id)
        except ValidationError as exc:
            return self._reject(out, _raw_post_id(raw, ident), _task_problem(exc))
        except DataError as exc:
            return self._reject(out, None, exc.reason)
        text = task.data.get(self.text_key)
        if not isinstance(text, str) or not text.strip():
            return self._reject(out, post_id, f"no text in data.{self.text_key}")
        if post_id is None:
            return self._reject(out, None, "no post id (data.post_id, data.id or task id)")
        problem = _unwritable(f"data.{self.text_key}", text)
        if problem is not None:
            return self._reject(out, post_id, problem)
        return self._annotated(out, task, post_id, text, position)

    @staticmethod
    def _reject(out: _TaskResult, record_id: str | None, reason: str) -> _TaskResult:
        out.rejected.append(Rejected(record_id, f"{out.ref}: {reason}"))
        return out

    def _annotated(
        self, out: _TaskResult, task: ExportTask, post_id: str, text: str, position: int
    ) -> _TaskResult:
        annotations = task.readable_annotations()
        usable = [(a.recency(i), a) for i, a in enumerate(annotations) if not a.was_cancelled]
        if not usable:
            unreadable = len(task.annotations or []) - len(annotations)
            if unreadable:  # something was there and cannot be read: that is named
                return self._reject(out, post_id, f"no annotation ({unreadable} unreadable)")
            out.unlabelled = post_id  # nobody labelled it (any more): nothing wrong
            return out
        out.recency, chosen = max(usable, key=lambda pair: pair[0])
        out.updated_at = _optional_str(chosen.updated_at or chosen.created_at)
        if chosen.result is None:  # Label Studio writes [] for "no brand": this is damage
            how = "null" if "result" in chosen.model_fields_set else "missing"
            return self._reject(
                out, post_id, f"annotation {_SHORT.repr(chosen.id)}: its 'result' is {how}"
            )
        try:
            results = _RESULTS.validate_python(chosen.result)
        except ValidationError:
            return self._reject(out, post_id, "annotation 'result' is not a list")
        annotator = chosen.annotator
        updated_at = _optional_str(chosen.updated_at or chosen.created_at)
        problem = _unwritable("completed_by", annotator) or _unwritable("updated_at", updated_at)
        if problem is not None:
            return self._reject(out, post_id, f"annotation {_SHORT.repr(chosen.id)}: {problem}")
        spans = self._spans(out, post_id, text, results)
        if out.rejected and not self.keep_partial:
            return self._reject(out, post_id, "post rejected because it lost a span")
        out.annotation = Annotation(
            post_id=post_id,
            text=text,
            spans=tuple(spans),
            task_id=task.id if type(task.id) is int else None,
            annotator=annotator,
            updated_at=updated_at,
        )
        return out

    def _spans(self, out: _TaskResult, post_id: str, text: str, results: list[Any]) -> list[Span]:
        spans: list[Span] = []
        for raw in results:
            outcome = self.span(text, raw)
            if isinstance(outcome, str):
                out.rejected.append(Rejected(post_id, f"{out.ref}: {outcome}"))
            elif outcome is not None:
                spans.append(outcome[0])
                if outcome[1] is not None:
                    out.repairs.append(f"{out.ref}: {outcome[1]}")
        kept, overlapping = _drop_overlaps(spans)
        out.rejected.extend(Rejected(post_id, f"{out.ref}: {reason}") for reason in overlapping)
        return kept

    def span(self, text: str, raw: Any) -> tuple[Span, str | None] | str | None:
        """One result: a span (and how it was repaired, if it was), a rejection reason, or
        ``None`` for a result this reader ignores (another control or another type)."""
        try:
            result = _Result.model_validate(raw)
        except ValidationError:
            return f"result is not an object ({type(raw).__name__})"
        if result.type != RESULT_TYPE:
            return None
        if self.config is not None and result.from_name != self.config.from_name:
            return None
        value = _read_value(result.value, result.id)
        if isinstance(value, str):
            return value
        label = value.labels[0]
        shown = _SHORT.repr(value.text) if value.text is not None else "(no text)"
        where = f"span [{value.start}, {value.end}) {shown}"  # a trial read "None" here
        if label not in self.labels:
            return f"{where}: unknown label {_SHORT.repr(label)} (known: {sorted(self.labels)})"
        return _aligned(text, value, where)


def _cuts_a_word(text: str, start: int, end: int) -> bool:
    """Whether ``[start, end)`` begins or ends inside a word (letters or digits on both
    sides of either edge)."""
    return any(
        0 < edge < len(text) and text[edge - 1].isalnum() and text[edge].isalnum()
        for edge in (start, end)
    )


def _aligned(text: str, value: SpanValue, where: str) -> tuple[Span, str | None] | str:
    start, end, label = value.start, value.end, value.labels[0]
    if not value.text and _cuts_a_word(text, start, end):  # nothing to check them against
        return (
            f"{where} {label}: no value.text to check the offsets against, and they cut a "
            f"word ({text[max(start, 0) : end]!r})"
        )
    aligned = align_span(text, start, end, value.text)
    if aligned is None:
        return (
            f"{where} {label}: offsets do not match the text "
            f"({text[max(start, 0) : end]!r}) and its text is nowhere in the post"
        )
    s, e = aligned
    while s < e and text[s].isspace():  # a selection that took the spaces around a word
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if s == e:
        return f"{where} {label}: only whitespace"
    repaired = (s, e) != (start, end) or (bool(value.text) and text[s:e] != value.text)
    note = f"{where} -> [{s}, {e}) {_SHORT.repr(text[s:e])}" if repaired else None
    return Span(s, e, label, text[s:e]), note


def _task_ref(ident: Any, position: int) -> str:
    """How rejections name a task: ``task 7``, ``task 'abc'``, or its position in the file
    when it has no id (a foreign id is shown by a short, writable ``repr``)."""
    if ident is None:
        return f"export item #{position}"
    if type(ident) is int:
        return f"task {ident}"
    return f"task {_SHORT.repr(ident)} (export item #{position})"


def _unwritable(name: str, value: str | None) -> str | None:
    """Why ``value`` (the field ``name``) cannot go into a UTF-8 record, else ``None``."""
    problem = None if value is None else _surrogate_problem(value)
    return None if problem is None else f"{name} holds a {problem}"


def _id_problem(name: str, raw: Any) -> str:
    """Why ``raw`` failed :data:`RecordId`: a string only for a lone surrogate."""
    if isinstance(raw, str):
        return f"{name} {_SHORT.repr(raw)} holds a {_surrogate_problem(raw)}"
    return f"{name} is not a string or an integer ({type(raw).__name__} {_SHORT.repr(raw)})"


def _checked_post_id(data: Any, task_id: Any) -> str | None:
    """:func:`task_post_id` as a string; ``None`` if none is given. Raises
    :class:`DataError` for an id in ``data`` that is not a string or an integer, or that
    holds a lone surrogate (``task_id`` comes checked)."""
    found = task_post_id(data, task_id)
    if found is None:
        return None
    key, raw = found
    if key is None:
        return str(raw)
    try:
        return str(_RECORD_ID.validate_python(raw))
    except ValidationError as exc:
        raise DataError(None, _id_problem(f"data.{key}", raw)) from exc


def _raw_post_id(raw: Any, task_id: Any) -> str | None:
    """The post id of a task that did not validate, when its ``data`` gives a readable one
    (a trial's task with ``data.post_id`` "m2" was named ``<no id>``), else None."""
    data = raw.get("data") if isinstance(raw, Mapping) else None
    try:
        return _checked_post_id(data, task_id)
    except DataError:
        return None


def _task_problem(exc: ValidationError) -> str:
    fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    if "data" in fields:
        return "no 'data' object"
    if fields & {"annotations", "completions"}:
        return "'annotations' is not a list"
    return _id_problem("task id", exc.errors()[0]["input"])


def _drop_overlaps(spans: list[Span]) -> tuple[list[Span], list[str]]:
    """Keep the longer of overlapping spans (the first one on a tie); say why for the others."""
    kept: list[Span] = []
    reasons: list[str] = []
    for span in sorted(spans, key=lambda s: s.start - s.end):  # longest first, stable
        clash = next((k for k in kept if span.start < k.end and k.start < span.end), None)
        if clash is None:
            kept.append(span)
            continue
        what = "duplicates" if clash.key == span.key else "overlaps"
        reasons.append(
            f"span [{span.start}, {span.end}) {span.text!r} {span.label} {what} the kept span "
            f"[{clash.start}, {clash.end}) {clash.text!r} {clash.label}"
        )
    return sorted(kept, key=lambda s: (s.start, s.end)), reasons


def _note_rejected_at(parsed: Parsed, outcome: _TaskResult) -> None:
    """Record when the annotation of a task rejected whole was saved (``Parsed.rejected_at``),
    so that a reader of several exports can tell an older rejected record from a newer one."""
    if outcome.annotation is not None or outcome.updated_at is None:
        return
    for item in outcome.rejected:
        if item.record_id is not None:
            known = parsed.rejected_at.get(item.record_id)
            parsed.rejected_at[item.record_id] = max(known or "", outcome.updated_at)


def _keep_latest(
    best: dict[str, _TaskResult], outcome: _TaskResult, post_id: str
) -> Rejected | None:
    """Keep ``outcome`` if it is the most recent for its post; the other one is named."""
    previous = best.get(post_id)
    if previous is None:
        best[post_id] = outcome
        return None
    if outcome.recency >= previous.recency:
        best[post_id] = outcome
        older, newer = previous, outcome
    else:
        older, newer = outcome, previous
    when, number, _ = newer.recency
    if when != _EPOCH:
        why = f"(updated {newer.annotation.updated_at if newer.annotation else when.isoformat()})"
    elif number >= 0:
        why = f"(no date on either; the higher annotation id, {number})"
    else:
        why = "(no date or annotation id on either; the later in the export)"
    texts = {r.annotation.text for r in (older, newer) if r.annotation is not None}
    return Rejected(post_id, duplicate_reason(older.ref, newer.ref, why, len(texts) > 1))


def duplicate_reason(older: str, newer: str, why: str, texts_differ: bool) -> str:
    """Why the record of task ``older`` gives way to that of task ``newer`` of the same post
    id (``why``: what makes it more recent, in brackets)."""
    differ = (
        f"; {TEXTS_DIFFER}: a source reused the id, or the post was edited: check which post it is"
        if texts_differ
        else ""
    )
    kept = f"the annotation of {newer} {why} is more recent and is kept"
    return f"{older}: duplicate post id; {kept}{differ}"


def parse_export(
    export: Any,
    *,
    labels: Sequence[str],
    config: LabelConfig | None = None,
    keep_partial: bool = True,
) -> Parsed:
    """Annotations from a Label Studio JSON export (a list of tasks), offsets checked.

    For each task the latest non-cancelled annotation is used. ``post_id`` comes from
    ``data.post_id``, else ``data.id``, else the task id. Only results of type ``labels`` (and,
    with ``config``, from ``config.from_name``) are read; the text comes from
    ``data[config.text_key]`` (``data.text`` without a config). Labels outside ``labels`` are
    rejected span by span. See the module docstring for the whole rejection policy.

    Every span is checked with :func:`align_span`; ``Parsed.repaired`` counts the spans whose
    offsets or ``value.text`` did not match the text and were repaired, ``Parsed.repairs``
    says how, post by post. Raises
    :class:`LabelStudioError` if ``export`` is not a list.
    """
    if not isinstance(export, list):
        raise LabelStudioError(
            f"a Label Studio JSON export is a list of tasks, got {type(export).__name__}"
        )
    reader = _ExportReader(labels, config, keep_partial)
    parsed = Parsed()
    best: dict[str, _TaskResult] = {}
    for position, raw in enumerate(export):
        outcome = reader.task(raw, position)
        parsed.rejected.extend(outcome.rejected)
        _note_rejected_at(parsed, outcome)
        if outcome.unlabelled is not None:
            parsed.unlabelled.append(outcome.unlabelled)
        if outcome.annotation is not None:
            loser = _keep_latest(best, outcome, outcome.annotation.post_id)
            if loser is not None:
                parsed.rejected.append(loser)
    for outcome in best.values():
        parsed.records.append(outcome.annotation)
        parsed.repaired += len(outcome.repairs)
        if outcome.repairs and outcome.annotation is not None:
            parsed.repairs[outcome.annotation.post_id] = outcome.repairs
    log.info(
        "read %s from %s: %d unlabelled, %d rejected, %s repaired",
        quantity(len(parsed.records), "annotation"),
        quantity(len(export), "task"),
        len(parsed.unlabelled),
        len(parsed.rejected),
        quantity(parsed.repaired, "span"),
    )
    return parsed


def read_labelled(export: Any, labels: Sequence[str]) -> Parsed:
    """The posts of an export labelled for other uses too (a general set: PERSON, LOCATION
    ...), kept with their ``labels`` spans only (the others counted in ``ignored_spans``):
    :func:`parse_export` over every label the export names, so other labels are not
    rejected, and a post that loses a span (offsets that cannot be repaired, overlaps) is
    left out whole and named in ``rejected`` (half of its brands would count as
    non-brands). Raises as :func:`parse_export`."""
    every = sorted({*labels, *_labels_in(export if isinstance(export, list) else [])})
    parsed = parse_export(export, labels=every, keep_partial=False)
    ours = set(labels)
    ignored = Counter(s.label for a in parsed.records for s in a.spans if s.label not in ours)
    parsed.ignored_spans = dict(sorted(ignored.items()))
    parsed.records[:] = [
        replace(a, spans=tuple(s for s in a.spans if s.label in ours)) for a in parsed.records
    ]
    return parsed


def labelled_export(
    storage: Storage, uri: str, labels: Sequence[str], *, what: str, where: str
) -> tuple[int, Parsed]:
    """The tasks count and the posts of the Label Studio JSON export ``uri`` (a file, or a
    key under ``storage``) with their ``labels`` spans
    (:func:`ner.labelstudio.export.read_labelled`). Raises :class:`InputNotFoundError`
    naming ``what`` when it is not there, and :class:`ConfigError` naming ``where`` when it
    is not an export."""
    try:
        export = load_export(input_bytes(storage, uri, what), uri)
    except ExportFileError as exc:
        raise ConfigError(f"{where} is not a Label Studio JSON export: {exc.reason}") from exc
    return len(export), read_labelled(export, labels)


def _json_kind(value: Any) -> str:
    """``"object"``, ``"string"``, … : the JSON name of a parsed value's type."""
    names = {dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _labels_in(export: list[Any]) -> set[str]:
    """Every span label an export's results name (malformed parts skipped: the parser
    reports them)."""
    found: set[str] = set()
    for task in export:
        annotations = task.get("annotations") if isinstance(task, dict) else None
        for annotation in annotations if isinstance(annotations, list) else ():
            results = annotation.get("result") if isinstance(annotation, dict) else None
            for item in results if isinstance(results, list) else ():
                value = item.get("value") if isinstance(item, dict) else None
                names = value.get("labels") if isinstance(value, dict) else None
                if isinstance(names, list):
                    found.update(n for n in names if isinstance(n, str) and n.strip())
    return found


def count_labelled(export: Any) -> int:
    """Tasks in an export with at least one finished (not cancelled) annotation.

    Anything that is not a list of tasks counts 0; items that are not tasks are skipped.
    """
    if not isinstance(export, list):
        return 0
    count = 0
    for raw in export:
        try:
            task = TaskAnnotations.model_validate(raw)
        except ValidationError:
            continue
        count += any(not a.was_cancelled for a in task.readable_annotations())
    return count
