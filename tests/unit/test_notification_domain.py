"""The notification aggregates' own rules (issue 19), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.base import Cause
from domain.errors import InvalidValue
from domain.notification_preferences import NotificationPreferences
from domain.notifications import MENTION, REPLY, Inbox, MessageNotices, notification_id

CAUSE = Cause(actor_id="u1", command_id="c1")
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_a_channel_level_wins_over_its_workspace_and_a_mute_silences_either() -> None:
    ws, ch, other = uuid4(), uuid4(), uuid4()
    p = NotificationPreferences.open("u1", CAUSE)
    assert p.allows(REPLY, ws, ch, NOW)  # no setting: everything
    assert p.change("workspace", ws, "nothing", None, False, CAUSE)
    assert not p.allows(MENTION, ws, ch, NOW)
    assert p.change("channel", ch, "mentions", None, False, CAUSE)
    assert p.allows(MENTION, ws, ch, NOW) and not p.allows(REPLY, ws, ch, NOW)
    assert not p.allows(MENTION, ws, other, NOW)
    # The same setting again records nothing.
    assert not p.change("channel", ch, "mentions", None, False, CAUSE)
    assert p.change("workspace", ws, None, NOW + timedelta(hours=1), False, CAUSE)
    assert not p.allows(MENTION, ws, ch, NOW)
    assert p.allows(MENTION, ws, ch, NOW + timedelta(hours=2))  # the mute has ended
    assert p.change("workspace", ws, None, None, True, CAUSE)
    assert p.allows(MENTION, ws, ch, NOW)
    assert not p.change("workspace", ws, None, None, True, CAUSE)  # not muted: nothing


def test_a_direct_channel_always_notifies_unless_muted() -> None:
    dm = uuid4()
    p = NotificationPreferences.open("u1", CAUSE)
    assert p.change("channel", dm, "nothing", None, False, CAUSE)
    assert p.allows("direct_message", None, dm, NOW, direct=True)
    assert p.change("channel", dm, None, NOW + timedelta(minutes=5), False, CAUSE)
    assert not p.allows("direct_message", None, dm, NOW, direct=True)


@pytest.mark.parametrize(
    "args",
    [
        ("room", None, False),
        ("channel", "loud", False),
        ("channel", None, False, datetime(2030, 1, 1)),  # no zone
        ("channel", None, True, NOW),  # both
    ],
)
def test_bad_preferences_are_refused(args: tuple[object, ...]) -> None:
    target, level, unmute, *until = args
    p = NotificationPreferences.open("u1", CAUSE)
    with pytest.raises(InvalidValue):
        p.change(str(target), uuid4(), level, until[0] if until else None, bool(unmute), CAUSE)  # type: ignore[arg-type]


def test_an_inbox_tells_nobody_of_their_own_doing_and_its_read_mark_only_moves_on() -> None:
    inbox = Inbox.open("u1", CAUSE)
    assert not inbox.notify(
        REPLY, workspace_id=None, channel_id=None, message_id=None, from_id="u1",
        position=1, cause=CAUSE,
    )  # fmt: skip
    with pytest.raises(InvalidValue):  # a mention by name goes through notify_mention
        inbox.notify(
            MENTION, workspace_id=None, channel_id=None, message_id=None, from_id="u2",
            position=1, cause=CAUSE,
        )  # fmt: skip
    assert inbox.mark_read_up_to(10, CAUSE)
    assert not inbox.mark_read_up_to(5, CAUSE)
    with pytest.raises(InvalidValue):
        inbox.mark_read([], CAUSE)
    with pytest.raises(InvalidValue):
        inbox.mark_read([str(uuid4()) for _ in range(201)], CAUSE)


def test_notification_ids_are_stable_and_distinct_per_inbox_and_command() -> None:
    a, b = uuid4(), uuid4()
    assert notification_id(a, "mentions:5:0") == notification_id(a, "mentions:5:0")
    assert notification_id(a, "mentions:5:0") != notification_id(a, "mentions:5:1")
    assert notification_id(a, "mentions:5:0") != notification_id(b, "mentions:5:0")


def test_the_ledger_forgets_only_the_kinds_withdrawn() -> None:
    notices = MessageNotices.open(uuid4(), CAUSE)
    notices.told("u2", MENTION, CAUSE)
    notices.told("u2", REPLY, CAUSE)
    assert notices.untold("u2", [MENTION], CAUSE) == [MENTION]
    assert notices.notified == {"u2": [REPLY]}
    assert notices.untold("u2", [MENTION], CAUSE) == []
    assert notices.join_thread("u2", CAUSE) and not notices.join_thread("u2", CAUSE)
