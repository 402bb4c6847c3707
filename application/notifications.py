"""Notifications: the mention policy and the handler of the command it causes."""

from __future__ import annotations

from application.channels import channel_with_workspace
from application.commands import Command, NotifyMention
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from application.reactions import Occurred, Policy
from domain.base import Cause
from domain.errors import NotFound
from domain.identity import User
from domain.messages import Message
from domain.notifications import Inbox, inbox_id


def mentioned(occurred: Occurred) -> list[Command]:
    """One notification per user a sent message mentions (the author aside). The mentions
    are the user ids resolved when the message was sent (readers of the channel then)."""
    sent = occurred.event
    return [
        NotifyMention(
            user_id=user_id, message_id=str(sent.originator_id), position=occurred.position
        )
        for user_id in sent.mentions
        if user_id != sent.author_id
    ]


MENTIONS = Policy(
    name="mentions",
    handles=(getattr(Message, "MessageSent"),),  # noqa: B009 (made by eventsourcing)
    react=mentioned,
)


HANDLERS = HandlerTable()


@HANDLERS.on(NotifyMention)
def notify_mention(app: DecisionContext, cmd: NotifyMention, cause: Cause) -> Decision:
    """Decided against the world as it is now, not as it was when the message was sent: a
    user who can no longer read the channel, a message deleted or edited to drop the
    mention, an author the user has blocked since: no notification (nothing recorded)."""
    nothing = Decision([], {"notified": False})
    try:
        message = app.load(Message, cmd.message_id)
        if message.deleted or cmd.user_id not in message.mentions:
            return nothing
        channel, _ = channel_with_workspace(app, str(message.channel_id), cmd.user_id)
        if not app.load(User, cmd.user_id, "user").hears_from(message.author_id):
            return nothing
    except NotFound:
        return nothing
    inbox = _inbox(app, cmd.user_id, cause)
    if not inbox.notify_mention(
        message.id, channel.id, message.workspace_id, message.author_id, cmd.position, cause
    ):
        return nothing
    return Decision([inbox], {"notified": True}, status=201)


def _inbox(app: DecisionContext, user_id: str, cause: Cause) -> Inbox:
    """The user's inbox, opened with its first notification."""
    uid = inbox_id(user_id)
    if app.exists(uid):
        return app.load(Inbox, uid)
    return Inbox.open(user_id, cause)
