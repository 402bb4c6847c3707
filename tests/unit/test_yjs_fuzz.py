"""Property-based fuzzing of the Yjs update checker (issue #7, item 11), with hypothesis.

Inputs are random bytes and real pycrdt updates mutated the ways a hostile or broken client
would: bits flipped, bytes overwritten, inserted and deleted, the end cut off, and varints
rewritten (huge, overlong, past 2**32 and 2**53, eleven bytes long). The properties:

- ``inspect_update`` raises nothing but ``MalformedUpdate``, and ``check_applicable``
  nothing but ``MissingDependencies``;
- whatever ``inspect_update`` accepts, pycrdt applies to a fresh document without a panic
  (a segfault would take this process down with it); and whatever both checks accept
  against a document with content, as the server's ``DocumentRoom.receive`` does, applies
  to that document without a panic and leaves it readable.

tests/unit/test_yjs_update.py pins each rule of the checker and fuzzes sequences of updates
with a fixed seed; this adds hypothesis's search (and shrinking, should it find anything).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from domain.yjs_update import (
    MalformedUpdate,
    MissingDependencies,
    UpdateShape,
    check_applicable,
    decode_state_vector,
    inspect_update,
)
from tests.fixtures.yjs_corpus import BASE_STATE, CORPUS, mutated

pytestmark = pytest.mark.security

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow],
)


# -- a corpus of real updates ------------------------------------------------------------


# -- mutations ---------------------------------------------------------------------------


HOSTILE = st.one_of(st.binary(max_size=256), mutated())


def _inspect(data: bytes) -> UpdateShape | None:
    """The shape, or None for a clean refusal; anything else fails the test."""
    try:
        return inspect_update(data)
    except MalformedUpdate:
        return None


def _apply_without_panic(doc: Doc[Any], data: bytes) -> bool:
    """Applies ``data``; True if pycrdt took it, False if it refused it with an ordinary
    exception (the server turns that into close 4400). A panic fails the test."""
    try:
        doc.apply_update(data)
    except Exception:
        return False
    except BaseException as exc:  # pyo3's PanicException derives from BaseException
        if type(exc).__name__ == "PanicException":
            pytest.fail(f"pycrdt panicked on an update inspect_update accepted: {data.hex()}")
        raise
    doc.get_update()  # still readable
    doc.get_state()
    return True


# -- the properties ----------------------------------------------------------------------


def test_the_corpus_is_accepted_and_applies() -> None:
    """The starting points are real updates the checker takes (else the mutations would
    start from garbage and prove little)."""
    doc: Doc[Any] = Doc()
    for data in CORPUS:
        shape = inspect_update(data)
        check_applicable(shape, decode_state_vector(doc.get_state()))
        assert _apply_without_panic(doc, data)
    assert str(doc.get("content", type=Text)).endswith("world, hostile input")
    assert str(doc.get("meta", type=Map)["title"]) == "renamed"


@FUZZ
@given(data=HOSTILE)
def test_inspect_update_raises_nothing_but_malformed_update(data: bytes) -> None:
    shape = _inspect(data)
    if shape is not None:
        assert shape.structs >= 0 and shape.deleted_ranges >= 0
        assert set(shape.roots.values()) <= {"text", "map", "array", "xml"}


@FUZZ
@given(data=HOSTILE)
def test_what_inspect_update_accepts_applies_to_a_fresh_doc_without_a_panic(data: bytes) -> None:
    if _inspect(data) is not None:
        _apply_without_panic(Doc(), data)


@FUZZ
@given(data=mutated())
def test_what_both_checks_accept_applies_to_a_document_without_a_panic(data: bytes) -> None:
    """The server's path (DocumentRoom.receive): inspect, check against the document's state
    vector, then apply to the document that holds content."""
    shape = _inspect(data)
    if shape is None:
        return
    doc: Doc[Any] = Doc()
    doc.apply_update(BASE_STATE)
    try:
        check_applicable(shape, decode_state_vector(doc.get_state()))
    except MissingDependencies:
        return
    _apply_without_panic(doc, data)


def test_the_mutations_reach_every_outcome() -> None:
    """The fuzzing above is not vacuous: with the same mutations, some updates are refused
    as malformed, some as missing dependencies, and some are applied."""
    outcomes: set[str] = set()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(data=mutated())
    def classify(data: bytes) -> None:
        shape = _inspect(data)
        if shape is None:
            outcomes.add("malformed")
            return
        doc: Doc[Any] = Doc()
        doc.apply_update(BASE_STATE)
        try:
            check_applicable(shape, decode_state_vector(doc.get_state()))
        except MissingDependencies:
            outcomes.add("missing dependencies")
            return
        outcomes.add("applied" if _apply_without_panic(doc, data) else "refused by pycrdt")

    classify()
    assert {"malformed", "missing dependencies", "applied"} <= outcomes, outcomes
