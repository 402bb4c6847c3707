"""Messages: one stream per message, so busy channels have no write contention."""

from __future__ import annotations

import re
from uuid import UUID

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.channels import Channel
from domain.errors import Conflict, InvalidValue, MessageDeleted, NotFound, PermissionDenied
from domain.rules import (
    MAX_DISTINCT_REACTIONS,
    MAX_EMOJI,
    MAX_MENTIONS,
    MAX_MESSAGE_TEXT,
    USERNAME_PATTERN,
    bounded_text,
)
from domain.scopes import CHANNEL_READERS, StreamKind
from domain.workspaces import Workspace

_MENTION = re.compile(r"(?<![\w@.])@([A-Za-z0-9_.]+)")


def parse_mentions(text: str) -> list[str]:
    """Usernames mentioned as ``@username``, lower-cased, first-seen order, no repeats.

    A sentence's full stop is not part of the name ("thanks @ann."), and a run of name
    characters too long or too short to be a username mentions nobody (never a prefix of it).
    """
    if "@" not in text:  # most messages: a substring test is far cheaper than the scan
        return []
    seen: dict[str, None] = {}
    for match in _MENTION.finditer(text):
        name = match.group(1).lower().rstrip(".")
        if USERNAME_PATTERN.fullmatch(name):
            seen.setdefault(name, None)
    return list(seen)[:MAX_MENTIONS]


def check_text(text: str) -> str:
    return bounded_text(text, field="text", max_length=MAX_MESSAGE_TEXT)


def check_emoji(emoji: str) -> str:
    if not emoji or len(emoji) > MAX_EMOJI or any(ch.isspace() for ch in emoji):
        raise InvalidValue(f"emoji must be 1 to {MAX_EMOJI} characters with no spaces")
    return emoji


class Message(ChorusAggregate):
    """A message in a channel, with its edits, deletion and reactions."""

    stream_kind = StreamKind(
        "message", CHANNEL_READERS, workspace="workspace_id", channel="channel_id"
    )

    @classmethod
    @caused
    def send(
        cls,
        id: UUID,
        channel: Channel,
        workspace: Workspace | None,
        text: str,
        mentions: list[str],
        reply_to: Message | None,
        cause: Cause,
    ) -> Message:
        """``mentions`` are the user ids the caller resolved from ``parse_mentions``."""
        author = cause.actor
        channel.check_can_post(author, workspace)
        if reply_to is not None:
            if reply_to.channel_id != channel.id:
                # Worded as for an unknown id: a message elsewhere is none of the author's
                # business, not even that it exists.
                raise NotFound("unknown reply_to message")
            if reply_to.deleted:
                raise MessageDeleted("cannot reply to a deleted message")
        return cls(
            id=id,
            channel_id=channel.id,
            workspace_id=channel.workspace_id,
            author_id=author,
            text=check_text(text),
            mentions=mentions[:MAX_MENTIONS],
            reply_to=None if reply_to is None else reply_to.id,
        )

    @event("MessageSent")
    def __init__(
        self,
        id: UUID,
        channel_id: UUID,
        workspace_id: UUID | None,
        author_id: str,
        text: str,
        mentions: list[str],
        reply_to: UUID | None,
    ) -> None:
        self.channel_id = channel_id
        self.workspace_id = workspace_id
        self.author_id = author_id
        self.text = text
        self.mentions = mentions
        self.reply_to = reply_to
        self.deleted = False
        self.reactions: dict[str, set[str]] = {}

    def _check_not_deleted(self) -> None:
        if self.deleted:
            raise MessageDeleted("the message was deleted")

    @caused
    def edit(
        self,
        text: str,
        mentions: list[str],
        channel: Channel,
        workspace: Workspace | None,
        cause: Cause,
        expected_version: int | None = None,
    ) -> None:
        """``expected_version`` is the version the author's client last saw: an edit made
        on an older version is refused rather than silently replacing newer changes."""
        actor = cause.actor
        channel.check_can_view(actor, workspace)
        self._check_not_deleted()
        if actor != self.author_id:
            raise PermissionDenied("only the author can edit a message")
        if expected_version is not None and expected_version != self.version:
            raise Conflict(
                f"the message is at version {self.version}, not {expected_version}: reload it"
            )
        # An archived channel is read-only, and an author who may no longer post may no
        # longer rewrite what they posted.
        channel.check_can_post(actor, workspace)
        new_text = check_text(text)
        if new_text == self.text:
            raise Conflict("the text is unchanged")
        self._edited(
            text=new_text,
            mentions=mentions[:MAX_MENTIONS],
        )

    @event("MessageEdited")
    def _edited(self, text: str, mentions: list[str]) -> None:
        self.text = text
        self.mentions = mentions

    @caused
    def delete(self, channel: Channel, workspace: Workspace | None, cause: Cause) -> None:
        """Deletes the message. Where "deleted means erased" (the workspace's setting, on
        unless turned off; always for a channel outside a workspace) the deletion says so
        (``text_erased``), and storing it destroys the data keys of every text the message
        had (infrastructure/serialisation.py: ``SHREDS``)."""
        actor = cause.actor
        channel.check_can_view(actor, workspace)
        self._check_not_deleted()
        if actor != self.author_id:
            channel.check_can_moderate(actor, workspace)
        self._deleted(text_erased=workspace is None or workspace.deleted_means_erased)

    @event("MessageDeleted")
    def _deleted(self, text_erased: bool | None = None) -> None:
        # None: deleted before the setting existed (nothing was erased then).
        self.deleted = True
        self.text = ""

    @caused
    def add_reaction(
        self, emoji: str, channel: Channel, workspace: Workspace | None, cause: Cause
    ) -> bool:
        """Returns False when the reaction was already there (nothing to record)."""
        actor = cause.actor
        channel.check_can_post(actor, workspace)
        self._check_not_deleted()
        emoji = check_emoji(emoji)
        if actor in self.reactions.get(emoji, set()):
            return False
        if emoji not in self.reactions and len(self.reactions) >= MAX_DISTINCT_REACTIONS:
            raise InvalidValue(f"a message has at most {MAX_DISTINCT_REACTIONS} distinct reactions")
        self._reaction_added(emoji=emoji, user_id=actor)
        return True

    @event("ReactionAdded")
    def _reaction_added(self, emoji: str, user_id: str) -> None:
        self.reactions.setdefault(emoji, set()).add(user_id)

    @caused
    def remove_reaction(
        self, emoji: str, channel: Channel, workspace: Workspace | None, cause: Cause
    ) -> bool:
        """Returns False when there was no such reaction (nothing to record)."""
        actor = cause.actor
        channel.check_can_view(actor, workspace)
        self._check_not_deleted()
        if actor not in self.reactions.get(emoji, set()):
            return False
        self._reaction_removed(emoji=emoji, user_id=actor)
        return True

    @event("ReactionRemoved")
    def _reaction_removed(self, emoji: str, user_id: str) -> None:
        users = self.reactions.get(emoji, set())
        users.discard(user_id)
        if not users:
            self.reactions.pop(emoji, None)
