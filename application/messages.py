"""Handlers of message commands."""

from __future__ import annotations

from uuid import uuid4

from application.channels import channel_with_workspace
from application.commands import (
    AddReaction,
    DeleteMessage,
    EditMessage,
    RemoveReaction,
    SendMessage,
)
from application.decisions import Decision, HandlerTable
from application.identity import user_ids_of
from application.ports import DecisionContext
from domain.base import Cause
from domain.channels import KIND_DIRECT, Channel
from domain.errors import NotFound
from domain.identity import User, check_can_message
from domain.messages import Message, parse_mentions
from domain.workspaces import Workspace

# This context's command handlers, joined with the others' in application/handlers.py.
HANDLERS = HandlerTable()


def _mentioned_user_ids(
    app: DecisionContext, text: str, channel: Channel, workspace: Workspace | None, author: str
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


def _hears_from(app: DecisionContext, user_id: str, author: str) -> bool:
    try:
        return app.load(User, user_id, "user").hears_from(author)
    except NotFound:
        return False


def _check_direct(app: DecisionContext, channel: Channel, author: str) -> None:
    """In a direct channel, neither of the two may have blocked the other."""
    if channel.kind != KIND_DIRECT:
        return
    others = [m for m in channel.member_ids if m != author]
    me = app.load(User, author, "user")
    for other in others:
        check_can_message(me, app.load(User, other, "user"))


def _message_in_context(
    app: DecisionContext, message_id: str, user_id: str
) -> tuple[Message, Channel, Workspace | None]:
    message = app.load(Message, message_id)
    try:
        channel, workspace = channel_with_workspace(app, str(message.channel_id), user_id)
    except NotFound:
        # A message of a channel the user cannot read answers as an unknown id does.
        raise NotFound("unknown message") from None
    return message, channel, workspace


@HANDLERS.on(SendMessage)
def send_message(app: DecisionContext, cmd: SendMessage, cause: Cause) -> Decision:
    channel, workspace = channel_with_workspace(app, cmd.channel_id, cause.actor)
    _check_direct(app, channel, cause.actor)
    reply_to = None if cmd.reply_to is None else app.load(Message, cmd.reply_to, "reply_to message")
    mentions = _mentioned_user_ids(app, cmd.text, channel, workspace, cause.actor)
    message = Message.send(uuid4(), channel, workspace, cmd.text, mentions, reply_to, cause)
    return Decision([message], {"id": str(message.id)}, status=201)


@HANDLERS.on(EditMessage)
def edit_message(app: DecisionContext, cmd: EditMessage, cause: Cause) -> Decision:
    message, channel, workspace = _message_in_context(app, cmd.message_id, cause.actor)
    mentions = _mentioned_user_ids(app, cmd.text, channel, workspace, cause.actor)
    message.edit(cmd.text, mentions, channel, workspace, cause, cmd.expected_version)
    return Decision([message])


@HANDLERS.on(DeleteMessage)
def delete_message(app: DecisionContext, cmd: DeleteMessage, cause: Cause) -> Decision:
    message, channel, workspace = _message_in_context(app, cmd.message_id, cause.actor)
    message.delete(channel, workspace, cause)
    return Decision([message])


@HANDLERS.on(AddReaction)
def add_reaction(app: DecisionContext, cmd: AddReaction, cause: Cause) -> Decision:
    message, channel, workspace = _message_in_context(app, cmd.message_id, cause.actor)
    message.add_reaction(cmd.emoji, channel, workspace, cause)
    return Decision([message])


@HANDLERS.on(RemoveReaction)
def remove_reaction(app: DecisionContext, cmd: RemoveReaction, cause: Cause) -> Decision:
    message, channel, workspace = _message_in_context(app, cmd.message_id, cause.actor)
    message.remove_reaction(cmd.emoji, channel, workspace, cause)
    return Decision([message])
