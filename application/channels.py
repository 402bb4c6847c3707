"""Handlers of channel commands, direct messages included."""

from __future__ import annotations

from uuid import UUID, uuid4

from application.commands import (
    AddChannelMember,
    ArchiveChannel,
    ChangeChannel,
    CreateChannel,
    DeleteChannel,
    LeaveGroupDirectMessage,
    OpenDirectMessage,
    OpenGroupDirectMessage,
    RemoveChannelMember,
    UnarchiveChannel,
)
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause, as_uuid
from domain.channels import KIND_DIRECT, MAX_GROUP, Channel, legacy_direct_channel_id
from domain.errors import InvalidValue, NotFound
from domain.identity import User, check_can_add, check_can_message
from domain.indexes import DirectChannelPair, direct_pair_id
from domain.workspaces import Workspace

# This context's command handlers, joined with the others' in application/handlers.py.
HANDLERS = HandlerTable()


def channel_with_workspace(
    app: DecisionContext, channel_id: str, user_id: str
) -> tuple[Channel, Workspace | None]:
    """A channel the user may see, and its workspace (None for direct messages)."""
    channel = app.load(Channel, channel_id)
    workspace = None if channel.workspace_id is None else app.load(Workspace, channel.workspace_id)
    channel.check_can_view(user_id, workspace)
    return channel, workspace


@HANDLERS.on(CreateChannel)
def create_channel(app: DecisionContext, cmd: CreateChannel, cause: Cause) -> Decision:
    workspace = app.load(Workspace, cmd.workspace_id)
    workspace.check_member(cause.actor)
    channel = Channel.create(uuid4(), workspace, cmd.name, cmd.private, cmd.topic, cause)
    return Decision([channel], {"id": str(channel.id)}, status=201)


@HANDLERS.on(ChangeChannel)
def change_channel(app: DecisionContext, cmd: ChangeChannel, cause: Cause) -> Decision:
    channel, workspace = channel_with_workspace(app, cmd.channel_id, cause.actor)
    channel.change(cmd.name, cmd.topic, workspace, cause)
    return Decision([channel])


@HANDLERS.on(ArchiveChannel)
def archive_channel(app: DecisionContext, cmd: ArchiveChannel, cause: Cause) -> Decision:
    channel, workspace = channel_with_workspace(app, cmd.channel_id, cause.actor)
    channel.archive(workspace, cause)
    return Decision([channel])


@HANDLERS.on(UnarchiveChannel)
def unarchive_channel(app: DecisionContext, cmd: UnarchiveChannel, cause: Cause) -> Decision:
    channel, workspace = channel_with_workspace(app, cmd.channel_id, cause.actor)
    channel.unarchive(workspace, cause)
    return Decision([channel])


@HANDLERS.on(DeleteChannel)
def delete_channel(app: DecisionContext, cmd: DeleteChannel, cause: Cause) -> Decision:
    channel, workspace = channel_with_workspace(app, cmd.channel_id, cause.actor)
    channel.delete(workspace, cause)
    return Decision([channel])


def _channel_for_members(
    app: DecisionContext, channel_id: str, user_id: str
) -> tuple[Channel, Workspace | None]:
    """``channel_with_workspace``, but a private channel is within its workspace owners'
    reach for managing members (Channel._check_can_manage_members) even unseen."""
    channel = app.load(Channel, channel_id)
    workspace = None if channel.workspace_id is None else app.load(Workspace, channel.workspace_id)
    if workspace is None or user_id not in workspace.owners():
        channel.check_can_view(user_id, workspace)
    return channel, workspace


@HANDLERS.on(AddChannelMember)
def add_channel_member(app: DecisionContext, cmd: AddChannelMember, cause: Cause) -> Decision:
    channel, workspace = _channel_for_members(app, cmd.channel_id, cause.actor)
    user = app.load(User, cmd.user_id, "user")
    check_can_add(cause.actor, user)
    channel.add_member(str(user.id), workspace, cause)
    return Decision([channel])


