"""Local paths given as URIs: a path, or a ``file:`` URI read as RFC 8089 says. Shared by the
settings' check of ``storage_uri``, :func:`ner.storage.open_storage` (so neither imports the
other) and the JSONL inputs of :mod:`ner.sources`."""

from __future__ import annotations

from pathlib import Path

from ner.errors import StorageError


def local_path(uri: str) -> Path:
    """The local path a URI names (a storage folder, an input file): a path, or a ``file:``
    URI (RFC 8089:
    ``file:///abs/path``, ``file://localhost/abs/path``, ``file:/abs/path``; percent-escapes
    decoded). Raises :class:`StorageError` for a ``file:`` URI with another host (often
    ``file://tmp/x``, two slashes for three), a relative path, a query or a fragment (a
    trial's were read as folders named ``localhost/…`` or ``x?y=1``)."""
    if not uri.startswith("file:"):
        return Path(uri)
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise StorageError(
            f"{uri!r} names the host {parts.netloc!r}: a file URI takes three slashes before "
            f"an absolute path (file:///{parts.netloc}{parts.path})"
        )
    if parts.query or parts.fragment or not parts.path.startswith("/"):
        raise StorageError(
            f"{uri!r} is not a file URI of a local path: give file:///absolute/path, with "
            "no '?' or '#' part, or a plain path"
        )
    return Path(unquote(parts.path))
