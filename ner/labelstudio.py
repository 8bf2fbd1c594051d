"""Conversion between brandloop's data contracts and Label Studio's JSON.

This part of the module is pure: no network, no SDK. It covers

* the labelling config: :func:`label_config` builds it from the label list and
  :func:`parse_label_config` reads ``from_name`` / ``to_name`` / the text field back from any
  project's config;
* the way out: :func:`to_tasks` turns posts and their predictions into Label Studio import JSON;
* the way back: :func:`parse_export` turns a Label Studio JSON export into
  :class:`~ner.types.Annotation` records, and :func:`annotations_to_export` writes annotations
  in that export format (used by the replay annotator and the tests);
* the offset guard: :func:`align_span` (with :func:`utf16_to_codepoint`), which checks every span
  coming back and repairs the known ways Label Studio's offsets drift from Python code points.

Offsets we send are Python code points, which is what the ``Text`` tag uses for plain text.
Offsets we receive are checked anyway: some Label Studio versions and texts give UTF-16 code
units after astral characters (emoji), count ``\\r\\n`` as one character, or put a
``value.text`` with collapsed runs of whitespace (label-studio issues 1347, 4988, 3078).

Rejection policy of :func:`parse_export` (the good records are always kept):

* a task that is malformed (not an object, no text, no post id, no usable annotation, a result
  list that is not a list) is rejected whole, with the task id and the reason;
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
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard
from xml.sax.saxutils import escape

from ner.errors import DataError, LabelStudioError, OffsetError
from ner.storage import EXPORTS, Storage
from ner.types import Annotation, Parsed, Post, Prediction, Rejected, Span

log = logging.getLogger(__name__)

#: ``type`` of a result made by a ``<Labels>`` control on a ``<Text>`` object.
RESULT_TYPE = "labels"

#: Keys of :class:`~ner.types.Post` copied into a task's ``data`` besides the text.
POST_META = ("created_at", "author_id", "lang", "source", "query")

_ATTR_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
_WHITESPACE_RUN = re.compile(r"\s+")


# --------------------------------------------------------------------------- label config


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """What a project's labelling config says about its span labels.

    ``from_name`` is the ``name`` of the ``<Labels>`` control, ``to_name`` the ``name`` of the
    ``<Text>`` object it is bound to, ``labels`` the ``<Label value=…>`` list and ``text_key``
    the task ``data`` field the text is read from (``"text"`` for ``value="$text"``).
    """

    from_name: str
    to_name: str
    labels: tuple[str, ...]
    text_key: str = "text"

    @classmethod
    def for_labels(cls, labels: Sequence[str]) -> LabelConfig:
        """The config :func:`label_config` generates for ``labels``, already parsed."""
        return parse_label_config(label_config(labels))


def label_config(labels: Sequence[str]) -> str:
    """Label Studio XML config with one ``<Labels>`` control over one ``<Text>`` object.

    The control is named ``label``, the object ``text`` and it reads ``$text``; every label
    becomes a ``<Label value=…/>`` with its value XML-escaped. Raises
    :class:`LabelStudioError` for an empty list, a blank label or a label listed twice.
    """
    if isinstance(labels, str):
        raise LabelStudioError("labels must be a sequence of label names, not one string")
    if not labels:
        raise LabelStudioError("cannot build a labelling config without labels")
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise LabelStudioError(f"invalid label {label!r}: labels must be non-empty strings")
        if label in seen:
            raise LabelStudioError(f"label {label!r} is listed twice")
        seen.add(label)
    items = "".join(f'<Label value="{escape(label, _ATTR_ENTITIES)}"/>' for label in labels)
    return (
        f'<View><Labels name="label" toName="text">{items}</Labels>'
        '<Text name="text" value="$text"/></View>'
    )


def parse_label_config(xml: str) -> LabelConfig:
    """Read the first ``<Labels>`` control bound to a ``<Text>`` object from a project config.

    ``toName`` may list several objects separated by commas; the first one that is a ``<Text>``
    is used. Raises :class:`LabelStudioError` when the XML does not parse, when no ``<Labels>``
    is bound to a ``<Text>``, or when that ``<Text>`` does not read a ``$field`` of the task.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelStudioError(f"the labelling config is not valid XML: {exc}") from exc

    texts = {el.get("name"): el.get("value") for el in root.iter("Text") if el.get("name")}
    found: list[LabelConfig] = []
    for control in root.iter("Labels"):
        from_name = control.get("name")
        if not from_name:
            continue
        for to_name in (name.strip() for name in (control.get("toName") or "").split(",")):
            if to_name not in texts:
                continue
            value = texts[to_name] or ""
            if not value.startswith("$") or len(value) < 2:
                raise LabelStudioError(
                    f"<Text name={to_name!r}> has value={value!r}; expected a task field "
                    'such as value="$text"'
                )
            labels = tuple(
                label.get("value", "") for label in control.iter("Label") if label.get("value")
            )
            found.append(LabelConfig(from_name, to_name, labels, value[1:]))
            break
    if not found:
        raise LabelStudioError(
            "the labelling config has no <Labels> control bound to a <Text> object "
            f"(Text objects: {sorted(n for n in texts if n) or 'none'})"
        )
    if len(found) > 1:
        log.info(
            "labelling config has %d <Labels> controls on Text; using %r",
            len(found),
            found[0].from_name,
        )
    return found[0]


