"""Leases in storage: one holder at a time per name (a posts batch), across processes and
machines, on a local folder or a GCS bucket.

A lease is a sequence of small JSON objects, one per *epoch*, under
``leases/{name}/{epoch:09d}.json``; the newest epoch says who holds the name. Every change
is the creation of the next epoch with :meth:`Storage.create_exclusive` (an atomic
create-if-absent: ``O_EXCL``-style hard link locally, ``if_generation_match=0`` on GCS), so
of several runs that act on the same epoch exactly one succeeds:

* :func:`acquire` creates epoch 0 of a new name, or the next epoch after one that was
  released or has expired (a holder that died is taken over once ``expires_at`` passes);
* :func:`renew` creates the next epoch for the same holder (a long delivery keeps its lease);
* :func:`release` creates the next epoch marked released;
* :func:`prune` then deletes the epochs before it, and :func:`retire` every epoch of a name
  whose work is done for good (a delivered batch), so leases do not pile up in storage.

Nothing is overwritten while a name is in use, and only epochs older than the newest are
deleted, so a slow run that read an old epoch can never clobber a newer holder: its create
fails because that epoch exists, or, where the epoch was deleted, :func:`acquire` finds it
is not the newest and does not hold it. The epoch is a fencing token: a holder can check
(:func:`holds`) that no one took over before it commits.
Expiry compares wall clocks: keep ``ttl_s`` well above the clock skew between machines and
above the longest pause between renewals.

**A dead holder on this machine is taken over at once.** Each epoch records the holder's host
and process id. On the same host, a lease whose process is gone (a run killed with SIGKILL),
or which this very process acquired and then let go without a successful release (a run that
failed while storage was down), is free without waiting for expiry. Holders on other hosts
are trusted until their lease expires.

Typical use (the check-lock-recheck pattern)::

    lease = acquire(storage, stamp, owner=run_id, ttl_s=3600)
    if lease is None: ...           # another run delivers this batch
    try:
        if not finished(stamp): deliver(stamp)
    finally:
        release(storage, lease)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ner import layout
from ner.errors import ConfigError, ObjectNotFoundError, StorageError
from ner.storage import Storage

log = logging.getLogger(__name__)

LEASES = layout.LEASES
#: Default lease duration (seconds): longer than one apply run.
DEFAULT_TTL_S = 3600.0

Clock = Callable[[], float]

#: Tokens of the leases this process holds (acquired, not yet released or given up).
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def lease_folder(name: str) -> str:
    """Storage folder holding the epochs of lease ``name``."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"invalid lease name {name!r}: one path segment, not hidden")
    return layout.lease_folder(name)


def lease_key(name: str, epoch: int) -> str:
    """Storage key of one epoch of lease ``name``."""
    return layout.lease_epoch(lease_folder(name), epoch)


