"""When the documents projection folds a document's tail of updates into a new snapshot."""

from __future__ import annotations

from projections.documents import (
    SNAPSHOT_EVERY_BYTES,
    SNAPSHOT_EVERY_UPDATES,
    SNAPSHOT_TAIL_FLOOR_BYTES,
    snapshot_due,
)


def test_a_long_tail_of_small_updates_is_folded() -> None:
    assert not snapshot_due(SNAPSHOT_EVERY_UPDATES - 1, 100, 10_000_000)
    assert snapshot_due(SNAPSHOT_EVERY_UPDATES, 100, 10_000_000)


def test_a_heavy_tail_is_folded_whatever_the_document_size() -> None:
    assert not snapshot_due(2, SNAPSHOT_EVERY_BYTES - 1, 100_000_000)
    assert snapshot_due(2, SNAPSHOT_EVERY_BYTES, 100_000_000)


def test_a_tail_past_a_quarter_of_the_snapshot_is_folded() -> None:
    assert not snapshot_due(3, 99_999, 400_000)
    assert snapshot_due(3, 100_000, 400_000)


def test_small_documents_are_not_snapshotted_at_every_keystroke() -> None:
    assert not snapshot_due(3, SNAPSHOT_TAIL_FLOOR_BYTES - 1, 0)
    assert snapshot_due(3, SNAPSHOT_TAIL_FLOOR_BYTES, 0)
