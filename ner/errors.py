"""The exceptions brandloop raises.

One small hierarchy so callers can catch what they can handle. SDK exceptions are wrapped at
the boundary with ``raise ... from exc`` so the original traceback is kept.
"""

from __future__ import annotations

import errno
import re

#: ``OSError`` numbers another attempt cannot fix: a read-only file system (a trial's storage
#: folder was retried 3 times over 18 s), no permission, a path through a file or to a folder,
#: a name too long. The flows do not retry them; the command line says so.
PERMANENT_ERRNOS = frozenset(
    {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}
)


class BrandloopError(Exception):
    """Base class of every error raised by brandloop."""


class ConfigError(BrandloopError):
    """A setting is missing or invalid. The message names the environment variable."""


class StorageError(BrandloopError):
    """Reading or writing the storage backend (local folder or GCS bucket) failed."""


class SourceError(BrandloopError):
    """Fetching posts from a source failed."""


class SourceAuthError(SourceError):
    """The source rejected our credentials (for example X API 401/403)."""


class NotFoundError(BrandloopError):
    """Something a setting or parameter names does not exist (an input file, a model
    version or alias): another attempt cannot find it either."""


class StorageNotFoundError(StorageError, NotFoundError):
    """The bucket of a ``gs://`` storage does not exist: another attempt cannot find it."""


class StorageKeyError(StorageError, ConfigError):
    """A storage key that can name no object (empty, ``.`` or ``..`` parts): a bad parameter,
    which no retry mends."""


class ObjectNotFoundError(StorageError, NotFoundError):
    """A key read from storage holds no object (a file moved or deleted by hand): another
    attempt cannot find it either, so it is not retried."""


class StorageAuthError(StorageError):
    """The storage has no credentials, or refused them (401/403). Permanent."""


class InputNotFoundError(SourceError, NotFoundError):
    """A JSONL input is neither a local file nor a storage key."""


class DataError(BrandloopError):
    """A record is malformed. ``record_id`` and ``reason`` say which and why."""

    def __init__(self, record_id: str | None, reason: str) -> None:
        self.record_id = record_id
        self.reason = reason
        where = f"record {record_id!r}" if record_id is not None else "record"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str | None, str]]:
        """Pickle by ``(record_id, reason)``, so the error raised in a worker process
        (:mod:`ner.parallel`) arrives whole in the parent, subclass included."""
        return (type(self), (self.record_id, self.reason))


class OffsetError(DataError):
    """A span's offsets do not match its text and could not be repaired."""


class ExportFileError(DataError):
    """A whole export file cannot be read (not UTF-8, not JSON, nested too deeply, not a
    list of tasks). ``record_id`` is the file's storage key. Permanent: the file is moved
    to quarantine (:mod:`ner.labelstudio.quarantine`), never retried."""


class GoldSetError(BrandloopError):
    """A stored gold set is missing, inconsistent, or cannot be frozen yet."""


class NoGoldSetError(GoldSetError, NotFoundError):
    """No gold set is frozen in the storage a command needs one in (the message says how one
    is frozen)."""


class LabelStudioError(BrandloopError):
    """The Label Studio API failed or answered something we cannot use."""


class LabelStudioAuthError(LabelStudioError):
    """Label Studio refused the API key (401/403): another attempt cannot succeed."""


class ProjectNotFoundError(LabelStudioError, NotFoundError):
    """No Label Studio project has the title a read asked for (never created on a read)."""


class ModelError(BrandloopError):
    """A model could not be loaded, built or used."""


class BrandListError(ModelError, ConfigError):
    """A team's brand list (``NER_BRAND_LIST``, ``NER_BRAND_LIST_EXACT_CASE``) cannot be
    used: unreadable, empty, or a name in both files. A setting to fix: permanent."""


class OptionalInstallError(ModelError, ConfigError):
    """A setting chose a part whose optional install is missing (the accurate recipe
    without ``make install-accurate``). Permanent: no retry can install it."""


class ModelNotFoundError(ModelError, NotFoundError):
    """The model spec names no model: an unknown name, version or alias."""


class NotPromotedYetError(ModelNotFoundError):
    """No version has the alias yet: none was ever promoted to ``@champion`` (or the
    environment's model was not registered yet). A server following the alias can wait."""


class TrainingError(BrandloopError):
    """Training a challenger failed."""


class TrainingDataError(TrainingError):
    """The training posts cannot train a model: too few, none usable once aligned to tokens,
    or a label map that does not fit the labels. The same posts fail the same way again, so
    it is permanent."""


class RegistryError(BrandloopError):
    """Talking to the MLflow tracking server or model registry failed."""


class PromotionError(RegistryError):
    """An alias move was refused (for example a model that was never evaluated)."""


_UNREACHABLE = re.compile(r"API request to (?P<url>https?://[^/\s]+)\S* failed with exception")
_ERRNO = re.compile(r"\[Errno -?\d+\] (?P<why>[^'\")]+)")


def mlflow_reason(exc: BaseException) -> str:
    """``str(exc)``, without the SQL statement of a database error (SQLAlchemy appends it
    on lines of its own), and, when MLflow's client could not reach its server, one short
    phrase, ``"MLflow at http://host:port did not answer (Connection refused)"``, instead of
    the SDK's urllib3 chain (``HTTPConnectionPool(...): Max retries exceeded with url: ...``,
    the form of ``mlflow.utils.rest_utils``' message in MLflow 3)."""
    text = str(exc)
    if "\n[SQL:" in text:  # SQLAlchemy's: the statement and parameters follow (trial AO)
        return text.partition("\n[SQL:")[0].strip()
    found = _UNREACHABLE.search(text)
    if found is None or not ("Max retries" in text or "timed out" in text):
        return text
    return f"MLflow at {found['url']} did not answer ({connection_reason(text)})"


def connection_reason(text: str) -> str:
    """Why a connection failed, from an HTTP client's message: the socket error
    (``"Connection refused"``), ``"timed out"``, else ``"no reply"``."""
    errno = _ERRNO.search(text)
    return errno["why"].strip() if errno else "timed out" if "timed out" in text else "no reply"
