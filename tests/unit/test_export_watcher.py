"""The export watcher's debounce: one burst of landed files, one trigger."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from deployments import export_watcher
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
    # a label-triggered run's own snapshot is no landed export (a trial saw each such run
    # start a second one through the watcher)
    storage.write_json("exports/20261202T143103534596Z-bfd23fd6-ls-1.json", [])
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


def test_the_watcher_refuses_to_start_without_a_prefect_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Given no PREFECT_API_URL (its runs would go to a temporary local database)
    monkeypatch.setenv("NER_STORAGE_URI", str(tmp_path))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        # When the watcher is started, it refuses at once, naming the variable and its use
        assert export_watcher.main(["--env", "dev"]) == 1
    (error,) = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert error.split(" ERROR ", 1)[1].startswith(
        "PREFECT_API_URL is not set: the train-ner runs this watcher queues"
    )
    # and it listed nothing, so no checkpoint marks a file as acted on
    assert not open_storage(str(tmp_path), "dev").exists(CHECKPOINT_KEY)


def test_an_unreachable_prefect_api_is_a_brandloop_error_so_the_files_are_retried() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.servers import free_port

    # Given a Prefect API nobody listens on
    api = f"http://127.0.0.1:{free_port()}/api"
    trigger = export_watcher.start_training("train-ner/dev")
    with temporary_settings({PREFECT_API_URL: api}), pytest.raises(BrandloopError) as raised:
        # When a burst fires, the error is one watch() catches (it keeps the keys pending)
        trigger(frozenset({"exports/a.json"}))
    assert str(raised.value).startswith(f"cannot queue a run of 'train-ner/dev' on {api}: ")
    assert "ConnectError" in str(raised.value)