@dataclass(frozen=True)
class Lease:
    """One epoch of a lease: who holds ``name`` from ``acquired_at`` to ``expires_at``
    (Unix seconds). ``token`` is unique to the acquisition; ``released`` marks the end."""

    name: str
    epoch: int
    owner: str
    token: str
    acquired_at: float
    expires_at: float
    released: bool = False
    host: str = ""
    pid: int = 0

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def free(self, now: float) -> bool:
        """Whether another holder may take the name over at ``now``."""
        return self.released or self.expired(now)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, key: str) -> Lease:
        """Parse a stored epoch; :class:`StorageError` naming ``key`` when malformed."""
        try:
            fields: dict[str, Any] = json.loads(data)
            return cls(
                name=str(fields["name"]),
                epoch=int(fields["epoch"]),
                owner=str(fields["owner"]),
                token=str(fields["token"]),
                acquired_at=float(fields["acquired_at"]),
                expires_at=float(fields["expires_at"]),
                released=bool(fields.get("released", False)),
                host=str(fields.get("host", "")),
                pid=int(fields.get("pid", 0)),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StorageError(f"malformed lease {key}: {exc!r}") from exc


def machine() -> str:
    """This machine as leases name it: the host name, plus the boot id where Linux has one
    (so a process id recorded before a reboot is never mistaken for a live one)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{boot}"


def _holder_dead(lease: Lease) -> bool:
    """Whether ``lease``'s holder is known to be gone (only knowable on the same machine)."""
    if not lease.host or lease.host != machine() or lease.pid <= 0:
        return False
    if lease.pid == os.getpid():
        with _LIVE_LOCK:
            return lease.token not in _LIVE
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def current(storage: Storage, name: str) -> Lease | None:
    """The newest epoch of lease ``name``, or None if it was never acquired (or retired).
    An epoch pruned or retired by another run between the listing and the read is listed
    again; :class:`StorageError` (transient) if that happens every time."""
    for _ in range(_LISTINGS):
        epochs = _epochs(storage, name)
        if not epochs:
            return None
        newest = epochs[max(epochs)]
        try:
            return Lease.from_json(storage.read_bytes(newest), newest)
        except ObjectNotFoundError:
            continue
    raise StorageError(f"lease {name!r} changed under each of {_LISTINGS} reads")


def _token_at(storage: Storage, key: str) -> str | None:
    """The token of epoch ``key``; None when a newer epoch's holder pruned it meanwhile."""
    try:
        return Lease.from_json(storage.read_bytes(key), key).token
    except ObjectNotFoundError:
        return None


#: Listings :func:`current` makes of a lease that other runs keep changing.
_LISTINGS = 5


def _create(storage: Storage, lease: Lease) -> Lease | None:
    """Create ``lease``'s epoch; the lease if this call (or a lost earlier attempt of it,
    recognised by its token) created it, else None.

    An unreleased lease's token counts as live *before* its epoch exists: another thread of
    this process that reads the new epoch in between must not take it for one whose holder
    let go (:func:`_holder_dead`); it is dropped again if the create is lost or fails."""
    key = lease_key(lease.name, lease.epoch)
    with _LIVE_LOCK:
        was_live = lease.token in _LIVE
        if not lease.released:
            _LIVE.add(lease.token)
    won = False
    try:
        created = storage.create_exclusive(key, lease.to_json())
        won = created or _token_at(storage, key) == lease.token
    finally:
        if not won and not was_live:
            with _LIVE_LOCK:
                _LIVE.discard(lease.token)
    return lease if won else None


def acquire(
    storage: Storage,
    name: str,
    owner: str,
    *,
    ttl_s: float = DEFAULT_TTL_S,
    clock: Clock = time.time,
) -> Lease | None:
    """Take lease ``name`` for ``owner`` for ``ttl_s`` seconds.

    Returns the new :class:`Lease`, or None when someone holds it (an unexpired, unreleased
    epoch) or won the race for the next epoch. Raises :class:`ConfigError` for a bad name or
    ``ttl_s``, :class:`StorageError` when storage fails or holds a malformed epoch.
    """
    if ttl_s <= 0:
        raise ConfigError(f"lease ttl_s must be positive, got {ttl_s}")
    now = clock()
    held = current(storage, name)
    if held is not None and not held.free(now) and not _holder_dead(held):
        return None
    epoch = 0 if held is None else held.epoch + 1
    token = uuid.uuid4().hex
    lease = Lease(name, epoch, owner, token, now, now + ttl_s)
    won = _create(storage, replace(lease, host=machine(), pid=os.getpid()))
    if won is not None and not holds(storage, won, clock=clock):
        # a pruned epoch, created again by a run that read the name before newer epochs
        # came (and the older ones went): not the newest, so not held
        with _LIVE_LOCK:
            _LIVE.discard(token)
        return None
    return won


def holds(storage: Storage, lease: Lease, *, clock: Clock = time.time) -> bool:
    """Whether ``lease`` is still the newest epoch of its name, unreleased and unexpired."""
    newest = current(storage, lease.name)
    return (
        newest is not None
        and newest.epoch == lease.epoch
        and newest.token == lease.token
        and not newest.free(clock())
    )


def renew(
    storage: Storage, lease: Lease, *, ttl_s: float = DEFAULT_TTL_S, clock: Clock = time.time
) -> Lease | None:
    """Extend a held lease by ``ttl_s`` from now (as its next epoch, same owner).

    Returns the renewed lease, or None if it was lost (expired and taken over, or released).
    """
    if not holds(storage, lease, clock=clock):
        return None
    now = clock()
    return _create(
        storage, replace(lease, epoch=lease.epoch + 1, acquired_at=now, expires_at=now + ttl_s)
    )


def release(storage: Storage, lease: Lease, *, clock: Clock = time.time) -> bool:
    """Give lease ``name`` back so others need not wait for expiry.

    True if released; False if it had been lost already (nothing to give back). This process
    lets go of it first, so even if the release fails (:class:`StorageError`), the next
    acquisition on this host takes it over at once.
    """
    with _LIVE_LOCK:
        _LIVE.discard(lease.token)
    if not holds(storage, lease, clock=clock):
        return False
    now = clock()
    ended = replace(lease, epoch=lease.epoch + 1, acquired_at=now, expires_at=now, released=True)
    return _create(storage, ended) is not None


def _epochs(storage: Storage, name: str) -> dict[int, str]:
    """Epoch -> key of every stored epoch of lease ``name``."""
    found: dict[int, str] = {}
    for key in storage.list(lease_folder(name)):
        stem = key.rsplit("/", 1)[1].removesuffix(".json")
        if key.count("/") == 2 and key.endswith(".json") and stem.isdigit():
            found[int(stem)] = key
    return found


def prune(storage: Storage, name: str, below: int) -> int:
    """Delete the epochs of lease ``name`` older than epoch ``below`` (the one its holder
    just released, say): the newest epoch alone says who holds a name, and every change
    creates a newer one, so older epochs are history. Returns how many were deleted."""
    old = [key for epoch, key in _epochs(storage, name).items() if epoch < below]
    for key in old:
        storage.delete(key)
    return len(old)


def retire(storage: Storage, name: str) -> int:
    """Delete every epoch of ``name``, whose work is done for good (a delivered batch); a
    run that still acquires it starts again at epoch 0 and finds the work done (a local
    folder of the lease goes too, when empty). Returns how many were deleted."""
    keys = list(_epochs(storage, name).values())
    for key in keys:
        storage.delete(key)
    storage.remove_empty_folder(lease_folder(name))  # a local folder would stay behind (AF)
    return len(keys)


def end(storage: Storage, lease: Lease, *, done: bool = False) -> bool:
    """:func:`release` ``lease``, then delete its older epochs (:func:`prune`), or all of them
    when its work is ``done`` for good (:func:`retire`): two objects per run piled up
    otherwise (trial AE). False when it was lost already. Raises :class:`StorageError`."""
    if not release(storage, lease):
        return False
    if done:
        retire(storage, lease.name)
    else:
        prune(storage, lease.name, below=lease.epoch + 1)
    return True


@contextmanager
def hold(
    storage: Storage,
    name: str,
    owner: str,
    *,
    what: str,
    wait_s: float,
    ttl_s: float = DEFAULT_TTL_S,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[Lease]:
    """Hold lease ``name`` for ``owner`` (``ttl_s``) while the block runs, then :func:`end`
    it (a storage failure then is a warning: the lease expires on its own). While another
    holds it, wait for it, ``wait_s`` seconds at most, calling ``on_wait`` once when the
    wait starts; past that, :class:`StorageError` naming ``what`` (the work the lease
    guards) and where the lease is."""
    deadline, waited = time.monotonic() + wait_s, False
    while (lease := acquire(storage, name, owner, ttl_s=ttl_s)) is None:
        if time.monotonic() > deadline:
            raise StorageError(
                f"another run has held {what} for {wait_s:.0f} s "
                f"({storage.uri(lease_folder(name))})"
            )
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(0.5)
    try:
        yield lease
    finally:
        try:
            end(storage, lease)
        except StorageError as exc:
            log.warning("could not release the lease of %s: %s", what, exc)
