"""One storage interface over a local folder and a ``gs://bucket/prefix``.

Keys are relative, slash-separated paths inside an environment's root ``{root}/{env}/``;
:mod:`ner.layout` names every one of them.

Writes are atomic: a local write goes to a temporary name in the same folder and is then
renamed; a GCS write is a single upload, so readers never see half a file. Temporary files
that killed writers leave behind are removed by the next write into their folder
(:mod:`ner.tempfiles`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ner.errors import (
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    StorageKeyError,
    StorageNotFoundError,
    connection_reason,
)

if TYPE_CHECKING:
    from ner.settings import Settings
from ner.tempfiles import open_locked_temp, sweep_stale_temps
from ner.uris import local_path

log = logging.getLogger(__name__)
#: Times a local write makes its folder again when :meth:`LocalStorage.remove_empty_folder`
#: keeps taking it away between ``mkdir`` and the temporary file.
_FOLDER_RACES = 5


def json_text(obj: Any, *, indent: int | None = None) -> str:
    """``obj`` as JSON text that UTF-8 can store: characters as they are, unless a string
    holds one UTF-8 cannot encode (a lone surrogate, which ``json.loads`` accepts from a
    ``\\ud83d`` escape); then every non-ASCII character is escaped, as that input was."""
    text = json.dumps(obj, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, indent=indent)
    return text


def _check_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageKeyError(f"invalid storage key {key!r}")
    return key


class Storage(ABC):
    """Blob storage addressed by relative keys."""

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """Full URI of ``key`` (``file://…`` path or ``gs://…``)."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` atomically and return the object's URI."""

    @abstractmethod
    def write_lines(self, key: str, lines: Iterable[str]) -> str:
        """Stream ``lines`` (each without a newline) into ``key`` atomically."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Read the whole object; :class:`StorageError` if it is missing."""

    @abstractmethod
    def iter_lines(self, key: str) -> Iterator[str]:
        """Stream an object's lines without holding it in memory."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""

    @abstractmethod
    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create ``key`` holding ``data`` only if it does not exist, atomically.

        True if this call created it, False if ``key`` already existed (nothing written).
        Of several writers racing for one key, exactly one gets True.
        """

    @abstractmethod
    def remove_empty_folder(self, prefix: str) -> None:
        """Remove folder ``prefix`` when nothing is left in it (a local folder; an object
        store has no folders)."""

    # Conveniences built on the primitives ------------------------------------------------
    def write_text(self, key: str, text: str) -> str:
        return self.write_bytes(key, text.encode("utf-8"))

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_json(self, key: str, obj: Any) -> str:
        return self.write_text(key, json_text(obj, indent=1))

    def read_json(self, key: str) -> Any:
        try:
            return json.loads(self.read_text(key))
        except json.JSONDecodeError as exc:
            raise StorageError(f"{self.uri(key)} is not valid JSON: {exc}") from exc


class LocalStorage(Storage):
    """A folder on local disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def uri(self, key: str = "") -> str:
        return (self.root / key.strip("/")).as_uri() if key else self.root.as_uri()

    def _temp_beside(self, path: Path) -> tuple[BinaryIO, Path]:
        """A locked temporary file in ``path``'s folder, created if need be. The folder is
        made again when :meth:`remove_empty_folder` took it between the two steps (once the
        temporary file is in it, the folder is not empty and stays)."""
        attempts = 0
        while True:
            path.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale_temps(path.parent)
            try:
                return open_locked_temp(path)
            except FileNotFoundError:
                attempts += 1
                if attempts >= _FOLDER_RACES:
                    raise

    def _atomic(self, key: str, write: Any) -> str:
        path = self._path(key)
        handle, tmp = self._temp_beside(path)
        try:
            with handle:  # locked until closed, so renamed before
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.uri(key)

    def write_bytes(self, key: str, data: bytes) -> str:
        return self._atomic(key, lambda handle: handle.write(data))

    def write_lines(self, key: str, lines: Iterable[str]) -> str:
        def write(handle: Any) -> None:
            for line in lines:
                handle.write(line.encode("utf-8") + b"\n")

        return self._atomic(key, write)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{self.uri(key)} does not exist") from exc

    def iter_lines(self, key: str) -> Iterator[str]:
        path = self._path(key)
        if not path.exists():
            raise ObjectNotFoundError(f"{self.uri(key)} does not exist")
        with path.open("r", encoding="utf-8", newline="\n") as handle:
            for line in handle:
                yield line.rstrip("\n")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def remove_empty_folder(self, prefix: str) -> None:
        """``rmdir``: refused by the OS (and left) when anything is in the folder, a
        writer's temporary file included, or when it is gone already."""
        with contextlib.suppress(OSError):  # not empty, or gone: both leave it as it should be
            self._path(prefix.strip("/")).rmdir()

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write ``data`` to a temporary file, then hard-link it to ``key``: ``link`` fails
        when the name exists, so the object appears whole, once, or not at all."""
        path = self._path(key)
        handle, tmp = self._temp_beside(path)
        try:
            with handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True


def create_bucket_hint(bucket: str) -> str:
    """How to create a missing bucket: with gcloud; on a local emulator with the JSON API's
    bucket insert (``POST /storage/v1/b``, which the emulator answers), or with the bootstrap
    where a Prefect API runs (it reads ``BRANDLOOP_<ENV>_STORAGE_URI``, not
    ``NER_STORAGE_URI``)."""
    return (
        f"create it (gcloud storage buckets create gs://{bucket}; on a local emulator, "
        "curl -X POST $STORAGE_EMULATOR_HOST/storage/v1/b -H 'Content-Type: application/json' "
        f"""-d '{{"name": "{bucket}"}}', or with a Prefect API, """
        f"BRANDLOOP_<ENV>_STORAGE_URI=gs://{bucket} brandloop deploy --env <env> "
        "--create-bucket --no-deploy)"
    )


class GCSStorage(Storage):
    """``gs://bucket/prefix`` through google-cloud-storage.

    With ``STORAGE_EMULATOR_HOST`` set, the client talks to that emulator with anonymous
    credentials; otherwise it uses Application Default Credentials. ``timeout_s`` bounds
    each call, google-cloud-storage's own retries of transient errors included (its default
    is 120 s); after that the call fails with :class:`StorageError`.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._bucket: Any | None = None
        self.timeout_s = timeout_s
        self._opts: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the client: a copy sent to another process (a prediction worker)
        opens its own, as an HTTP connection pool must not be shared between processes."""
        return {**self.__dict__, "_client": None, "_bucket": None, "_opts": None}

    @property
    def opts(self) -> dict[str, Any]:
        """``retry`` and ``timeout`` arguments for every call (empty: the library's own)."""
        if self._opts is None:
            self._opts = {}
            if self.timeout_s is not None:
                from google.cloud.storage.retry import DEFAULT_RETRY

                self._opts = {
                    "retry": DEFAULT_RETRY.with_timeout(self.timeout_s),
                    "timeout": min(60.0, self.timeout_s),
                }
        return self._opts

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            client = self._client if self._client is not None else make_gcs_client()
            self._bucket = client.bucket(self.bucket_name)
        return self._bucket

    def _name(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str = "") -> str:
        path = "/".join(p for p in (self.prefix, key.strip("/")) if p)
        return f"gs://{self.bucket_name}/{path}"

    def _wrap(self, action: str, key: str, exc: Exception) -> StorageError:
        """Our error for a failed call: :class:`StorageNotFoundError` when the bucket is
        missing (a 404 where no object is read), :class:`StorageAuthError` for missing or
        refused credentials (both permanent), else :class:`StorageError`."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError

        where = f"GCS {action} {self.uri(key)} failed"
        if isinstance(exc, gexc.NotFound):
            return StorageNotFoundError(
                f"{where}: bucket {self.bucket_name!r} does not exist; "
                f"{create_bucket_hint(self.bucket_name)} ({exc})"
            )
        if isinstance(exc, gexc.Unauthorized | gexc.Forbidden | GoogleAuthError):
            return StorageAuthError(f"{where}: {_auth_hint(exc)}")
        if isinstance(exc, gexc.RetryError) and isinstance(exc.cause, gexc.GoogleAPIError):
            return StorageError(f"{where}: {exc}")  # it answered, with errors: say which
        if isinstance(exc, gexc.RetryError | ConnectionError) or "Max retries" in str(exc):
            return StorageError(f"{where}: {self._unreachable(exc)}")
        return StorageError(f"{where}: {exc}")

    def _unreachable(self, exc: Exception) -> str:
        """One phrase for a GCS endpoint that did not answer (a trial read 300 characters of
        urllib3's chain after 115 s): which endpoint, why, and the setting bounding the wait."""
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        where = f"the emulator at STORAGE_EMULATOR_HOST={emulator}" if emulator else "GCS"
        waited = f" within {self.timeout_s:g} s" if self.timeout_s is not None else ""
        return (
            f"{where} did not answer{waited} ({connection_reason(str(exc))}); is it running? "
            "NER_GCS_TIMEOUT_S bounds the wait, retries included"
        )

    def write_bytes(self, key: str, data: bytes) -> str:

        try:
            self.bucket.blob(self._name(key)).upload_from_string(data, **self.opts)
        except _gcs_failures() as exc:
            raise self._wrap("upload of", key, exc) from exc
        return self.uri(key)

    def write_lines(self, key: str, lines: Iterable[str]) -> str:

        # Spool to a local temp file, then one upload: the object appears whole or not at all.
        with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as spool:
            for line in lines:
                spool.write(line.encode("utf-8") + b"\n")
            spool.flush()
            try:
                self.bucket.blob(self._name(key)).upload_from_filename(spool.name, **self.opts)
            except _gcs_failures() as exc:
                raise self._wrap("upload of", key, exc) from exc
        return self.uri(key)

    def read_bytes(self, key: str) -> bytes:
        from google.api_core import exceptions as gexc

        try:
            data: bytes = self.bucket.blob(self._name(key)).download_as_bytes(**self.opts)
        except gexc.NotFound as exc:
            raise ObjectNotFoundError(f"{self.uri(key)} does not exist") from exc
        except _gcs_failures() as exc:
            raise self._wrap("download of", key, exc) from exc
        return data

    def iter_lines(self, key: str) -> Iterator[str]:
        from google.api_core import exceptions as gexc

        # Download to a temp file so memory stays flat however large the object is.
        with tempfile.TemporaryFile("w+b") as spool:
            try:
                self.bucket.blob(self._name(key)).download_to_file(spool, **self.opts)
            except gexc.NotFound as exc:
                raise ObjectNotFoundError(f"{self.uri(key)} does not exist") from exc
            except _gcs_failures() as exc:
                raise self._wrap("download of", key, exc) from exc
            spool.seek(0)
            for raw in spool:
                yield raw.decode("utf-8").rstrip("\n")

    def exists(self, key: str) -> bool:

        try:
            return bool(self.bucket.blob(self._name(key)).exists(**self.opts))
        except _gcs_failures() as exc:
            raise self._wrap("lookup of", key, exc) from exc

    def list(self, prefix: str = "") -> list[str]:

        full = self._name(prefix) if prefix.strip("/") else self.prefix
        if full:
            full = full.rstrip("/") + "/"
        try:
            blobs = self.bucket.client.list_blobs(self.bucket, prefix=full, **self.opts)
            names = [b.name for b in blobs]
        except _gcs_failures() as exc:
            raise self._wrap("listing of", prefix, exc) from exc
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(name[cut:] for name in names)

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.bucket.blob(self._name(key)).delete(**self.opts)
        except gexc.NotFound:
            return
        except _gcs_failures() as exc:
            raise self._wrap("delete of", key, exc) from exc

    def remove_empty_folder(self, prefix: str) -> None:
        """Nothing: a bucket has no folders, only names with slashes."""

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """One upload with ``if_generation_match=0``: GCS refuses it (412) if the object exists.

        If a retried upload's first attempt had in fact succeeded, the retry is refused too:
        a caller that must tell "mine" from "someone else's" puts a token in ``data``.
        """
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self._name(key))
        try:
            blob.upload_from_string(data, if_generation_match=0, **self.opts)
        except gexc.PreconditionFailed:
            return False
        except _gcs_failures() as exc:
            raise self._wrap("exclusive create of", key, exc) from exc
        return True


def _gcs_failures() -> tuple[type[Exception], ...]:
    """What a google-cloud-storage call raises when it fails: API errors, credential errors
    (no Application Default Credentials, a token that cannot be refreshed), socket errors."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    return (GoogleAPIError, GoogleAuthError, OSError)


def _auth_hint(exc: Exception) -> str:
    """The credential problem of ``exc`` and the ways to give credentials."""
    return (  # the ways first: a long cause would push them past a shortened line
        "credentials missing or refused: for a local emulator, set STORAGE_EMULATOR_HOST in "
        "the process that runs the flow (the worker); else give Application Default "
        "Credentials (GOOGLE_APPLICATION_CREDENTIALS=<service account key>, or gcloud auth "
        f"application-default login) with access to the bucket (google-auth said: {exc})"
    )


def make_gcs_client(project: str | None = None) -> Any:
    """A google-cloud-storage client; anonymous when an emulator is configured."""
    from google.cloud import storage as gcs

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return gcs.Client(project=project or "brandloop", credentials=AnonymousCredentials())
    return gcs.Client(project=project)


def open_storage(
    uri: str, env: str, client: Any | None = None, *, gcs_timeout_s: float | None = None
) -> Storage:
    """Storage rooted at ``{uri}/{env}``: a local folder, ``file://`` URI or ``gs://`` URI.

    ``gcs_timeout_s`` bounds each GCS call (see :class:`GCSStorage`).
    """
    if uri.startswith("gs://"):
        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        if not bucket:
            raise StorageError(f"no bucket in storage URI {uri!r}")
        prefix = "/".join(p for p in (prefix.strip("/"), env) if p)
        return GCSStorage(bucket, prefix, client, timeout_s=gcs_timeout_s)
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"unsupported storage URI {uri!r}: use a folder, file:// or gs://")
    return LocalStorage(local_path(uri) / env)


def env_storage(settings: Settings) -> Storage:
    """:func:`open_storage` of the settings' ``storage_uri`` and ``env``, each GCS call
    bounded by ``gcs_timeout_s``."""
    return open_storage(settings.storage_uri, settings.env, gcs_timeout_s=settings.gcs_timeout_s)
