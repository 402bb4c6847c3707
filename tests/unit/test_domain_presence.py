"""Presence rules: a session starts for a signed-in user and ends once."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.base import Cause
from domain.errors import PermissionDenied
from domain.presence import Session


def test_a_session_starts_for_its_user_on_an_instance() -> None:
    session = Session.start(uuid4(), "instance-1", Cause("user-1", "k"))
    assert session.open and session.user_id == "user-1" and session.instance_id == "instance-1"
    (started,) = session.collect_events()
    assert type(started).__name__ == "SessionStarted"
    assert vars(started)["actor_id"] == "user-1" and vars(started)["command_id"] == "k"


def test_a_session_needs_a_signed_in_user() -> None:
    with pytest.raises(PermissionDenied):
        Session.start(uuid4(), "instance-1", Cause(None))


def test_a_session_ends_once() -> None:
    session = Session.start(uuid4(), "instance-1", Cause("user-1"))
    session.collect_events()
    assert session.end("instance lost", Cause(None)) is True
    assert not session.open
    (ended,) = session.collect_events()
    assert vars(ended)["reason"] == "instance lost" and vars(ended)["actor_id"] is None
    assert session.end("disconnected", Cause("user-1")) is False
    assert session.collect_events() == []
