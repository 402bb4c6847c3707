"""Notifications: each user's inbox, one stream per user, written only by reactions
(application/reactions.py), never by a client; and, per message, the ledger of who was told
about it (so that a deletion or an edit can take it back) and who took part in its thread.

A notification names what happened and where (ids and the causing event's position), never
what was written: the text stays in the message's own stream, under its redaction rules, and
a reader of the inbox looks it up with the access they have when they read it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Snapshot as AggregateSnapshot
from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import InvalidValue
from domain.scopes import OPERATORS, StreamKind

_INBOXES = uuid5(NAMESPACE_URL, "chorus:inbox")
_NOTICES = uuid5(NAMESPACE_URL, "chorus:message-notices")

# The kinds of notification (the ``kind`` of a ``Notified`` event; ``MentionNotified`` is
# the kind "mention").
MENTION = "mention"
REPLY = "reply"
THREAD_REPLY = "thread_reply"
DIRECT_MESSAGE = "direct_message"
MEMBER_JOINED = "member_joined"
ROLE_GRANTED = "role_granted"
KINDS = (MENTION, REPLY, THREAD_REPLY, DIRECT_MESSAGE, MEMBER_JOINED, ROLE_GRANTED)
# Kinds about a message: a deletion of the message withdraws them.
MESSAGE_KINDS = (MENTION, REPLY, THREAD_REPLY, DIRECT_MESSAGE)

# ``@channel`` and ``@everyone`` tell every reader of the channel (for those holding
# ``mention_everyone``), at most this many of them.
BROADCASTS = ("channel", "everyone", "here")
MAX_BROADCAST = 1000

MAX_READ_IDS = 200
INBOX_SNAPSHOT_INTERVAL = 100


def inbox_id(user_id: str) -> UUID:
    """A user's inbox has a fixed id: two reactions that open it at once conflict on its
    first version (one is decided again) instead of opening two."""
    return uuid5(_INBOXES, user_id)


def notices_id(message_id: str | UUID) -> UUID:
    return uuid5(_NOTICES, str(message_id))


def notification_id(inbox: UUID, command_id: str | None) -> UUID:
    """A notification's id: one command (a reaction's, whose id names its causing event)
    records at most one notification per inbox, so the pair names it, in every replay."""
    return uuid5(inbox, command_id or "")


class InboxState(TypedDict):
    """An inbox's attributes as a snapshot holds them."""

    _created_on: datetime
    _modified_on: datetime
    user_id: str
    read_up_to: int


