"""Fuzzed Label Studio exports: no unhandled exception, no good record lost (issue 11, item 8).

Each case starts from a real-shaped export (40 tasks of the demo gold export, with post ids
that differ pairwise in at least two characters, so no single flipped byte turns one into
another) and applies one seeded mutation: a flipped byte, a truncation, a wrong type, a lone
surrogate, deep nesting, a wrong encoding, a duplicated key, a foreign item. The file goes
through :func:`load_export` and :func:`parse_export` as the pull reads it. A case passes when

* nothing raises except :class:`ExportFileError` naming the file, and only for mutations that
  can break the file as a whole;
* every task the mutation did not touch comes out parsed, equal to its unmutated parse;
* a touched task is either parsed, listed as unlabelled (its annotation made absent or
  cancelled) or rejected by name (its task id or position);
* every record and every rejection reason can be written as UTF-8 JSON.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ner.errors import ExportFileError
from ner.labelstudio.export import load_export, parse_export
from ner.types import Annotation, Parsed

GOLD = Path(__file__).resolve().parents[2] / "ner" / "resources" / "demo" / "gold_export.json"
LABELS = ("BRAND",)
SOURCE = "exports/fuzz-ls-1.json"
N_CASES = 400
#: Placeholders written in the JSON then replaced in its text (json.dumps cannot write them).
LONE = "@@lone-surrogate@@"
DEEP = "@@deep@@"
JUNK: tuple[Any, ...] = (None, True, False, 1.5, -1, 10**30, "", "x", [1, 2], {}, [[[]]], LONE)


@dataclass(frozen=True)
class Mutant:
    """One mutated export: its bytes, what it did, the positions of the tasks it touched
    (``None``: the whole file), and whether the file as a whole may become unreadable."""

    kind: str
    data: bytes
    touched: frozenset[int] | None
    may_break_file: bool


def _base_tasks() -> list[dict[str, Any]]:
    """40 real tasks (12 with Latin-1 letters), distinct ids, a few annotators by email."""
    gold = json.loads(GOLD.read_text(encoding="utf-8"))
    latin = [t for t in gold if any(0x80 <= ord(c) <= 0xFF for c in t["data"]["text"])]
    tasks = copy.deepcopy(gold[:28] + latin[:12])
    for number, task in enumerate(tasks):
        task["data"]["post_id"] = f"p{number:03d}x{number:03d}"
        if number % 3 == 0:
            task["annotations"][0]["completed_by"] = {"id": number, "email": f"a{number}@x.org"}
    return tasks


def _render(tasks: list[Any], *, lone: str = "\\ud83d", depth: int = 10) -> tuple[str, list[int]]:
    """The export's JSON text and the start offset of each task (then the end)."""
    parts = [json.dumps(task, ensure_ascii=False) for task in tasks]
    parts = [p.replace(LONE, lone).replace(f'"{DEEP}"', "[" * depth + "]" * depth) for p in parts]
    starts, offset = [], 1
    for part in parts:
        starts.append(offset)
        offset += len(part.encode("utf-8")) + 1
    return "[" + ",".join(parts) + "]", [*starts, offset - 1]


