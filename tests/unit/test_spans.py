"""The SQL that set-based read models run over a span of the log."""

from __future__ import annotations

from typing import Any

import pytest

from projections.base import Projection, Span
from projections.log import span_events
from projections.runner import _apply

SENT = "domain.messages:Message.MessageSent"


def test_a_span_selects_its_events_by_their_exact_stored_topics() -> None:
    span = Span(10, 20, frozenset({SENT, "domain.messages:Message.MessageEdited"}), 4)
    sql = span_events(span, {"MessageSent"}, {"text": "text"})
    assert f"e.topic IN ('{SENT}')" in sql
    assert "MessageEdited" not in sql
    assert span.types == {"MessageSent", "MessageEdited"}


def test_a_type_absent_from_the_span_matches_nothing() -> None:
    span = Span(10, 20, frozenset({SENT}), 1)
    assert span_events(span, {"MessageDeleted"}).endswith("AND false")


def test_a_stored_topic_that_is_not_a_class_path_is_never_put_in_the_sql() -> None:
    # Topics come from the store's rows and are inlined: anything but a class path is refused.
    forged = "domain.messages:Message'); DROP TABLE rm_messages; --.MessageSent"
    span = Span(10, 20, frozenset({SENT, forged}), 2)
    with pytest.raises(ValueError, match="unexpected stored topic"):
        span_events(span, {"MessageSent"})


def test_a_projection_of_neither_kind_is_refused_before_its_position_moves() -> None:
    class Neither(Projection):
        name = "neither"
        tables = ()
        create_sql = ""
        handles = frozenset({"MessageSent"})

    positions: dict[str, int] = {"neither": 10}
    cursor: Any = None  # nothing may be sent
    with pytest.raises(TypeError, match="neither an EventProjection nor a SetProjection"):
        _apply(cursor, [Neither()], Span(10, 20, frozenset({SENT}), 1), [], positions)
    assert positions == {"neither": 10}
