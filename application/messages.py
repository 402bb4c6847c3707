"""Handlers of message commands."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import uuid4

from application.channels import channel_with_workspace
from application.commands import (
    AddReaction,
    DeleteMessage,
    EditMessage,
    RemoveReaction,
    SendMessage,
)
from application.decisions import Decision, handles
from application.identity import user_ids_of
from domain.base import Cause
from domain.channels import KIND_DIRECT, Channel
from domain.errors import NotFound
from domain.identity import User, check_can_message
from domain.messages import Message, parse_mentions
from domain.workspaces import Workspace

if TYPE_CHECKING:
    from application.chorus import Chorus


def _mentioned_user_ids(
    app: Chorus, text: str, channel: Channel, workspace: Workspace | None, author: str
) -> list[str]:
    """Mentions that name someone who can read the channel and has not blocked the author;
    the rest stay plain text."""
    found = []
    names = parse_mentions(text)
    ids = user_ids_of(app, names) if names else {}
    for username in names:
        found_id = ids.get(username)
        if found_id is None:
            continue
        user_id = str(found_id)
        if channel.can_view(user_id, workspace) and _hears_from(app, user_id, author):
            found.append(user_id)
    return found


def _hears_from(app: Chorus, user_id: str, author: str) -> bool:
    try:
        return app.load(User, user_id, "user").hears_from(author)
    except NotFound:
        return False


def _check_direct(app: Chorus, channel: Channel, author: str) -> None:
    """In a direct channel, neither of the two may have blocked the other."""
    if channel.kind != KIND_DIRECT:
        return
    others = [m for m in channel.member_ids if m != author]
    me = app.load(User, author, "user")
    for other in others:
        check_can_message(me, app.load(User, other, "user"))


def _message_in_context(
    app: Chorus, message_id: str, user_id: str
) -> tuple[Message, Channel, Workspace | None]:
    message = app.load(Message, message_id)
    try:
        channel, workspace = channel_with_workspace(app, str(message.channel_id), user_id)
    except NotFound:
        # A message of a channel the user cannot read answers as an unknown id does.
        raise NotFound("unknown message") from None
    return message, channel, workspace


@handles(SendMessage)
def send_message(app: Chorus, cmd: SendMessage, cause: Cause) -> Decision:
    channel, workspace = channel_with_workspace(app, cmd.channel_id, cause.actor_id or "")
    _check_direct(app, channel, cause.actor_id or "")
    reply_to = None if cmd.reply_to is None else app.load(Message, cmd.reply_to, "reply_to message")
    mentions = _mentioned_user_ids(app, cmd.text, channel, workspace, cause.actor_id or "")
    message = Message.send(uuid4(), channel, workspace, cmd.text, mentions, reply_to, cause)
    return Decision([message], {"id": str(message.id)}, status=201)


@handles(EditMessage)
def edit_message(app: Chorus, cmd: EditMessage, cause: Cause) -> Decision:
    message, channel, workspace = _message_in_context(app, cmd.message_id, cause.actor_id or "")
    mentions = _mentioned_user_ids(app, cmd.text, channel, workspace, cause.actor_id or "")
    message.edit(cmd.text, mentions, channel, workspace, cause, cmd.expected_version)
    return Decision([message])


@handles(DeleteMessage)
def delete_message(app: Chorus, cmd: DeleteMessage, cause: Cause) -> Decision:
    message, channel, workspace = _message_in_context(app, cmd.message_id, cause.actor_id or "")
    message.delete(channel, workspace, cause)
    return Decision([message])


@handles(AddReaction)
def add_reaction(app: Chorus, cmd: AddReaction, cause: Cause) -> Decision:
    message, channel, workspace = _message_in_context(app, cmd.message_id, cause.actor_id or "")
    message.add_reaction(cmd.emoji, channel, workspace, cause)
    return Decision([message])


@handles(RemoveReaction)
def remove_reaction(app: Chorus, cmd: RemoveReaction, cause: Cause) -> Decision:
    message, channel, workspace = _message_in_context(app, cmd.message_id, cause.actor_id or "")
    message.remove_reaction(cmd.emoji, channel, workspace, cause)
    return Decision([message])
