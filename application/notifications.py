"""Notifications: the policies that turn events into notifications (and withdrawals), the
handlers of the commands they cause, the commands a user sends about their own inbox and
preferences, and the check that a notification may still reach its owner when delivered.

Every handler decides against the world as it is when it runs, not as it was when the
causing event happened: a user who can no longer read the channel, a message deleted or
edited, an author the user has blocked since, a preference that says no: nothing recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from application.channels import channel_with_workspace
from application.commands import (
    Command,
    MarkNotificationsRead,
    NotifyBroadcast,
    NotifyConversation,
    NotifyMemberJoined,
    NotifyMention,
    NotifyRoleGranted,
    SetNotificationPreference,
    WithdrawNotifications,
)
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from application.reactions import Occurred, Policy
from domain.base import Cause, ChorusAggregate, as_uuid
from domain.channels import KIND_DIRECT, Channel
from domain.errors import DomainError, InvalidValue, NotFound
from domain.identity import User
from domain.messages import Message, parse_mentions
from domain.notification_preferences import NotificationPreferences, preferences_id
from domain.notifications import (
    BROADCASTS,
    DIRECT_MESSAGE,
    MAX_BROADCAST,
    MEMBER_JOINED,
    MENTION,
    MESSAGE_KINDS,
    REPLY,
    ROLE_GRANTED,
    THREAD_REPLY,
    Inbox,
    MessageNotices,
    inbox_id,
    notices_id,
)
from domain.permissions import Permission
from domain.workspaces import Workspace

# -- policies -------------------------------------------------------------------------------


def broadcast_in(text: str) -> str | None:
    """``channel``, ``everyone`` or ``here`` when the text says ``@channel``, ``@everyone``
    or ``@here`` (the first of them, in that order)."""
    names = parse_mentions(text)
    return next((b for b in BROADCASTS if b in names), None)


def mentioned(occurred: Occurred) -> list[Command]:
    """One notification per user a sent message mentions (the author aside), then one for
    ``@channel``/``@everyone``. The mentions are the user ids resolved when the message was
    sent (readers of the channel then)."""
    sent = occurred.event
    message_id = str(sent.originator_id)
    commands: list[Command] = [
        NotifyMention(user_id=user_id, message_id=message_id, position=occurred.position)
        for user_id in sent.mentions
        if user_id != sent.author_id
    ]
    if broadcast_in(sent.text or "") is not None:
        commands.append(NotifyBroadcast(message_id=message_id, position=occurred.position))
    return commands


MENTIONS = Policy(
    name="mentions",
    handles=(getattr(Message, "MessageSent"),),  # noqa: B009 (made by eventsourcing)
    react=mentioned,
)


def conversed(occurred: Occurred) -> list[Command]:
    """A reply, or a message in a direct channel (which belongs to no workspace), tells the
    people it is for; who they are is decided when the command runs."""
    sent = occurred.event
    if sent.reply_to is None and sent.workspace_id is not None:
        return []
    return [NotifyConversation(message_id=str(sent.originator_id), position=occurred.position)]


CONVERSATIONS = Policy(
    name="conversations",
    handles=(getattr(Message, "MessageSent"),),  # noqa: B009
    react=conversed,
)


def _opens_no_stream(occurred: Occurred) -> bool:
    """An edit, a deletion, a join or a grant is never a stream's first event: one that is
    was written around the application (a broken or foreign stream) and concerns nobody."""
    return int(getattr(occurred.event, "originator_version", 0)) > 1


def changed(occurred: Occurred) -> list[Command]:
    """A deleted message withdraws every notification about it; an edited one those whose
    mention it dropped."""
    if not _opens_no_stream(occurred):
        return []
    return [
        WithdrawNotifications(
            message_id=str(occurred.event.originator_id), position=occurred.position
        )
    ]


WITHDRAWALS = Policy(
    name="withdrawals",
    handles=(
        getattr(Message, "MessageEdited"),  # noqa: B009
        getattr(Message, "MessageDeleted"),  # noqa: B009
    ),
    react=changed,
)


def membership(occurred: Occurred) -> list[Command]:
    """Someone joined a workspace (its owners are told: an invite is a code, addressed to
    nobody, so there is no "you were invited" to tell), or was granted a role (they are)."""
    e = occurred.event
    if not _opens_no_stream(occurred):
        return []
    workspace_id = str(e.originator_id)
    if type(e).__name__ == "MemberJoined":
        return [
            NotifyMemberJoined(
                workspace_id=workspace_id, user_id=e.user_id, position=occurred.position
            )
        ]
    return [
        NotifyRoleGranted(
            workspace_id=workspace_id,
            user_id=e.user_id,
            role=e.role,
            granted_by=e.actor_id or "",
            position=occurred.position,
        )
    ]


MEMBERSHIPS = Policy(
    name="memberships",
    handles=(
        getattr(Workspace, "MemberJoined"),  # noqa: B009
        getattr(Workspace, "RoleGranted"),  # noqa: B009
    ),
    react=membership,
)

POLICIES = (MENTIONS, CONVERSATIONS, WITHDRAWALS, MEMBERSHIPS)


# -- handlers of the reactions' commands ------------------------------------------------------

HANDLERS = HandlerTable()
NOTHING: dict[str, Any] = {"notified": False}


class _Batch:
    """The aggregates one decision changes, each loaded once."""

    def __init__(self, app: DecisionContext, cause: Cause) -> None:
        self.app = app
        self.cause = cause
        self.changed: dict[UUID, ChorusAggregate] = {}

    def inbox(self, user_id: str) -> Inbox:
        uid = inbox_id(user_id)
        found = self.changed.get(uid)
        if isinstance(found, Inbox):
            return found
        inbox = (
            self.app.load(Inbox, uid) if self.app.exists(uid) else Inbox.open(user_id, self.cause)
        )
        self.changed[uid] = inbox
        return inbox

    def notices(self, message_id: UUID) -> MessageNotices:
        uid = notices_id(message_id)
        found = self.changed.get(uid)
        if isinstance(found, MessageNotices):
            return found
        if self.app.exists(uid):
            notices = self.app.load(MessageNotices, uid)
        else:
            notices = MessageNotices.open(message_id, self.cause)
        self.changed[uid] = notices
        return notices

    def decision(self) -> Decision:
        changed = [a for a in self.changed.values() if a.pending_events]
        if not changed:
            return Decision([], NOTHING)
        return Decision(changed, {"notified": True}, status=201)


def _preferences(app: DecisionContext, user_id: str) -> NotificationPreferences | None:
    uid = preferences_id(user_id)
    return app.load(NotificationPreferences, uid) if app.exists(uid) else None


def _wants(
    app: DecisionContext,
    user_id: str,
    kind: str,
    workspace_id: UUID | None,
    channel_id: UUID | None,
    direct: bool = False,
) -> bool:
    preferences = _preferences(app, user_id)
    return preferences is None or preferences.allows(
        kind, workspace_id, channel_id, app.clock(), direct
    )


def _hears_from(app: DecisionContext, user_id: str, author_id: str) -> bool:
    try:
        return app.load(User, user_id, "user").hears_from(author_id)
    except NotFound:
        return False


@HANDLERS.on(NotifyMention)
def notify_mention(app: DecisionContext, cmd: NotifyMention, cause: Cause) -> Decision:
    nothing = Decision([], NOTHING)
    try:
        message = app.load(Message, cmd.message_id)
        if message.deleted or cmd.user_id not in message.mentions:
            return nothing
        channel, _ = channel_with_workspace(app, str(message.channel_id), cmd.user_id)
        if not _hears_from(app, cmd.user_id, message.author_id):
            return nothing
    except NotFound:
        return nothing
    if channel.kind == KIND_DIRECT:
        return nothing  # a direct message notifies as such (``notify_conversation``)
    if not _wants(app, cmd.user_id, MENTION, message.workspace_id, channel.id):
        return nothing
    batch = _Batch(app, cause)
    if not batch.inbox(cmd.user_id).notify_mention(
        message.id, channel.id, message.workspace_id, message.author_id, cmd.position, cause
    ):
        return nothing
    batch.notices(message.id).told(cmd.user_id, MENTION, cause)
    return batch.decision()


@HANDLERS.on(NotifyBroadcast)
def notify_broadcast(app: DecisionContext, cmd: NotifyBroadcast, cause: Cause) -> Decision:
    """Every reader of the channel (at most ``MAX_BROADCAST``, in id order), if the author
    holds ``mention_everyone`` there when this runs; those the message names are told by
    their own mention. A direct channel has no broadcast (its message notifies anyway)."""
    try:
        message = app.load(Message, cmd.message_id)
        channel = app.load(Channel, message.channel_id)
    except NotFound:
        return Decision([], NOTHING)
    word = broadcast_in(message.text or "")
    if message.deleted or word is None or channel.workspace_id is None:
        return Decision([], NOTHING)
    workspace = app.load(Workspace, channel.workspace_id)
    author = message.author_id
    if Permission.MENTION_EVERYONE not in workspace.permissions_of(author):
        return Decision([], NOTHING)
    audience = [
        u
        for u in sorted(workspace.members)
        if u != author and u not in message.mentions and channel.can_view(u, workspace)
    ]
    if word == "here":
        # Those with a session open now, when this runs (a rerun after a crash asks again).
        online = set() if app.directory is None else app.directory.online(audience)
        audience = [u for u in audience if u in online]
    audience = audience[:MAX_BROADCAST]
    batch = _Batch(app, cause)
    for user_id in audience:
        if not (
            _hears_from(app, user_id, author)
            and _wants(app, user_id, MENTION, workspace.id, channel.id)
        ):
            continue
        if batch.inbox(user_id).notify(
            MENTION,
            workspace_id=workspace.id,
            channel_id=channel.id,
            message_id=message.id,
            from_id=author,
            position=cmd.position,
            cause=cause,
            detail=word,
        ):
            batch.notices(message.id).told(user_id, MENTION, cause)
    return batch.decision()


@HANDLERS.on(NotifyConversation)
def notify_conversation(app: DecisionContext, cmd: NotifyConversation, cause: Cause) -> Decision:
    """A direct message tells the channel's other members; a reply tells the author of the
    message it replies to ("reply") and everyone else who took part in that thread (wrote
    it or replied to it: "thread_reply"). Each must still be able to read the channel, hear
    from the author and want it; the replier joins the thread either way."""
    try:
        message = app.load(Message, cmd.message_id)
        channel = app.load(Channel, message.channel_id)
    except NotFound:
        return Decision([], NOTHING)
    if message.deleted:
        return Decision([], NOTHING)
    workspace = None if channel.workspace_id is None else app.load(Workspace, channel.workspace_id)
    author = message.author_id
    batch = _Batch(app, cause)
    direct = channel.kind == KIND_DIRECT
    told: dict[str, str] = {}
    if direct:
        told = {m: DIRECT_MESSAGE for m in sorted(channel.member_ids) if m != author}
    elif message.reply_to is not None:
        try:
            parent = app.load(Message, message.reply_to)
        except NotFound:
            parent = None
        if parent is not None:
            thread = batch.notices(parent.id)
            told = {p: THREAD_REPLY for p in thread.participants if p != author}
            if parent.author_id != author:
                told[parent.author_id] = REPLY
            thread.join_thread(parent.author_id, cause)
            thread.join_thread(author, cause)
    for user_id, kind in told.items():
        if not (
            channel.can_view(user_id, workspace)
            and _hears_from(app, user_id, author)
            and _wants(app, user_id, kind, message.workspace_id, channel.id, direct)
        ):
            continue
        if batch.inbox(user_id).notify(
            kind,
            workspace_id=message.workspace_id,
            channel_id=channel.id,
            message_id=message.id,
            from_id=author,
            position=cmd.position,
            cause=cause,
        ):
            batch.notices(message.id).told(user_id, kind, cause)
    return batch.decision()


@HANDLERS.on(WithdrawNotifications)
def withdraw_notifications(
    app: DecisionContext, cmd: WithdrawNotifications, cause: Cause
) -> Decision:
    """Deleted: every notification about the message goes. Edited: the mentions of those it
    no longer mentions."""
    uid = notices_id(cmd.message_id)
    if not app.exists(uid):
        return Decision([], NOTHING)
    try:
        message = app.load(Message, cmd.message_id)
    except NotFound:
        return Decision([], NOTHING)
    batch = _Batch(app, cause)
    notices = batch.notices(message.id)
    for user_id in sorted(notices.notified):
        if message.deleted:
            kinds = list(MESSAGE_KINDS)
        elif user_id not in message.mentions and broadcast_in(message.text or "") is None:
            kinds = [MENTION]
        else:
            continue
        had = notices.untold(user_id, kinds, cause)
        if had:
            batch.inbox(user_id).withdraw(message.id, had, cmd.position, cause)
    return batch.decision()


@HANDLERS.on(NotifyMemberJoined)
def notify_member_joined(app: DecisionContext, cmd: NotifyMemberJoined, cause: Cause) -> Decision:
    try:
        workspace = app.load(Workspace, cmd.workspace_id)
    except NotFound:
        return Decision([], NOTHING)
    if not workspace.is_member(cmd.user_id):
        return Decision([], NOTHING)  # left (or was removed) since
    batch = _Batch(app, cause)
    for owner in sorted(workspace.owners()):
        if _wants(app, owner, MEMBER_JOINED, workspace.id, None):
            batch.inbox(owner).notify(
                MEMBER_JOINED,
                workspace_id=workspace.id,
                channel_id=None,
                message_id=None,
                from_id=cmd.user_id,
                position=cmd.position,
                cause=cause,
            )
    return batch.decision()


@HANDLERS.on(NotifyRoleGranted)
def notify_role_granted(app: DecisionContext, cmd: NotifyRoleGranted, cause: Cause) -> Decision:
    try:
        workspace = app.load(Workspace, cmd.workspace_id)
    except NotFound:
        return Decision([], NOTHING)
    if cmd.role not in workspace.members.get(cmd.user_id, set()):
        return Decision([], NOTHING)  # revoked since, or no longer a member
    if not _wants(app, cmd.user_id, ROLE_GRANTED, workspace.id, None):
        return Decision([], NOTHING)
    batch = _Batch(app, cause)
    batch.inbox(cmd.user_id).notify(
        ROLE_GRANTED,
        workspace_id=workspace.id,
        channel_id=None,
        message_id=None,
        from_id=cmd.granted_by,
        position=cmd.position,
        cause=cause,
        detail=cmd.role,
    )
    return batch.decision()


# -- the user's own commands ------------------------------------------------------------------


@HANDLERS.on(MarkNotificationsRead)
def mark_read(app: DecisionContext, cmd: MarkNotificationsRead, cause: Cause) -> Decision:
    if (cmd.ids is None) == (cmd.up_to is None):
        raise InvalidValue("give ids or up_to")
    uid = inbox_id(cause.actor)
    if not app.exists(uid):
        return Decision([])  # nothing was ever notified: nothing to read
    inbox = app.load(Inbox, uid)
    if cmd.ids is not None:
        ids = [str(_notification_uuid(i)) for i in cmd.ids]
        inbox.mark_read(ids, cause)
    elif cmd.up_to is not None:
        inbox.mark_read_up_to(cmd.up_to, cause)
    return Decision([inbox] if inbox.pending_events else [])


def _notification_uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidValue("ids are notification ids") from None


@HANDLERS.on(SetNotificationPreference)
def set_preference(app: DecisionContext, cmd: SetNotificationPreference, cause: Cause) -> Decision:
    """Only for a workspace the user belongs to or a channel they can read: another's is
    "unknown", as an id that does not exist."""
    user = cause.actor
    target_id = as_uuid(cmd.target_id)
    if cmd.target == "workspace":
        workspace = app.load(Workspace, target_id)
        workspace.check_member(user)
    elif cmd.target == "channel":
        channel_with_workspace(app, str(target_id), user)
    else:
        raise InvalidValue("target must be workspace or channel")
    until = None
    if cmd.muted_until is not None:
        try:
            until = datetime.fromisoformat(cmd.muted_until)
        except ValueError:
            raise InvalidValue("muted_until must be an ISO 8601 time with its zone") from None
    uid = preferences_id(user)
    if app.exists(uid):
        preferences = app.load(NotificationPreferences, uid)
    else:
        preferences = NotificationPreferences.open(user, cause)
    if not preferences.change(cmd.target, target_id, cmd.level, until, cmd.unmute, cause):
        return Decision([])
    return Decision([preferences])


# -- delivery ---------------------------------------------------------------------------------


def deliverable(app: DecisionContext, user_id: str, data: Mapping[str, Any]) -> bool:
    """Whether a notification event (its stored fields) may reach its owner now: they can
    still read its channel, or are still a member of its workspace. Asked on every delivery
    (``/ws``; the REST inbox asks the read models the same), not only when it was made."""
    try:
        channel_id = data.get("channel_id")
        if channel_id is not None:
            channel_with_workspace(app, str(channel_id), user_id)
            return True
        workspace_id = data.get("workspace_id")
        if workspace_id is not None:
            app.load(Workspace, str(workspace_id)).check_member(user_id)
    except DomainError:  # unknown, not a member, may not view: all mean "not for you"
        return False
    return True
