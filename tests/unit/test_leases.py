"""Exclusive creates on the local folder, and leases built on them (issue 11, item 5).

Races run in real processes (forked), all released at once by a barrier. The same behaviour
on a GCS server that honours preconditions: tests/integration/test_gcs_storage.py.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ner import leases
from ner.errors import ConfigError, StorageError
from ner.leases import Lease, acquire, current, holds, machine, release, renew
from ner.storage import LocalStorage, Storage

RACERS = 8


class Clock:
    """A settable clock (Unix seconds)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store" / "dev")


# ------------------------------------------------------------------ racing processes
_barrier: Any = None


def _init(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


def _race_create(root: str, racer: int) -> bool:
    _barrier.wait()
    return LocalStorage(root).create_exclusive("leases/x/race.json", f"racer {racer}".encode())


def _race_acquire(root: str, racer: int) -> int | None:
    _barrier.wait()
    lease = acquire(LocalStorage(root), "batch-1", owner=f"run-{racer}", ttl_s=60)
    return None if lease is None else lease.epoch


def race(function: Any, root: Path) -> list[Any]:
    """Run ``function(root, racer)`` in RACERS processes released together."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(RACERS)
    with ProcessPoolExecutor(
        RACERS, mp_context=context, initializer=_init, initargs=(barrier,)
    ) as pool:
        return list(pool.map(function, [str(root)] * RACERS, range(RACERS)))


def test_exactly_one_of_racing_processes_creates_a_key(storage: LocalStorage) -> None:
    # When eight processes create the same key at the same instant
    wins = race(_race_create, storage.root)
    # Then exactly one succeeded, its content is whole, and no temporary file is left
    assert wins.count(True) == 1
    assert storage.read_text("leases/x/race.json") == f"racer {wins.index(True)}"
    assert list((storage.root / "leases" / "x").iterdir()) == [storage.root / "leases/x/race.json"]
    # And a later create is refused without touching it
    assert not storage.create_exclusive("leases/x/race.json", b"late")
    assert storage.read_text("leases/x/race.json") == f"racer {wins.index(True)}"


def test_exactly_one_of_racing_processes_acquires_a_lease(storage: LocalStorage) -> None:
    # When eight runs acquire the same batch's lease at once, twice in a row (the second time
    # over a released epoch, so they race for epoch 2)
    first = race(_race_acquire, storage.root)
    assert [e for e in first if e is not None] == [0]
    held = current(storage, "batch-1")
    assert held is not None and release(storage, held)
    second = race(_race_acquire, storage.root)
    # Then each time exactly one got it
    assert [e for e in second if e is not None] == [2]


# ------------------------------------------------------------------ lease life cycle
def test_a_held_lease_is_refused_until_released(storage: LocalStorage) -> None:
    clock = Clock()
    lease = acquire(storage, "20261129T2100", "run-a", ttl_s=60, clock=clock)
    assert lease is not None and (lease.epoch, lease.owner) == (0, "run-a")
    assert lease.expires_at == clock.now + 60
    # Another run is refused while it is held, even at the last second
    clock.now += 59
    assert acquire(storage, "20261129T2100", "run-b", ttl_s=60, clock=clock) is None
    assert holds(storage, lease, clock=clock)
    # Released, it goes to the next run at once, as a new epoch
    assert release(storage, lease, clock=clock)
    assert not holds(storage, lease, clock=clock)
    taken = acquire(storage, "20261129T2100", "run-b", ttl_s=60, clock=clock)
    assert taken is not None and (taken.epoch, taken.owner) == (2, "run-b")
    # And releasing twice, or what another run now holds, does nothing
    assert not release(storage, lease, clock=clock)
    assert holds(storage, taken, clock=clock)


def test_a_dead_holders_lease_is_taken_over_after_expiry(storage: LocalStorage) -> None:
    clock = Clock()
    dead = acquire(storage, "b", "crashed-run", ttl_s=30, clock=clock)
    assert dead is not None
    clock.now += 30
    taken = acquire(storage, "b", "next-run", ttl_s=30, clock=clock)
    assert taken is not None and (taken.epoch, taken.owner) == (1, "next-run")
    # The old holder, back from a pause, finds it lost: no renew, no release
    assert not holds(storage, dead, clock=clock)
    assert renew(storage, dead, clock=clock) is None
    assert not release(storage, dead, clock=clock)
    assert current(storage, "b") == taken


def test_a_slow_run_that_saw_a_stale_epoch_cannot_clobber_the_new_holder(
    storage: LocalStorage,
) -> None:
    # Given a stale epoch 0, taken over by run B as epoch 1
    clock = Clock()
    assert acquire(storage, "b", "dead", ttl_s=10, clock=clock) is not None
    clock.now += 11
    stale = current(storage, "b")
    b = acquire(storage, "b", "run-b", ttl_s=10, clock=clock)
    assert stale is not None and b is not None and b.epoch == 1
    # When run C, which read epoch 0 before B's takeover, tries to create epoch 1 itself
    late = Lease("b", stale.epoch + 1, "run-c", "c-token", clock.now, clock.now + 10)
    assert leases._create(storage, late) is None
    # Then B still holds it
    assert holds(storage, b, clock=clock) and current(storage, "b") == b


def test_renewal_keeps_a_long_delivery_safe(storage: LocalStorage) -> None:
    clock = Clock()
    lease = acquire(storage, "b", "run-a", ttl_s=60, clock=clock)
    assert lease is not None
    clock.now += 50
    renewed = renew(storage, lease, ttl_s=60, clock=clock)
    assert renewed is not None and renewed.epoch == 1 and renewed.expires_at == clock.now + 60
    clock.now += 50  # past the first expiry, within the renewed one
    assert acquire(storage, "b", "run-b", ttl_s=60, clock=clock) is None
    assert holds(storage, renewed, clock=clock) and not holds(storage, lease, clock=clock)


class LostResponse(LocalStorage):
    """Creates the object but answers False, as GCS does when a retried upload's first
    attempt had succeeded (the retry meets its own object: 412)."""

    def create_exclusive(self, key: str, data: bytes) -> bool:
        super().create_exclusive(key, data)
        return False


def test_an_acquisition_whose_answer_was_lost_is_recognised_by_its_token(
    tmp_path: Path,
) -> None:
    storage = LostResponse(tmp_path / "s")
    lease = acquire(storage, "b", "run-a")
    assert lease is not None and current(storage, "b") == lease
    # And someone else's epoch is still refused
    assert acquire(storage, "b", "run-b") is None


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_bad_names_and_durations_are_config_errors(storage: Storage, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid lease name"):
        acquire(storage, name, "run")
    with pytest.raises(ConfigError, match="ttl_s must be positive"):
        acquire(storage, "ok", "run", ttl_s=0)


def test_a_malformed_epoch_is_a_storage_error_naming_it(storage: LocalStorage) -> None:
    storage.write_text("leases/b/000000000.json", '{"name": "b", "epoch": "zero"}')
    with pytest.raises(StorageError, match=r"malformed lease leases/b/000000000\.json"):
        acquire(storage, "b", "run")
    # And files that are not epochs are ignored
    storage.write_text("leases/c/notes.txt", "x")
    assert current(storage, "c") is None


# ------------------------------------------------------------------ dead holders on this machine
HOLD_AND_DIE = """
import sys
from ner.leases import acquire
from ner.storage import LocalStorage

lease = acquire(LocalStorage(sys.argv[1]), "b", "doomed-run", ttl_s=3600)
print(lease.pid if lease else 0)
"""


def test_a_lease_whose_process_died_is_taken_over_at_once(storage: LocalStorage) -> None:
    # Given a run on this machine that took the lease for an hour and died without releasing
    died = subprocess.run(
        [sys.executable, "-c", HOLD_AND_DIE, str(storage.root)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    held = current(storage, "b")
    assert held is not None and str(held.pid) == died.stdout.strip()
    assert (held.host, held.released) == (machine(), False)
    # When the next run asks, long before the hour is over, then it gets it
    taken = acquire(storage, "b", "next-run")
    assert taken is not None and taken.epoch == 1


class FailingCreate(LocalStorage):
    """Storage that went down: every exclusive create fails."""

    def create_exclusive(self, key: str, data: bytes) -> bool:
        raise StorageError(f"{self.uri(key)}: bucket unreachable")


def test_a_lease_this_process_gave_up_on_is_taken_over_at_once(
    storage: LocalStorage,
) -> None:
    # Given a run of this process that failed and could not release (storage down)
    lease = acquire(storage, "b", "failed-run")
    assert lease is not None
    with pytest.raises(StorageError, match="bucket unreachable"):
        release(FailingCreate(storage.root), lease)
    # When the next run of the same process asks, then it gets the lease at once
    again = acquire(storage, "b", "rerun")
    assert again is not None and again.epoch == 1
    # While a lease this process still holds is refused
    assert acquire(storage, "b", "third-run") is None


@pytest.mark.parametrize(
    ("host", "pid"),
    [("another-machine/boot", 999_999_999), (None, 1)],
    ids=["other-machine", "live-process-here"],
)
def test_holders_alive_or_elsewhere_are_trusted_until_expiry(
    storage: LocalStorage, host: str | None, pid: int
) -> None:
    # Given an unexpired lease held by a process elsewhere, or by a live process here (pid 1)
    clock = Clock()
    theirs = Lease(
        "b", 0, "their-run", "t", clock.now, clock.now + 60, host=host or machine(), pid=pid
    )
    assert storage.create_exclusive("leases/b/000000000.json", theirs.to_json())
    # Then it is refused until it expires
    assert acquire(storage, "b", "run", clock=clock) is None
    clock.now += 60
    taken = acquire(storage, "b", "run", clock=clock)
    assert taken is not None and (taken.epoch, taken.owner) == (1, "run")


def test_a_thread_of_this_process_never_takes_a_lease_being_created(
    storage: LocalStorage,
) -> None:
    # Given a storage that lets another thread of this process try to acquire the name in
    # the instant after a racer's epoch 0 exists (the window a CI run on GCS hit once)
    clock = Clock()
    seen: list[Lease | None] = []

    class Interleaved(LocalStorage):
        def create_exclusive(self, key: str, data: bytes) -> bool:
            created = super().create_exclusive(key, data)
            if not seen:
                seen.append(None)  # once: the other thread's own create does not recurse
                seen[0] = acquire(self, "b1", "run-b", ttl_s=60, clock=clock)
            return created

    racing = Interleaved(storage.root)
    # When the first racer acquires the name
    first = acquire(racing, "b1", "run-a", ttl_s=60, clock=clock)
    # Then it holds epoch 0 and the other thread was refused, not handed epoch 1
    assert first is not None and first.epoch == 0
    assert seen == [None]
    assert current(storage, "b1") == first


def test_released_epochs_are_pruned_and_a_done_name_retired(storage: LocalStorage) -> None:
    from ner.leases import prune, retire

    # Given a lease taken and released three times (two objects a run piled up: trial AE)
    for run in range(3):
        lease = acquire(storage, "import", owner=f"run-{run}", ttl_s=60)
        assert lease is not None and release(storage, lease)
    assert len(storage.list("leases/import")) == 6
    # When the epochs before the last release are pruned
    assert prune(storage, "import", below=5) == 5
    # Then the newest alone is left, and the name goes on from it
    assert storage.list("leases/import") == ["leases/import/000000005.json"]
    again = acquire(storage, "import", owner="run-3", ttl_s=60)
    assert again is not None and again.epoch == 6
    # And a name whose work is done is deleted whole
    assert retire(storage, "import") == 2 and storage.list("leases/import") == []
    # with its folder, which stayed behind empty on a local storage (trial AF)
    assert not (storage.root / "leases" / "import").exists()


def test_a_slow_run_that_recreates_a_pruned_epoch_does_not_hold_the_lease(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner.leases import prune

    # Given run A read epoch 1 (a release) as the newest, then stalled
    first = acquire(storage, "b", owner="run-0", ttl_s=60)
    assert first is not None and release(storage, first)
    seen = current(storage, "b")
    # While B acquired epoch 2, released it at 3, and pruned epochs 0-2
    b = acquire(storage, "b", owner="run-b", ttl_s=60)
    assert b is not None and b.epoch == 2 and release(storage, b)
    assert prune(storage, "b", below=3) == 3
    # When A goes on and creates the epoch after the one it read (deleted by then)
    reads = iter([seen])  # A's first read is the stale one; later reads are real
    monkeypatch.setattr(leases, "current", lambda s, n: next(reads, None) or current(s, n))
    late = acquire(storage, "b", owner="run-a", ttl_s=60)
    # Then A does not hold it: its epoch 2 is not the newest, epoch 3 is
    monkeypatch.undo()
    newest = current(storage, "b")
    assert late is None and newest is not None and newest.epoch == 3
    assert storage.exists("leases/b/000000002.json")  # created again, then found stale


def test_a_write_makes_its_folder_again_when_an_empty_folder_is_removed_meanwhile(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner import storage as storage_module

    real = storage_module.open_locked_temp
    folder = storage.root / "leases" / "b"
    taken = []

    def removed_first(path: Path) -> Any:
        if not taken:  # a retire's rmdir lands between the writer's mkdir and its temp file
            taken.append(folder)
            storage.remove_empty_folder("leases/b")
            assert not folder.exists()
        return real(path)

    monkeypatch.setattr(storage_module, "open_locked_temp", removed_first)
    # When an epoch is created and the folder vanishes under it
    assert storage.create_exclusive("leases/b/000000000.json", b"{}")
    # Then the write made the folder again and the object is whole
    assert taken == [folder] and storage.read_bytes("leases/b/000000000.json") == b"{}"
    # And a folder with an object (or a writer's temporary file) in it is never removed
    storage.remove_empty_folder("leases/b")
    assert storage.exists("leases/b/000000000.json")


def test_an_epoch_pruned_between_the_listing_and_the_read_is_listed_again(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner.leases import prune

    # Given a lease released once, then taken by a second run
    first = acquire(storage, "import", owner="run-1", ttl_s=60)
    assert first is not None and release(storage, first)
    second = acquire(storage, "import", owner="run-2", ttl_s=60)
    assert second is not None
    # When another run creates and prunes epochs just after this one listed them (a missing
    # object is a permanent error now, so no task retry would cover the race)
    listed = leases._epochs
    calls = []

    def list_then_race(store: Storage, name: str) -> dict[int, str]:
        epochs = listed(store, name)
        calls.append(epochs)
        if len(calls) == 1:  # (release and prune list too: they see the patched lister)
            monkeypatch.setattr(leases, "_epochs", listed)
            release(store, second)
            prune(store, name, below=max(epochs) + 1)
            monkeypatch.setattr(leases, "_epochs", list_then_race)
        return epochs

    monkeypatch.setattr(leases, "_epochs", list_then_race)
    found = current(storage, "import")
    # Then the read lists again and finds the newest epoch, released
    assert len(calls) == 2 and found is not None
    assert (found.epoch, found.released) == (second.epoch + 1, True)
