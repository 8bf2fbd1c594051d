"""Export files that cannot be read, moved aside so that later pulls proceed.

An export snapshot that is not UTF-8, not JSON, nested too deeply or not a list of tasks
(:class:`~ner.errors.ExportFileError`) would fail every pull the same way while it stays
under ``exports/``. :func:`read_export_or_quarantine` reads a file; when the file itself is
unreadable, :func:`quarantine_file` moves it, byte for byte, to ``quarantine/<key>``
(:func:`ner.layout.quarantined`) with a reason record next to it, and the caller goes on with
the other files. Storage failures (:class:`~ner.errors.StorageError`) are transient and
propagate, so the step retries them; a quarantined file is never retried, and a retried step
that asks for it again gets its quarantine record (:func:`quarantined_before`).

The move is copy, then reason record, then delete: a run killed in between leaves the file in
``exports/`` (the next run quarantines it again, under a new name) and never loses it.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ner import layout
from ner.errors import ExportFileError, StorageError
from ner.labelstudio.export import load_export
from ner.storage import Storage

log = logging.getLogger(__name__)


class QuarantinedFile(BaseModel):
    """One file moved aside: where it was, where it is, why (also its reason record)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key: str
    quarantine_key: str
    reason: str
    quarantined_at: str
    size_bytes: int
    sha256: str
    #: When ``forget`` last rewrote the file without forgotten posts; the size and hash
    #: above are then those of the rewritten file, and these of the file as quarantined.
    purged_at: str | None = None
    size_bytes_as_quarantined: int | None = None
    sha256_as_quarantined: str | None = None

    def describe(self) -> str:
        """``"<key> -> <quarantine key>: <reason>"``."""
        return f"{self.key} -> {self.quarantine_key}: {self.reason}"


def _free_key(storage: Storage, key: str) -> str:
    attempt = 1
    while storage.exists(layout.quarantined(key, attempt)):
        attempt += 1
    return layout.quarantined(key, attempt)


def quarantine_file(storage: Storage, key: str, reason: str) -> QuarantinedFile:
    """Move ``key`` to a free ``quarantine/…`` key and write its reason record next to it.

    Returns what was done. Never overwrites an earlier quarantined file of the same name.
    Raises :class:`~ner.errors.StorageError` when storage fails (nothing is deleted then).
    """
    data = storage.read_bytes(key)
    target = _free_key(storage, key)
    record = QuarantinedFile(
        key=key,
        quarantine_key=target,
        reason=reason,
        quarantined_at=datetime.now(UTC).isoformat(timespec="seconds"),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    storage.write_bytes(target, data)
    storage.write_json(layout.quarantine_reason(target), record.model_dump())
    storage.delete(key)
    folder = key.rsplit("/", 1)[0] if "/" in key else layout.EXPORTS
    if folder != layout.EXPORTS:  # a user's folder the move left empty (a trial's mydir/)
        storage.remove_empty_folder(folder)
    log.error("quarantined %s", record.describe())
    return record


def reseal(storage: Storage, quarantine_key: str) -> None:
    """Bring the reason record of ``quarantine_key`` up to date after the file was rewritten
    (``forget`` removed posts from it): its size and SHA-256 become the file's own, the
    first ones are kept as ``*_as_quarantined``. No record (a file put there by hand): no-op.
    """
    reason_key = layout.quarantine_reason(quarantine_key)
    if not storage.exists(reason_key):
        return
    try:
        record = QuarantinedFile.model_validate(storage.read_json(reason_key))
    except ValidationError as exc:
        log.warning(
            "%s is no quarantine record; its size and hash left as they are: %s",
            reason_key,
            exc.errors()[0]["msg"],
        )
        return
    data = storage.read_bytes(quarantine_key)
    resealed = record.model_copy(
        update={
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "purged_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "size_bytes_as_quarantined": record.size_bytes_as_quarantined or record.size_bytes,
            "sha256_as_quarantined": record.sha256_as_quarantined or record.sha256,
        }
    )
    storage.write_json(reason_key, resealed.model_dump())


def quarantined_before(storage: Storage, key: str) -> QuarantinedFile | None:
    """The latest record of ``key``'s move to quarantine, or ``None`` if it never moved."""
    found, attempt = None, 1
    while storage.exists(reason := layout.quarantine_reason(layout.quarantined(key, attempt))):
        record = QuarantinedFile.model_validate(storage.read_json(reason))
        found = record if record.key == key else found  # ``a-2.json`` may be another file
        attempt += 1
    return found


def read_export_or_quarantine(storage: Storage, key: str) -> list[Any] | QuarantinedFile:
    """The tasks of the export file ``key``, or, when the file is unreadable
    (:class:`~ner.errors.ExportFileError`), the record of its move to quarantine.

    A ``key`` that is gone because it was quarantined already (a retried step, a list of
    keys made before) gives that earlier record. Raises :class:`~ner.errors.StorageError`
    when storage fails or ``key`` is missing for another reason.
    """
    try:
        data = storage.read_bytes(key)
    except StorageError:
        earlier = quarantined_before(storage, key)
        if earlier is None:
            raise
        return earlier
    try:
        return load_export(data, key)
    except ExportFileError as exc:
        return quarantine_file(storage, key, exc.reason)


def quarantined_files(storage: Storage) -> list[QuarantinedFile]:
    """Every file in quarantine, from the reason records, in key order."""
    return [
        QuarantinedFile.model_validate(storage.read_json(key))
        for key in storage.list(layout.QUARANTINE)
        if layout.is_quarantine_reason(key)
    ]
