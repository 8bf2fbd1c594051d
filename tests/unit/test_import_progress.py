"""apply-ner's Label Studio import logs the new tasks so far, of all posts, after each batch:
the line the CLI's progress bar and the Prefect UI show."""

from __future__ import annotations

import logging

import pytest

from flows.apply_ner import _import_progress


def test_each_imported_batch_logs_the_posts_so_far_out_of_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given the progress callback of an import of 25 posts
    on_batch = _import_progress(25, logging.getLogger("brandloop.test.import"))
    # When three batches arrive (the last one short)
    with caplog.at_level(logging.INFO, logger="brandloop.test.import"):
        on_batch(1, list(range(10)))
        on_batch(2, list(range(10, 20)))
        on_batch(3, list(range(20, 25)))
    # Then each logs the running total out of 25, at INFO
    skipped = "(a post already in the project is skipped)"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"batch 1: 10 new tasks so far, of 25 posts {skipped}"),
        (logging.INFO, f"batch 2: 20 new tasks so far, of 25 posts {skipped}"),
        (logging.INFO, f"batch 3: 25 new tasks so far, of 25 posts {skipped}"),
    ]