class Inbox(ChorusAggregate):
    """What a user is told about: mentions, replies, thread replies, direct messages, who
    joined a workspace they own, roles granted to them; withdrawals; what they have read."""

    # Its owner's, but not through the owner rule: what a notification is about is checked
    # against the owner's access when it is delivered (application/notifications.py:
    # ``deliverable``), which the generic owner paths (the event log) would not do.
    stream_kind = StreamKind("inbox", OPERATORS, owner="user_id")
    # It only grows: loading it for each notification reads at most this many events.
    snapshot_interval = INBOX_SNAPSHOT_INTERVAL

    class Snapshot(AggregateSnapshot):
        state: InboxState  # type: ignore[assignment]

    @classmethod
    @caused
    def open(cls, user_id: str, cause: Cause) -> Inbox:
        return cls(
            id=inbox_id(user_id),
            user_id=user_id,
        )

    @event("InboxOpened")
    def __init__(self, id: UUID, user_id: str) -> None:
        self.user_id = user_id
        self.read_up_to = 0

    @caused
    def notify_mention(
        self,
        message_id: UUID,
        channel_id: UUID,
        workspace_id: UUID | None,
        author_id: str,
        position: int,
        cause: Cause,
    ) -> bool:
        """``position``: the causing event's. False (nothing recorded) for a mention of
        oneself."""
        if author_id == self.user_id:
            return False
        self._mention_notified(
            message_id=message_id,
            channel_id=channel_id,
            workspace_id=workspace_id,
            author_id=author_id,
            position=position,
        )
        return True

    @event("MentionNotified")
    def _mention_notified(
        self,
        message_id: UUID,
        channel_id: UUID,
        workspace_id: UUID | None,
        author_id: str,
        position: int,
    ) -> None:
        pass

    @caused
    def notify(
        self,
        kind: str,
        *,
        workspace_id: UUID | None,
        channel_id: UUID | None,
        message_id: UUID | None,
        from_id: str,
        position: int,
        cause: Cause,
        detail: str | None = None,
    ) -> bool:
        """A notification of ``kind`` (a mention of the user by name: ``notify_mention``;
        here, a mention only as ``@channel``/``@everyone``, named in ``detail``), caused by
        ``from_id``'s event at ``position``. False (nothing recorded) for one's own doing."""
        if kind not in KINDS or (kind == MENTION and detail not in BROADCASTS):
            raise InvalidValue(f"unknown notification kind {kind!r}")
        if from_id == self.user_id:
            return False
        self._notified(
            kind=kind,
            workspace_id=workspace_id,
            channel_id=channel_id,
            message_id=message_id,
            from_id=from_id,
            detail=detail,
            position=position,
        )
        return True

    @event("Notified")
    def _notified(
        self,
        kind: str,
        workspace_id: UUID | None,
        channel_id: UUID | None,
        message_id: UUID | None,
        from_id: str,
        detail: str | None,
        position: int,
    ) -> None:
        pass

    @caused
    def withdraw(self, message_id: UUID, kinds: list[str], position: int, cause: Cause) -> None:
        """Takes back this inbox's notifications of ``kinds`` about the message, because of
        the event at ``position`` (its deletion, or an edit that dropped a mention)."""
        self._withdrawn(
            message_id=message_id,
            kinds=sorted(kinds),
            position=position,
        )

    @event("NotificationsWithdrawn")
    def _withdrawn(
        self,
        message_id: UUID,
        kinds: list[str],
        position: int,
    ) -> None:
        pass

    @caused
    def mark_read(self, ids: list[str], cause: Cause) -> None:
        """Marks these notifications read. The ids are the owner's (the caller checks them
        against the read model: another's id is simply not among them)."""
        if not ids or len(ids) > MAX_READ_IDS:
            raise InvalidValue(f"give 1 to {MAX_READ_IDS} notification ids")
        self._read(ids=sorted(set(ids)))

    @event("NotificationsRead")
    def _read(self, ids: list[str]) -> None:
        pass

    @caused
    def mark_read_up_to(self, position: int, cause: Cause) -> bool:
        """Every notification at or before ``position`` (the notification's own position in
        the log) is read. False (nothing recorded) when that was already so."""
        if position < 0:
            raise InvalidValue("up_to must be a position")
        if position <= self.read_up_to:
            return False
        self._read_up_to(position=position)
        return True

    @event("NotificationsReadUpTo")
    def _read_up_to(self, position: int) -> None:
        self.read_up_to = position


class MessageNotices(ChorusAggregate):
    """Per message: who was told about it, and how (so that its deletion, or an edit that
    drops a mention, withdraws exactly those notifications), and who took part in its
    thread (its author and those who replied to it). Written only by reactions."""

    stream_kind = StreamKind("message_notices", OPERATORS)

    @classmethod
    @caused
    def open(cls, message_id: UUID, cause: Cause) -> MessageNotices:
        return cls(
            id=notices_id(message_id),
            message_id=message_id,
        )

    @event("MessageNoticesOpened")
    def __init__(self, id: UUID, message_id: UUID) -> None:
        self.message_id = message_id
        self.notified: dict[str, list[str]] = {}
        self.participants: list[str] = []

    @caused
    def told(self, user_id: str, kind: str, cause: Cause) -> None:
        self._told(user_id=user_id, kind=kind)

    @event("NoticeGiven")
    def _told(self, user_id: str, kind: str) -> None:
        kinds = self.notified.setdefault(user_id, [])
        if kind not in kinds:
            kinds.append(kind)

    @caused
    def untold(self, user_id: str, kinds: list[str], cause: Cause) -> list[str]:
        """Forgets ``user_id``'s notifications of ``kinds``; returns those they had."""
        had = [k for k in self.notified.get(user_id, []) if k in kinds]
        if had:
            self._untold(user_id=user_id, kinds=had)
        return had

    @event("NoticeWithdrawn")
    def _untold(self, user_id: str, kinds: list[str]) -> None:
        left = [k for k in self.notified.get(user_id, []) if k not in kinds]
        if left:
            self.notified[user_id] = left
        else:
            self.notified.pop(user_id, None)

    @caused
    def join_thread(self, user_id: str, cause: Cause) -> bool:
        if user_id in self.participants:
            return False
        self._joined(user_id=user_id)
        return True

    @event("ThreadJoined")
    def _joined(self, user_id: str) -> None:
        self.participants.append(user_id)
