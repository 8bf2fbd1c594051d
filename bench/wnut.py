"""Read the WNUT-17 Emerging Entities corpus (CoNLL) into brand annotations.

For tests and benchmarks only (so it lives in ``bench``, outside the wheel): the product
never needs this corpus, so the path is always passed in. The files hold one
``token<TAB>tag`` a line and a blank line (possibly a lone tab) between posts; tags are
``O``, ``B-type`` or ``I-type`` with the types ``person``, ``location``, ``corporation``,
``product``, ``creative-work`` and ``group``.

The post text is the tokens joined by single spaces, so a span's code-point offsets follow
from the token positions exactly. By default ``corporation`` and ``product`` become
``BRAND`` and every other type is dropped (its tokens are plain text); pass ``types`` to keep
more. An ``I-`` tag that does not continue a span of the same type starts a new span (the
corpus has a few); such posts are counted in :attr:`Parsed.repaired`. A post with a
malformed line or a token containing whitespace is rejected whole, naming the line.

Post ids are ``{prefix}-{n:05d}`` with ``n`` the 1-based position of the post in the file
(rejected posts keep their number), so they are stable for a given file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ner.errors import DataError
from ner.types import Annotation, Parsed, Rejected, Span

log = logging.getLogger(__name__)

BRAND_TYPES: Mapping[str, str] = {"corporation": "BRAND", "product": "BRAND"}
"""WNUT-17 entity types that are brands, and the label they get."""

TRAIN_FILE = "wnut17train.conll"
DEV_FILE = "emerging.dev.conll"

_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class _Block:
    """One post's lines: ``(line number, token, tag)``."""

    number: int
    first_line: int
    rows: tuple[tuple[int, str, str], ...]


def _blocks(path: Path) -> Iterator[_Block | Rejected]:
    rows: list[tuple[int, str, str]] = []
    bad: str | None = None
    first = 0
    number = 0

    def flush() -> _Block | Rejected | None:
        nonlocal number
        if not rows and bad is None:
            return None
        number += 1
        if bad is not None:
            return Rejected(str(number), bad)
        return _Block(number, first, tuple(rows))

    with path.open(encoding="utf-8") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                item = flush()
                if item is not None:
                    yield item
                rows, bad = [], None
                continue
            if not rows and bad is None:
                first = line_no
            parts = line.split("\t")
            if len(parts) != 2:
                bad = bad or f"line {line_no}: expected 'token<TAB>tag', got {line!r}"
                continue
            token, tag = parts
            if not token or _WHITESPACE.search(token):
                bad = bad or f"line {line_no}: token {token!r} is empty or contains whitespace"
                continue
            if tag != "O" and not re.fullmatch(r"[BI]-[A-Za-z-]+", tag):
                bad = bad or f"line {line_no}: unknown tag {tag!r}"
                continue
            rows.append((line_no, token, tag))
    item = flush()
    if item is not None:
        yield item


def _annotation(block: _Block, post_id: str, types: Mapping[str, str]) -> tuple[Annotation, bool]:
    """The block as an annotation, and whether an ``I-`` tag had to start a span."""
    tokens = [token for _, token, _ in block.rows]
    text = " ".join(tokens)
    offsets: list[int] = []
    position = 0
    for token in tokens:
        offsets.append(position)
        position += len(token) + 1
    spans: list[Span] = []
    repaired = False
    current: tuple[int, int, str] | None = None  # (first token, last token, type)

    def close() -> None:
        nonlocal current
        if current is not None and current[2] in types:
            start = offsets[current[0]]
            end = offsets[current[1]] + len(tokens[current[1]])
            spans.append(Span(start, end, types[current[2]], text[start:end]))
        current = None

    for i, (_, _, tag) in enumerate(block.rows):
        if tag == "O":
            close()
            continue
        prefix, kind = tag[0], tag[2:]
        if prefix == "I" and current is not None and current[2] == kind:
            current = (current[0], i, kind)
            continue
        if prefix == "I":
            repaired = True
        close()
        current = (i, i, kind)
    close()
    return Annotation(post_id=post_id, text=text, spans=tuple(spans)), repaired


def read_wnut(
    path: str | Path,
    *,
    types: Mapping[str, str] = BRAND_TYPES,
    id_prefix: str | None = None,
) -> Parsed:
    """Parse a WNUT-17 CoNLL file into :class:`Annotation` records (see the module docstring).

    ``types`` maps WNUT types to our labels (types not in it are not spans). ``id_prefix``
    defaults to the file name without its extension. Raises :class:`DataError` when the file
    does not exist; bad posts are returned in ``rejected`` and the others are kept.
    """
    source = Path(path)
    if not source.is_file():
        raise DataError(str(source), "WNUT-17 file not found (pass the path to the .conll file)")
    prefix = id_prefix if id_prefix is not None else source.name.split(".")[0]
    parsed = Parsed()
    for item in _blocks(source):
        if isinstance(item, Rejected):
            parsed.rejected.append(
                Rejected(f"{prefix}-{int(item.record_id or 0):05d}", item.reason)
            )
            continue
        post_id = f"{prefix}-{item.number:05d}"
        annotation, repaired = _annotation(item, post_id, types)
        parsed.records.append(annotation)
        parsed.repaired += int(repaired)
    for rejected in parsed.rejected[:10]:
        log.warning("WNUT-17 %s: rejected %s", source.name, rejected)
    log.info(
        "read %d posts from %s (%d rejected, %d with a dangling I- tag)",
        len(parsed.records),
        source,
        len(parsed.rejected),
        parsed.repaired,
    )
    return parsed


def load_split(
    data_dir: str | Path, split: str, *, types: Mapping[str, str] = BRAND_TYPES
) -> list[Annotation]:
    """The ``"train"`` or ``"dev"`` split under ``data_dir`` (the ``wnut17`` folder or its
    parent), as annotations with ids ``wnut17-train-…`` / ``wnut17-dev-…``.

    Raises :class:`DataError` when the file is missing or any post in it is malformed (the
    published files have none, so a rejection means a damaged copy).
    """
    files = {"train": TRAIN_FILE, "dev": DEV_FILE}
    if split not in files:
        raise ValueError(f"unknown WNUT-17 split {split!r}: use 'train' or 'dev'")
    folder = Path(data_dir)
    if (folder / "wnut17").is_dir():
        folder = folder / "wnut17"
    parsed = read_wnut(folder / files[split], types=types, id_prefix=f"wnut17-{split}")
    if parsed.rejected:
        first = parsed.rejected[0]
        raise DataError(
            first.record_id, f"{len(parsed.rejected)} malformed post(s); first: {first.reason}"
        )
    return list(parsed.records)