# --------------------------------------------------------------------------- offsets


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


# --------------------------------------------------------------------------- the way out


def _region_id(post_id: str, span: Span) -> str:
    """A short id for a result region, stable for the same post, offsets and label."""
    key = f"{post_id}\x1f{span.start}\x1f{span.end}\x1f{span.label}"
    return hashlib.sha1(key.encode("utf-8"), usedforsecurity=False).hexdigest()[:10]


def _result(post_id: str, span: Span, config: LabelConfig, *, with_score: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": _region_id(post_id, span),
        "from_name": config.from_name,
        "to_name": config.to_name,
        "type": RESULT_TYPE,
        "value": {
            "start": span.start,
            "end": span.end,
            "text": span.text,
            "labels": [span.label],
        },
    }
    if with_score and span.score is not None:
        item["score"] = span.score
    return item


def _prediction_json(
    post_id: str, text: str, prediction: Prediction, config: LabelConfig
) -> dict[str, Any]:
    if prediction.post_id != post_id:
        raise DataError(post_id, f"prediction is for post {prediction.post_id!r}")
    for span in prediction.spans:
        if span.end > len(text) or text[span.start : span.end] != span.text:
            raise OffsetError(
                post_id,
                f"predicted span [{span.start}, {span.end}) {span.text!r} does not match "
                f"the post text there ({text[span.start : span.end]!r})",
            )
    body: dict[str, Any] = {
        "model_version": prediction.model_version,
        "result": [_result(post_id, s, config, with_score=True) for s in prediction.spans],
    }
    if prediction.score is not None:
        body["score"] = prediction.score
    return body


def to_tasks(
    items: Iterable[tuple[Post, Prediction | None]], config: LabelConfig
) -> list[dict[str, Any]]:
    """Label Studio import JSON: one task per post, with its prediction as a pre-annotation.

    ``data`` holds the text under ``config.text_key``, the ``post_id`` and the post's
    metadata. A post without a prediction gets no ``predictions`` key. Predicted spans are
    code-point offsets; a span that does not match the post text, or a prediction for another
    post, is a bug upstream and raises :class:`~ner.errors.DataError` naming the post.
    """
    tasks: list[dict[str, Any]] = []
    for post, prediction in items:
        data: dict[str, Any] = {config.text_key: post.text, "post_id": post.id}
        for key in POST_META:
            data[key] = getattr(post, key)
        task: dict[str, Any] = {"data": data}
        if prediction is not None:
            task["predictions"] = [_prediction_json(post.id, post.text, prediction, config)]
        tasks.append(task)
    return tasks


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
        task["annotations"] = [
            {
                "id": number,
                "result": [
                    _result(annotation.post_id, span, config, with_score=False)
                    for span in annotation.spans
                ],
                "completed_by": annotation.annotator,
                "updated_at": annotation.updated_at,
                "was_cancelled": False,
            }
        ]
        prediction = (predictions or {}).get(annotation.post_id)
        if prediction is not None:
            task["predictions"] = [
                _prediction_json(annotation.post_id, annotation.text, prediction, config)
            ]
        tasks.append(task)
    return tasks


