"""The export watcher's debounce: one burst of landed files, one trigger."""

from __future__ import annotations

import threading
from pathlib import Path

from deployments.export_watcher import CHECKPOINT_KEY, Burst, export_keys, load_acted, watch
from ner.errors import BrandloopError
from ner.storage import open_storage


def test_a_file_fires_once_after_the_quiet_period() -> None:
    burst = Burst(quiet=10)
    assert burst.observe(["exports/a.json"], now=0) == frozenset()
    assert burst.observe(["exports/a.json"], now=9.9) == frozenset()
    assert burst.observe(["exports/a.json"], now=10) == {"exports/a.json"}
    # already acted on: never again
    assert burst.observe(["exports/a.json"], now=100) == frozenset()


def test_files_that_keep_arriving_fire_once_when_they_stop() -> None:
    burst = Burst(quiet=10)
    keys: list[str] = []
    for second in range(10):  # one new file a second: the burst never goes quiet
        keys.append(f"exports/{second}.json")
        assert burst.observe(keys, now=second) == frozenset()
    assert burst.observe(keys, now=18.9) == frozenset()
    assert burst.observe(keys, now=19) == frozenset(keys)
    assert burst.observe(keys, now=40) == frozenset()


def test_a_later_file_is_a_new_burst_and_known_files_are_skipped() -> None:
    burst = Burst(quiet=5, acted={"exports/old.json"})
    assert burst.observe(["exports/old.json"], now=0) == frozenset()
    assert burst.observe(["exports/old.json", "exports/new.json"], now=1) == frozenset()
    assert burst.observe(["exports/old.json", "exports/new.json"], now=6) == {"exports/new.json"}


def test_only_json_exports_count(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path), "dev")
    storage.write_json("exports/a.json", [])
    storage.write_bytes("exports/notes.txt", b"x")
    storage.write_bytes("exports/.partial.json", b"[")
    assert export_keys(storage) == ["exports/a.json"]


class _Clock:
    """Advances 1 s per call; stops the watcher after ``until`` calls."""

    def __init__(self, stop: threading.Event, until: int) -> None:
        self.now, self.stop, self.until = 0.0, stop, until

    def __call__(self) -> float:
        self.now += 1
        if self.now >= self.until:
            self.stop.set()
        return self.now


def test_watch_records_what_it_fired_for_and_a_restart_does_not_fire_again(
    tmp_path: Path,
) -> None:
    storage = open_storage(str(tmp_path), "dev")
    for n in range(3):
        storage.write_json(f"exports/{n}.json", [])
    fired: list[frozenset[str]] = []
    stop = threading.Event()
    count = watch(storage, fired.append, interval=0, quiet=2, stop=stop, clock=_Clock(stop, 6))
    assert count == 1 and fired == [frozenset(f"exports/{n}.json" for n in range(3))]
    assert load_acted(storage) == set(fired[0])
    assert storage.exists(CHECKPOINT_KEY)
    stop = threading.Event()
    again = watch(storage, fired.append, interval=0, quiet=2, stop=stop, clock=_Clock(stop, 6))
    assert again == 0 and len(fired) == 1


def test_a_failed_trigger_is_retried_at_the_next_quiet_listing(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path), "dev")
    storage.write_json("exports/a.json", [])
    calls: list[frozenset[str]] = []

    def flaky(keys: frozenset[str]) -> None:
        calls.append(keys)
        if len(calls) == 1:
            raise BrandloopError("Prefect API unreachable")

    stop = threading.Event()
    count = watch(storage, flaky, interval=0, quiet=1, stop=stop, clock=_Clock(stop, 8))
    assert count == 1 and len(calls) == 2
    assert load_acted(storage) == {"exports/a.json"}
