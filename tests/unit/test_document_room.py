"""A live document's copy (application/document_rooms.py): its encoded state is reused."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text

from application.document_rooms import EMPTY_STATE_VECTOR, DocumentRoom
from domain.rules import MAX_DOCUMENT_UPDATE_BYTES


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
