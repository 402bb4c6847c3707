"""A live document's copy (application/live_documents/room.py): its encoded state is reused, and
what it refuses before applying; the per-user edit budget; awareness snapshots in chunks."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Text

from application.live_documents.awareness import MAX_AWARENESS_MESSAGE_BYTES, awareness_messages
from application.live_documents.budget import EditBudget, OverBudget
from application.live_documents.room import EMPTY_STATE_VECTOR, DocumentRoom
from domain.documents import MAX_ROOT_NAME, MAX_ROOTS
from domain.rules import MAX_DOCUMENT_UPDATE_BYTES
from domain.yjs_protocol import AwarenessEntry, parse, parse_awareness
from domain.yjs_update import MalformedUpdate
from tests.fixtures.yjs import map_set_update


def _text_of(state: bytes) -> str:
    doc: Doc[Any] = Doc()
    doc.apply_update(state)
    return str(doc.get("content", type=Text))


def _room(text: str) -> DocumentRoom:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, text)
    return DocumentRoom("d", doc, 1, MAX_DOCUMENT_UPDATE_BYTES)


def test_fresh_editors_share_one_encoding_until_the_copy_changes() -> None:
    room = _room("hello")
    first = room.diff(EMPTY_STATE_VECTOR)
    assert room.diff(EMPTY_STATE_VECTOR) is first  # not encoded again
    assert _text_of(first) == "hello"
    editor: Doc[Any] = Doc()
    editor.apply_update(first)
    before = editor.get_state()
    editor.get("content", type=Text).insert(5, " world")
    assert room.receive("someone", editor.get_update(before)) is not None
    after = room.diff(EMPTY_STATE_VECTOR)
    assert after is not first
    assert _text_of(after) == "hello world"


def test_the_bytes_a_copy_was_built_from_are_given_as_its_state() -> None:
    source = _room("stored")
    stored = source.state()
    doc: Doc[Any] = Doc()
    doc.apply_update(stored)
    room = DocumentRoom("d", doc, 1, MAX_DOCUMENT_UPDATE_BYTES, len(stored))
    room.keep_encoded(stored)
    assert room.diff(EMPTY_STATE_VECTOR) is stored
    # A peer that holds something still gets only what it lacks.
    assert room.diff(doc.get_state()) != stored


# -- issue 16: what the copy refuses before applying, and the edit budget ----------------------


def test_a_root_the_saving_would_refuse_is_refused_before_it_is_applied() -> None:
    """An empty root name, one too long, or a root past the document's 64: refused as
    malformed (close 4400) with nothing applied, instead of shown live and refused when
    saved (which reloaded the copy, and the client sent it again, in a loop)."""
    room = _room("x")
    for name in (b"", b"r" * (MAX_ROOT_NAME + 1)):
        with pytest.raises(MalformedUpdate):
            room.receive("u", map_set_update(name, b"k", b"v", 11))
    for i in range(MAX_ROOTS - 1):  # "content" is the first
        assert room.receive("u", map_set_update(f"r{i}".encode(), b"k", b"v", 100 + i))
    with pytest.raises(MalformedUpdate, match="at most 64"):
        room.receive("u", map_set_update(b"one-too-many", b"k", b"v", 99))
    assert "one-too-many" not in set(room.doc.keys())
    # Known roots take more content.
    assert room.receive("u", map_set_update(b"r0", b"k2", b"v", 98))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_edit_budget_refuses_past_its_bytes_and_fills_again() -> None:
    clock = Clock()
    budget = EditBudget(1000, 0, 10.0, clock)
    budget.charge("a", 600)
    budget.charge("b", 1000)  # per user
    with pytest.raises(OverBudget) as refused:
        budget.charge("a", 600)  # refused whole: nothing taken
    assert refused.value.retry_after == pytest.approx(2.0)
    assert budget.refusing("a") == pytest.approx(2.0)
    budget.charge("a", 400)
    clock.now += 6.0  # 600 bytes back
    assert budget.refusing("a") == 0.0
    budget.charge("a", 600)
    with pytest.raises(OverBudget):
        budget.charge("a", 1)


def test_the_edit_budget_counts_updates() -> None:
    clock = Clock()
    budget = EditBudget(0, 3, 30.0, clock)
    for _ in range(3):
        budget.charge("a", 10**9)  # bytes are not limited
    with pytest.raises(OverBudget, match="3 updates per 30 s"):
        budget.charge("a", 1)
    clock.now += 10.0
    budget.charge("a", 1)


def test_awareness_snapshots_come_in_bounded_messages() -> None:
    entries = [AwarenessEntry(i, 1, b'"' + b"x" * 6000 + b'"') for i in range(40)]
    messages = awareness_messages(entries)
    assert len(messages) > 1
    assert all(len(m) <= MAX_AWARENESS_MESSAGE_BYTES + 16 for m in messages)
    got = [e for m in messages for e in parse_awareness(parse(m).payload)]
    assert got == entries
    assert awareness_messages([]) == []
