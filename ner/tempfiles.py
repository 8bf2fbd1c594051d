"""Temporary files of atomic local writes, temporary folders of training, and the ones killed
processes leave behind.

A local write goes to a hidden temporary file next to its target (``.{name}.{random}.tmp``)
and is then renamed over the target. A writer killed in between (SIGKILL, OOM, power loss)
leaves its temporary file behind, and nothing else would ever remove it.

So every writer holds an exclusive ``flock`` on its temporary file from creation until the
rename, and the next writer into the same folder sweeps the folder first
(:func:`sweep_stale_temps`): a temporary file is removed when it is older than
``older_than_s`` (by modification time) **and** nobody holds its lock. The kernel drops the
lock of a dead process, so a killed writer's file is removed by the next write, while a live
writer's file is never touched, however long it has been blocked (an X rate-limit wait, a
slow model). The age guard covers the instant between creating a file and locking it.

Training's temporary folders (the posts handed to the training process, the model it
writes) follow the same rule: :func:`owned_temp_dir` holds a locked file in its folder while
it is in use, and first removes the folders of its prefix whose lock nobody holds, left by a
command ended by a signal (trial AR: an interrupted ``brandloop train`` left 190 MB and the
training posts in ``/tmp``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
#: A temporary file younger than this (seconds since its last write) is never swept.
STALE_AFTER_S = 600.0
#: In a folder of :func:`owned_temp_dir`: the file its owner holds locked while it lives.
OWNER_LOCK = ".owner.lock"
#: A training folder whose lock file is younger than this (seconds) is never swept.
FOLDER_GRACE_S = 30.0


def open_locked_temp(target: Path) -> tuple[BinaryIO, Path]:
    """A new temporary file next to ``target``, open for binary writing and locked.

    Returns ``(handle, path)``. The lock lasts until the handle is closed, so the caller
    renames the file over ``target`` *before* closing it. Its mode is that of a file opened
    plainly (``0o666`` less the umask), not ``mkstemp``'s ``0o600``: the target may be read
    by another user or service (Label Studio's local storage, a container). Raises
    :class:`OSError` when the folder is not writable.
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    handle = os.fdopen(fd, "wb")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        handle.close()
        Path(name).unlink(missing_ok=True)
        raise
    return handle, Path(name)


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` (Linux 4.7+) where it can be,
    which leaves it untouched for other threads; else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _held(path: Path) -> bool:
    """Whether a live process holds the lock of ``path`` (False if the file is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock if we took it
    return False


def sweep_stale_temps(folder: Path, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files that dead writers left in ``folder`` (not recursive).

    A file counts when its name is ``.{…}.tmp``, its last write is more than
    ``older_than_s`` seconds ago, and no process holds its lock. Returns the removed paths;
    each removal is logged. A missing folder is an empty sweep. Files that vanish or cannot
    be removed meanwhile are skipped (another sweeper got there first, or permissions).
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    cutoff = time.time() - older_than_s
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        path = Path(entry.path)
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat().st_mtime > cutoff:
                continue
            if _held(path):
                continue
            path.unlink()
        except OSError as exc:
            log.debug("left temporary file %s: %s", path, exc)
            continue
        log.warning("removed %s, left by an interrupted write", path)
        removed.append(path)
    return removed


@contextmanager
def owned_temp_dir(prefix: str) -> Iterator[Path]:
    """A new folder ``<system temp>/<prefix><random>``, removed on exit as
    :class:`tempfile.TemporaryDirectory` removes it, holding :data:`OWNER_LOCK` locked while
    in use. Folders of the same prefix left by dead processes are removed first
    (:func:`sweep_orphan_dirs`). A child process does not inherit the lock (``subprocess``
    closes descriptors), so only this process keeps its folder alive."""
    sweep_orphan_dirs(prefix)
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as tmp:
        folder = Path(tmp)
        with (folder / OWNER_LOCK).open("wb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield folder


def sweep_orphan_dirs(
    prefix: str, parent: Path | None = None, older_than_s: float = FOLDER_GRACE_S
) -> list[Path]:
    """Remove the folders ``<parent>/<prefix>*`` (default: the system's temporary folder)
    whose :data:`OWNER_LOCK` is older than ``older_than_s`` seconds and held by no process.
    Folders without that file (another program's, or an older release's) are kept. Returns
    the removed folders; each removal is logged."""
    removed: list[Path] = []
    cutoff = time.time() - older_than_s
    for folder in sorted(Path(parent or tempfile.gettempdir()).glob(f"{prefix}*")):
        lock = folder / OWNER_LOCK
        try:
            if lock.stat().st_mtime > cutoff or _held(lock):
                continue
        except OSError:  # not a folder of ours, or removed meanwhile
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():  # another user's, say: not ours to remove
            continue
        log.warning("removed %s, left by an interrupted command", folder)
        removed.append(folder)
    return removed