@HANDLERS.on(RemoveChannelMember)
def remove_channel_member(app: DecisionContext, cmd: RemoveChannelMember, cause: Cause) -> Decision:
    channel, workspace = _channel_for_members(app, cmd.channel_id, cause.actor)
    user = app.load(User, cmd.user_id, "user")
    channel.remove_member(str(user.id), workspace, cause)
    return Decision([channel])


@HANDLERS.on(OpenDirectMessage)
def open_direct_message(app: DecisionContext, cmd: OpenDirectMessage, cause: Cause) -> Decision:
    actor = cause.actor
    other = app.load(User, cmd.user_id, "user")
    channel_id = direct_channel_of(app, actor, str(other.id))
    opened = channel_id is not None
    if str(other.id) != actor:
        if not opened and not _share_a_workspace(app, actor, str(other.id), cmd.workspace_id):
            # Someone you share no workspace with does not exist for you.
            raise NotFound("unknown user")
        check_can_message(app.load(User, actor, "user"), other)
    if channel_id is not None:
        return Decision([], {"channel_id": str(channel_id)})
    # A random id, which nobody can compute; the pair index, saved in the same transaction,
    # is what two opens at once (in any process) conflict on, and what finds it again.
    channel = Channel.open_direct(uuid4(), str(other.id), cause)
    pair = DirectChannelPair.pair(channel.id, sorted(channel.member_ids), cause)
    return Decision([channel, pair], {"channel_id": str(channel.id)}, status=201)


def direct_channel_of(app: DecisionContext, user_a: str, user_b: str) -> UUID | None:
    """The direct channel of two users: the one their pair index names, or one opened
    before pair indexes existed, at the id derived from the two (it has no index). One
    query when there is neither."""
    pair_id = direct_pair_id(user_a, user_b)
    legacy = legacy_direct_channel_id(user_a, user_b)
    present = app.existing([pair_id, legacy])
    if pair_id in present:
        return as_uuid(app.load(DirectChannelPair, pair_id, "channel").channel_id)
    if legacy in present and app.load(Channel, legacy).kind == KIND_DIRECT:
        return legacy
    return None


@HANDLERS.on(OpenGroupDirectMessage)
def open_group_direct_message(
    app: DecisionContext, cmd: OpenGroupDirectMessage, cause: Cause
) -> Decision:
    """Each other person must exist, share a workspace with the caller, and neither may have
    blocked the other; one who does not is "unknown", as an id that does not exist."""
    actor = cause.actor
    if len(cmd.user_ids) > MAX_GROUP:  # before anything is loaded for them
        raise InvalidValue(f"a group direct message has at most {MAX_GROUP} people")
    others = [str(as_uuid(u)) for u in cmd.user_ids]
    channel = Channel.open_group(uuid4(), others, cause)
    me = app.load(User, actor, "user")
    for other_id in others:
        other = app.load(User, other_id, "user")
        if not _share_a_workspace(app, actor, other_id, None):
            raise NotFound("unknown user")
        check_can_message(me, other)
    return Decision([channel], {"channel_id": str(channel.id)}, status=201)


@HANDLERS.on(LeaveGroupDirectMessage)
def leave_group_direct_message(
    app: DecisionContext, cmd: LeaveGroupDirectMessage, cause: Cause
) -> Decision:
    channel = app.load(Channel, cmd.channel_id)
    channel.leave_group(cause)
    return Decision([channel])


def _share_a_workspace(
    app: DecisionContext, user_a: str, user_b: str, workspace_id: str | None
) -> bool:
    """Whether both are members of the named workspace, or (none named) of one of those the
    directory suggests, as the Workspace aggregates say."""
    if workspace_id is not None:
        candidates = [workspace_id]
    elif app.directory is not None:
        candidates = app.directory.shared_workspaces(user_a, user_b)
    else:
        candidates = []
    for workspace_id in candidates:
        try:
            workspace = app.load(Workspace, workspace_id)
        except NotFound:
            continue
        if workspace.is_member(user_a) and workspace.is_member(user_b):
            return True
    return False
