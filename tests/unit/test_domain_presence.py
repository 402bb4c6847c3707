"""Presence rules: sessions open and close; a lost instance closes all its sessions."""

from __future__ import annotations

import pytest

from domain.base import Cause
from domain.errors import Conflict
from domain.presence import Presence, presence_id

ME = Cause("user-1", "k")


def _names(presence: Presence) -> list[str]:
    return [type(e).__name__ for e in presence.collect_events()]


def test_a_first_session_tracks_presence_and_goes_online() -> None:
    presence = Presence.track("user-1", ME)
    assert presence.id == presence_id("user-1") and not presence.online
    presence.start_session("s1", "i1", ME)
    assert presence.online
    assert _names(presence) == ["PresenceTracked", "SessionStarted"]


def test_a_session_cannot_start_twice() -> None:
    presence = Presence.track("user-1", ME)
    presence.start_session("s1", "i1", ME)
    with pytest.raises(Conflict):
        presence.start_session("s1", "i2", ME)


def test_online_until_the_last_session_ends() -> None:
    presence = Presence.track("user-1", ME)
    presence.start_session("s1", "i1", ME)
    presence.start_session("s2", "i1", ME)
    assert presence.end_session("s1", "disconnected", ME)
    assert presence.online
    assert presence.end_session("s2", "disconnected", ME)
    assert not presence.online


def test_ending_a_session_that_is_not_open_records_nothing() -> None:
    presence = Presence.track("user-1", ME)
    presence.collect_events()
    assert presence.end_session("never", "disconnected", ME) is False
    assert presence.collect_events() == []


def test_a_lost_instance_ends_only_its_own_sessions() -> None:
    presence = Presence.track("user-1", ME)
    presence.start_session("a", "lost", ME)
    presence.start_session("b", "alive", ME)
    presence.start_session("c", "lost", ME)
    presence.collect_events()
    assert presence.end_instance_sessions("lost", "instance lost", Cause(None)) == 2
    assert presence.sessions == {"b": "alive"} and presence.online
    ended = presence.collect_events()
    assert [type(e).__name__ for e in ended] == ["SessionEnded", "SessionEnded"]
    assert all(vars(e)["reason"] == "instance lost" and vars(e)["actor_id"] is None for e in ended)
