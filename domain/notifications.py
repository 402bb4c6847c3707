"""Notifications: each user's inbox, one stream per user, written only by reactions
(application/reactions.py), never by a client.

A notification names what happened and where (ids and the causing event's position), never
what was written: the text stays in the message's own stream, under its redaction rules, and
a reader of the inbox looks it up with the access they have when they read it.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.scopes import OPERATORS, StreamKind

_INBOXES = uuid5(NAMESPACE_URL, "chorus:inbox")


def inbox_id(user_id: str) -> UUID:
    """A user's inbox has a fixed id: two reactions that open it at once conflict on its
    first version (one is decided again) instead of opening two."""
    return uuid5(_INBOXES, user_id)


class Inbox(ChorusAggregate):
    """What a user is told about: mentions of them (more kinds come with issue 19)."""

    # Its owner's; no member-facing path hands it out until issue 19 checks, on delivery,
    # that the owner may still read what each notification is about.
    stream_kind = StreamKind("inbox", OPERATORS, owner="user_id")

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