def _set(task: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = task
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


FIELDS: tuple[tuple[Any, ...], ...] = (
    ("id",),
    ("data",),
    ("data", "text"),
    ("data", "post_id"),
    ("annotations",),
    ("annotations", 0),
    ("annotations", 0, "result"),
    ("annotations", 0, "completed_by"),
    ("annotations", 0, "updated_at"),
    ("annotations", 0, "was_cancelled"),
    ("annotations", 0, "id"),
)
SPAN_FIELDS = ("start", "end", "text", "labels")
STRING_FIELDS: tuple[tuple[Any, ...], ...] = (
    ("data", "text"),
    ("data", "post_id"),
    ("annotations", 0, "updated_at"),
    ("annotations", 0, "completed_by"),
    ("annotations", 0, "created_at"),
)


def _one_task(rng: random.Random, tasks: list[Any]) -> tuple[int, dict[str, Any]]:
    index = rng.randrange(len(tasks))
    return index, tasks[index]


def _wrong_type(rng: random.Random, tasks: list[Any]) -> Mutant:
    index, task = _one_task(rng, tasks)
    results = task["annotations"][0]["result"]
    if results and rng.random() < 0.4:
        path: tuple[Any, ...] = ("annotations", 0, "result", 0, "value", rng.choice(SPAN_FIELDS))
    else:
        path = rng.choice(FIELDS)
    _set(task, path, rng.choice(JUNK))
    return Mutant("wrong type", _render(tasks)[0].encode(), frozenset({index}), False)


def _surrogate(rng: random.Random, tasks: list[Any]) -> Mutant:
    index, task = _one_task(rng, tasks)
    path = rng.choice(STRING_FIELDS)
    if path == ("annotations", 0, "completed_by") and rng.random() < 0.5:
        path = ("annotations", 0, "completed_by", "email")
        task["annotations"][0]["completed_by"] = {"id": 1, "email": "a@x.org"}
    value: Any = task
    for step in path:
        value = value[step]
    text = str(value)
    cut = rng.randrange(len(text) + 1)
    _set(task, path, text[:cut] + LONE + text[cut:])
    lone = f"\\u{rng.randrange(0xD800, 0xE000):04x}"
    return Mutant(
        "lone surrogate", _render(tasks, lone=lone)[0].encode(), frozenset({index}), False
    )


def _deep(rng: random.Random, tasks: list[Any]) -> Mutant:
    index, task = _one_task(rng, tasks)
    _set(task, rng.choice(FIELDS), DEEP)
    depth = rng.choice((50, 500, 900, 5_000, 100_000))
    return Mutant("deep nesting", _render(tasks, depth=depth)[0].encode(), frozenset({index}), True)


def _byte_flip(rng: random.Random, tasks: list[Any]) -> Mutant:
    text, bounds = _render(tasks)
    data = bytearray(text.encode("utf-8"))
    position = rng.randrange(len(data))
    data[position] ^= rng.randrange(1, 256)
    touched = {i for i in range(len(tasks)) if bounds[i] <= position < bounds[i + 1]}
    return Mutant("byte flip", bytes(data), frozenset(touched), True)


def _truncated(rng: random.Random, tasks: list[Any]) -> Mutant:
    data = _render(tasks)[0].encode("utf-8")
    return Mutant("truncation", data[: rng.randrange(len(data) - 1)], None, True)


def _encoding(rng: random.Random, tasks: list[Any]) -> Mutant:
    text = _render(tasks)[0]
    encoding = rng.choice(("latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32", "utf-8-sig"))
    # the BOM-marked UTF-8 is still UTF-8: every record must come through
    touched: frozenset[int] | None = frozenset() if encoding == "utf-8-sig" else None
    return Mutant(f"encoding {encoding}", text.encode(encoding, "replace"), touched, True)


def _stray_byte(rng: random.Random, tasks: list[Any]) -> Mutant:
    data = _render(tasks)[0].encode("utf-8")
    position = rng.randrange(len(data))
    stray = rng.choice((b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\xbd"))
    return Mutant("stray byte", data[:position] + stray + data[position:], None, True)


def _duplicate_key(rng: random.Random, tasks: list[Any]) -> Mutant:
    """A key given twice: JSON keeps the last one. Junk last touches the task; junk first
    must leave it exactly as it was."""
    index, task = _one_task(rng, tasks)
    key = rng.choice(("text", "post_id"))
    junk = json.dumps(rng.choice(JUNK[:-1]))
    real = f'"{key}": {json.dumps(task["data"][key], ensure_ascii=False)}'
    parts = [json.dumps(t, ensure_ascii=False) for t in tasks]
    junk_last = rng.random() < 0.5
    doubled = f'{real}, "{key}": {junk}' if junk_last else f'"{key}": {junk}, {real}'
    parts[index] = parts[index].replace(real, doubled, 1)
    touched = frozenset({index}) if junk_last else frozenset()
    return Mutant("duplicate key", ("[" + ",".join(parts) + "]").encode(), touched, False)


def _foreign_item(rng: random.Random, tasks: list[Any]) -> Mutant:
    """A non-task item, or a task given twice: no task is touched."""
    item = rng.choice([*JUNK[:-1], {"data": {}}, {"id": 5}]) if rng.random() < 0.7 else None
    if item is None:
        item = copy.deepcopy(rng.choice(tasks))
    tasks.insert(rng.randrange(len(tasks) + 1), item)
    return Mutant("foreign item", _render(tasks)[0].encode(), frozenset(), False)


MUTATIONS: tuple[Callable[[random.Random, list[Any]], Mutant], ...] = (
    _wrong_type,
    _wrong_type,
    _surrogate,
    _surrogate,
    _deep,
    _byte_flip,
    _byte_flip,
    _truncated,
    _encoding,
    _stray_byte,
    _duplicate_key,
    _foreign_item,
)


def _writable(parsed: Parsed) -> None:
    for record in parsed.records:
        json.dumps(record.to_dict(), ensure_ascii=False).encode("utf-8")
    for rejected in parsed.rejected:
        json.dumps(str(rejected), ensure_ascii=False).encode("utf-8")


def _named(parsed: Parsed, task: Any, position: int) -> bool:
    """Whether a rejection names this task (``task <id>:`` or its position in the file)."""
    ident = task.get("id") if isinstance(task, dict) else None
    refs = (f"task {ident}:", f"#{position}:", f"#{position})")
    return any(r.reason.startswith(refs) or refs[2] in r.reason for r in parsed.rejected)


@dataclass
class Tally:
    cases: Counter[str]
    file_errors: Counter[str]
    unhandled: list[str]
    lost: list[str]
    unnamed: list[str]


def _check(mutant: Mutant, tasks: list[Any], baseline: list[Annotation], tally: Tally) -> None:
    """Count one mutant. ``baseline[i]`` is the unmutated parse of task ``i``; ``tasks`` the
    mutated tasks (in the same positions, but for a foreign item, which touches none)."""
    tally.cases[mutant.kind] += 1
    try:
        export = load_export(mutant.data, SOURCE)
        parsed = parse_export(export, labels=LABELS, keep_partial=False)
        _writable(parsed)
    except ExportFileError as exc:
        tally.file_errors[mutant.kind] += 1
        if not mutant.may_break_file or exc.record_id != SOURCE or SOURCE not in str(exc):
            tally.unhandled.append(f"{mutant.kind}: {exc}")
        return
    except Exception as exc:  # what the test counts
        tally.unhandled.append(f"{mutant.kind}: {type(exc).__name__}: {exc}"[:300])
        return
    kept = {a.post_id: a for a in parsed.records}
    unaccounted = []
    for position, expected in enumerate(baseline):
        if mutant.touched is not None and position not in mutant.touched:
            if kept.get(expected.post_id) != expected:
                tally.lost.append(f"{mutant.kind}: good post {expected.post_id} lost or changed")
        elif expected.post_id in parsed.unlabelled:  # its annotation was made absent
            continue
        elif expected.post_id not in kept and not _named(parsed, tasks[position], position):
            unaccounted.append(position)
    # a touched task may be kept under a new post id (its id was the mutated field)
    renamed = len(set(kept) - {a.post_id for a in baseline})
    if len(unaccounted) > renamed:
        tally.unnamed.append(f"{mutant.kind}: tasks {unaccounted} neither kept nor named")


def test_fuzzed_exports_lose_no_good_record_and_raise_nothing_unhandled() -> None:
    # given a real-shaped export that parses whole, and a seeded generator of mutants
    base = _base_tasks()
    baseline_parse = parse_export(base, labels=LABELS, keep_partial=False)
    assert len(baseline_parse.records) == len(base) and not baseline_parse.rejected
    by_post = {a.post_id: a for a in baseline_parse.records}
    baseline = [by_post[task["data"]["post_id"]] for task in base]
    rng = random.Random(11)
    tally = Tally(Counter(), Counter(), [], [], [])
    # when each mutant is read as a pull reads an export file
    for _ in range(N_CASES):
        tasks = copy.deepcopy(base)
        mutant = rng.choice(MUTATIONS)(rng, tasks)
        _check(mutant, tasks, baseline, tally)
    # then nothing escaped, no good record was lost, every touched record is kept or named
    assert tally.unhandled == []
    assert tally.lost == []
    assert tally.unnamed == []
    assert sum(tally.cases.values()) == N_CASES and len(tally.cases) >= 10
    # and the whole-file breakages were recognised as such (each named the file)
    assert tally.file_errors["truncation"] == tally.cases["truncation"] > 0
    assert tally.file_errors["stray byte"] == tally.cases["stray byte"] > 0
    assert tally.file_errors["deep nesting"] > 0
    assert tally.file_errors["lone surrogate"] == 0 == tally.file_errors["wrong type"]
    encodings = {kind for kind in tally.cases if kind.startswith("encoding ")}
    for kind in encodings - {"encoding utf-8-sig"}:  # the base holds Latin-1 letters and emoji
        assert tally.file_errors[kind] == tally.cases[kind] > 0, kind
    assert tally.file_errors["encoding utf-8-sig"] == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            '[{"data": {"text": "é"}}]'.encode("latin-1"),
            "not UTF-8: byte 0xe9 at offset 20; save it as UTF-8",
        ),
        (
            "[]".encode("utf-16"),
            "not UTF-8: it looks UTF-16 (byte 0xff at offset 0); save it as UTF-8",
        ),
        (b"[" * 50_000 + b"]" * 50_000, "JSON nested too deeply to read"),
        (b'[{"id": 1}', "the JSON ends early (Expecting ',' delimiter"),
        (b'[{"id": x}]', "not JSON: Expecting value: line 1 column 9"),
        (b"1" * 5_000, "not JSON: Exceeds the limit"),
        (b'{"tasks": []}', "it holds a JSON object, where an export is a list of tasks"),
        (
            b'[{"id": 1, "text": "Glossier", "post_id": "p1", "label": [{"start": 0, "end": 8, '
            b'"text": "Glossier", "labels": ["BRAND"]}]}]',
            "its records are flat (no 'data' nor 'annotations'): Label Studio's JSON-MIN",
        ),
    ],
    ids=["latin-1", "utf-16", "deep", "truncated", "bad", "long-int", "object", "json-min"],
)
def test_unreadable_export_files_name_the_file(data: bytes, reason: str) -> None:
    # when an unreadable file is loaded
    with pytest.raises(ExportFileError) as caught:
        load_export(data, SOURCE)
    # then the error names the file and says why
    assert caught.value.record_id == SOURCE
    assert caught.value.reason.startswith(reason)
    assert str(caught.value).startswith(f"record {SOURCE!r}: ")


def test_utf8_with_a_byte_order_mark_is_read() -> None:
    task = '[{"id": 1, "data": {}}]'
    assert load_export(task.encode("utf-8-sig"), SOURCE) == [{"id": 1, "data": {}}]