# --------------------------------------------------------------------------- the way back

_EPOCH = datetime.min.replace(tzinfo=UTC)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _recency(annotation: Mapping[str, Any], position: int) -> tuple[datetime, int, int]:
    """Sort key: latest ``updated_at`` (else ``created_at``), then annotation id, then order."""
    when = _timestamp(annotation.get("updated_at")) or _timestamp(annotation.get("created_at"))
    ident = annotation.get("id")
    number = ident if isinstance(ident, int) and not isinstance(ident, bool) else -1
    return (when or _EPOCH, number, position)


def _annotator(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("email") or value.get("id")
    return _optional_str(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(slots=True)
class _TaskResult:
    ref: str
    annotation: Annotation | None
    rejected: list[Rejected]
    repaired: int
    recency: tuple[datetime, int, int]


class _ExportReader:
    """Reads one export; holds the label set and config so helpers stay small."""

    def __init__(self, labels: Sequence[str], config: LabelConfig | None, keep_partial: bool):
        self.labels = frozenset(labels)
        self.config = config
        self.text_key = config.text_key if config is not None else "text"
        self.keep_partial = keep_partial

    def task(self, task: Any, position: int) -> _TaskResult:
        ref = f"export item #{position}"
        none = _TaskResult(ref, None, [], 0, (_EPOCH, -1, position))
        if not isinstance(task, Mapping):
            reason = f"not a task object ({type(task).__name__})"
            none.rejected.append(Rejected(None, f"{ref}: {reason}"))
            return none
        raw_id = task.get("id")
        task_id = raw_id if _is_int(raw_id) else None
        if raw_id is not None:
            ref = none.ref = f"task {raw_id}"

        def reject(record_id: str | None, reason: str) -> _TaskResult:
            none.rejected.append(Rejected(record_id, f"{ref}: {reason}"))
            return none

        data = task.get("data")
        if not isinstance(data, Mapping):
            return reject(None, "no 'data' object")
        post_id = next(
            (str(data[k]) for k in ("post_id", "id") if data.get(k) not in (None, "")),
            None if raw_id is None else str(raw_id),
        )
        text = data.get(self.text_key)
        if not isinstance(text, str) or not text.strip():
            return reject(post_id, f"no text in data.{self.text_key}")
        if post_id is None:
            return reject(None, "no post id (data.post_id, data.id or task id)")

        raw_annotations = task.get("annotations", task.get("completions"))
        if raw_annotations is None:
            raw_annotations = []
        if not isinstance(raw_annotations, list):
            return reject(post_id, "'annotations' is not a list")
        usable = [
            (_recency(a, i), a)
            for i, a in enumerate(raw_annotations)
            if isinstance(a, Mapping) and not a.get("was_cancelled")
        ]
        if not usable:
            cancelled = sum(
                1 for a in raw_annotations if isinstance(a, Mapping) and a.get("was_cancelled")
            )
            return reject(
                post_id, "no annotation" + (f" ({cancelled} cancelled)" if cancelled else "")
            )
        recency, chosen = max(usable, key=lambda pair: pair[0])
        results = chosen.get("result")
        if results is None:
            results = []
        if not isinstance(results, list):
            return reject(post_id, "annotation 'result' is not a list")

        spans: list[Span] = []
        rejected: list[Rejected] = []
        repaired = 0
        for result in results:
            outcome = self.span(text, result)
            if outcome is None:
                continue
            if isinstance(outcome, str):
                rejected.append(Rejected(post_id, f"{ref}: {outcome}"))
                continue
            span, was_repaired = outcome
            spans.append(span)
            repaired += was_repaired
        kept, overlapping = _drop_overlaps(spans)
        rejected.extend(Rejected(post_id, f"{ref}: {reason}") for reason in overlapping)
        if rejected and not self.keep_partial:
            rejected.append(Rejected(post_id, f"{ref}: post rejected because it lost a span"))
            return _TaskResult(ref, None, rejected, 0, recency)
        annotation = Annotation(
            post_id=post_id,
            text=text,
            spans=tuple(kept),
            task_id=task_id,
            annotator=_annotator(chosen.get("completed_by")),
            updated_at=_optional_str(chosen.get("updated_at") or chosen.get("created_at")),
        )
        return _TaskResult(ref, annotation, rejected, repaired, recency)

    def span(self, text: str, result: Any) -> tuple[Span, bool] | str | None:
        """One result: a span (and whether it was repaired), a rejection reason, or ``None``
        for a result this reader ignores (another control or another type)."""
        if not isinstance(result, Mapping):
            return f"result is not an object ({type(result).__name__})"
        if result.get("type") != RESULT_TYPE:
            return None
        if self.config is not None and result.get("from_name") != self.config.from_name:
            return None
        value = result.get("value")
        if not isinstance(value, Mapping):
            return f"result {result.get('id')!r} has no 'value' object"
        start, end, value_text = value.get("start"), value.get("end"), value.get("text")
        where = f"span [{start}, {end}) {value_text!r}"
        if not _is_int(start) or not _is_int(end):
            return f"{where}: offsets are not integers"
        if end <= start:
            return f"{where}: end <= start"
        if value_text is not None and not isinstance(value_text, str):
            return f"{where}: value.text is not a string"
        labels = value.get("labels")
        if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
            return f"{where}: expected exactly one label, got {labels!r}"
        label = labels[0]
        if label not in self.labels:
            return f"{where}: unknown label {label!r} (known: {sorted(self.labels)})"
        aligned = align_span(text, start, end, value_text)
        if aligned is None:
            return (
                f"{where} {label}: offsets do not match the text "
                f"({text[max(start, 0) : end]!r}) and it could not be found nearby"
            )
        s, e = aligned
        was_repaired = (s, e) != (start, end) or (bool(value_text) and text[s:e] != value_text)
        if (s, e) != (start, end):
            log.debug("repaired span [%d, %d) -> [%d, %d) %r", start, end, s, e, text[s:e])
        return Span(s, e, label, text[s:e]), was_repaired


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
    offsets or ``value.text`` did not match the text and were repaired. Raises
    :class:`LabelStudioError` if ``export`` is not a list.
    """
    if not isinstance(export, list):
        raise LabelStudioError(
            f"a Label Studio JSON export is a list of tasks, got {type(export).__name__}"
        )
    reader = _ExportReader(labels, config, keep_partial)
    parsed = Parsed()
    best: dict[str, tuple[_TaskResult, Annotation]] = {}
    for position, task in enumerate(export):
        outcome = reader.task(task, position)
        parsed.rejected.extend(outcome.rejected)
        annotation = outcome.annotation
        if annotation is None:
            continue
        previous = best.get(annotation.post_id)
        if previous is None:
            best[annotation.post_id] = (outcome, annotation)
            continue
        if outcome.recency >= previous[0].recency:
            best[annotation.post_id] = (outcome, annotation)
            older, newer = previous, (outcome, annotation)
        else:
            older, newer = (outcome, annotation), previous
        parsed.rejected.append(
            Rejected(
                annotation.post_id,
                f"{older[0].ref}: duplicate post id; the annotation of {newer[0].ref} "
                f"(updated {newer[1].updated_at}) is more recent and is kept",
            )
        )
    for outcome, annotation in best.values():
        parsed.records.append(annotation)
        parsed.repaired += outcome.repaired
    log.info(
        "read %d annotations from %d tasks: %d rejected, %d spans repaired",
        len(parsed.records),
        len(export),
        len(parsed.rejected),
        parsed.repaired,
    )
    return parsed


# --------------------------------------------------------------------------- storage exchange
def write_import_file(
    storage: Storage,
    posts_key: str,
    predictions_key: str,
    key: str,
    labels: Sequence[str],
    *,
    only: Collection[str] | None = None,
) -> int:
    """Stream posts and their predictions into one Label Studio import JSON at ``key``.

    Posts and predictions are read line by line, in step (the predict step keeps the order),
    so memory stays flat. With ``only``, just the posts with those ids become tasks (the
    active-learning selection). Returns the number of tasks written.
    """
    from ner.inference import read_posts

    config = LabelConfig.for_labels(labels)
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        predictions = (
            Prediction.from_dict(json.loads(line))
            for line in storage.iter_lines(predictions_key)
            if line.strip()
        )
        yield "["
        for post, prediction in zip(read_posts(storage, posts_key), predictions, strict=True):
            if prediction.post_id != post.id:
                raise DataError(post.id, f"prediction is for post {prediction.post_id}")
            if only is not None and post.id not in only:
                continue
            task = to_tasks([(post, prediction)], config)[0]
            yield ("," if count else "") + json.dumps(task, ensure_ascii=False)
            count += 1
        yield "]"

    try:
        storage.write_lines(key, lines())
    except ValueError as exc:  # zip(strict=True): the two files disagree in length
        raise DataError(predictions_key, f"posts and predictions differ in count: {exc}") from exc
    return count


def count_labelled(export: Any) -> int:
    """Tasks in an export with at least one finished (not cancelled) annotation."""
    if not isinstance(export, list):
        return 0
    return sum(
        1
        for task in export
        if isinstance(task, dict)
        and any(
            isinstance(a, dict) and not a.get("was_cancelled")
            for a in (task.get("annotations") or [])
        )
    )


def collect_annotations(
    storage: Storage,
    export_keys: Sequence[str] | None,
    labels: Sequence[str],
    *,
    out_key: str,
) -> dict[str, Any]:
    """Parse export snapshots from storage into one annotations JSONL at ``out_key``.

    ``export_keys`` defaults to every ``exports/*.json``. A post labelled in several
    snapshots keeps its most recent annotation. Rejected records are written next to the
    output (``…rejected.json``) with their reasons, and counted. A post that lost a span to
    a bad offset is rejected whole, so half-read annotations never become gold.
    """
    from ner.datasets import dataset_hash, write_annotations

    keys = (
        list(export_keys)
        if export_keys
        else [k for k in storage.list(EXPORTS) if k.endswith(".json")]
    )
    latest: dict[str, tuple[str, int, Annotation]] = {}
    rejected: list[str] = []
    repaired = 0
    for order, key in enumerate(keys):
        parsed = parse_export(storage.read_json(key), labels=labels, keep_partial=False)
        repaired += parsed.repaired
        rejected.extend(f"{key}: {item}" for item in parsed.rejected)
        for annotation in parsed.records:
            stamp = (annotation.updated_at or "", order, annotation)
            known = latest.get(annotation.post_id)
            if known is None or stamp[:2] >= known[:2]:
                latest[annotation.post_id] = stamp
    annotations = [latest[post_id][2] for post_id in sorted(latest)]
    write_annotations(storage, out_key, annotations)
    if rejected:
        storage.write_json(out_key.removesuffix(".jsonl") + ".rejected.json", rejected)
        for reason in rejected[:20]:
            log.warning("rejected %s", reason)
    return {
        "annotations_key": out_key,
        "export_keys": keys,
        "n_annotations": len(annotations),
        "n_rejected": len(rejected),
        "n_repaired": repaired,
        "rejected": rejected[:100],
        "dataset_hash": dataset_hash(annotations),
    }
