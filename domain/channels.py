"""Channels: public or private rooms of a workspace, and direct-message channels."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import (
    AlreadyAMember,
    ChannelArchived,
    Conflict,
    InvalidValue,
    NotAMember,
    NotFound,
    PermissionDenied,
)
from domain.rules import MAX_CHANNEL_NAME, MAX_TOPIC, bounded_text, shown_name
from domain.scopes import CHANNEL_READERS, SELF, StreamKind
from domain.workspaces import Workspace

_DIRECT = uuid5(NAMESPACE_URL, "chorus:direct-messages")

KIND_CHANNEL = "channel"
KIND_DIRECT = "direct"
# People in a group direct message, its creator included.
MIN_GROUP = 3
MAX_GROUP = 10


def legacy_direct_channel_id(user_a: str, user_b: str) -> UUID:
    """The id a direct channel opened before issue 17 got: derived from its two members, so
    anyone could compute it. Those channels keep their ids; new ones are random and found
    again through their pair index (domain/indexes.py)."""
    first, second = sorted((user_a, user_b))
    return uuid5(_DIRECT, f"{first}:{second}")


class Channel(ChorusAggregate):
    """A channel. Private channels (and direct messages) list their members explicitly;
    public ones are open to every member of the workspace with ``view_channels``."""

    stream_kind = StreamKind(
        "channel",
        CHANNEL_READERS,
        workspace="workspace_id",
        channel=SELF,
        # ChannelDeleted names no member: it ends every reader's access (issue 20).
        access_events=("ChannelMemberAdded", "ChannelMemberRemoved", "ChannelDeleted"),
    )

    @classmethod
    @caused
    def create(
        cls,
        id: UUID,
        workspace: Workspace,
        name: str,
        private: bool,
        topic: str | None,
        cause: Cause,
    ) -> Channel:
        actor = cause.actor
        workspace.check_permission(actor, "manage_channels")
        return cls(
            id=id,
            workspace_id=workspace.id,
            name=shown_name(name, field="name", max_length=MAX_CHANNEL_NAME),
            private=private,
            topic=_topic(topic),
            kind=KIND_CHANNEL,
            member_ids=[actor] if private else [],
            member_tenures={actor: workspace.tenure_of(actor) or 1} if private else {},
        )

    @classmethod
    @caused
    def open_direct(cls, id: UUID, other_user_id: str, cause: Cause) -> Channel:
        actor = cause.actor_id
        if actor is None:
            raise PermissionDenied("this needs a signed-in user")
        if other_user_id == actor:
            raise InvalidValue("a direct message needs another person")
        return cls(
            id=id,
            workspace_id=None,
            name="",
            private=True,
            topic="",
            kind=KIND_DIRECT,
            member_ids=sorted([actor, other_user_id]),
        )

    @classmethod
    @caused
    def open_group(cls, id: UUID, other_user_ids: list[str], cause: Cause) -> Channel:
        """A group direct message: the caller and ``MIN_GROUP - 1`` to ``MAX_GROUP - 1``
        others, each named once (whether each may be messaged is the handler's to check)."""
        actor = cause.actor
        others = list(other_user_ids)
        if len(set(others)) != len(others) or actor in others:
            raise InvalidValue("name each other person once, and not yourself")
        if not MIN_GROUP - 1 <= len(others) <= MAX_GROUP - 1:
            raise InvalidValue(
                f"a group direct message has {MIN_GROUP} to {MAX_GROUP} people, you included"
            )
        return cls(
            id=id,
            workspace_id=None,
            name="",
            private=True,
            topic="",
            kind=KIND_DIRECT,
            member_ids=sorted([actor, *others]),
            group=True,
        )

    @event("ChannelCreated")
    def __init__(
        self,
        id: UUID,
        workspace_id: UUID | None,
        name: str,
        private: bool,
        topic: str,
        kind: str,
        member_ids: list[str],
        member_tenures: dict[str, int] | None = None,
        group: bool = False,
    ) -> None:
        self.workspace_id = workspace_id
        # A group direct message (open_group), which members may leave; a two-person one
        # is for good.
        self.group = group
        self.name = name
        self.private = private
        self.topic = topic
        self.kind = kind
        self.member_ids = set(member_ids)
        # The workspace tenure (Workspace.tenure_of) each private-channel member was added in;
        # events stored before tenures were recorded count as the first.
        self.tenures: dict[str, int] = dict(member_tenures or {})
        self.archived = False

    # -- access ------------------------------------------------------------------------------

    @property
    def deleted(self) -> bool:
        # Snapshots taken before deletion existed lack the attribute.
        return bool(self.__dict__.get("is_deleted", False))

    def can_view(self, user_id: str, workspace: Workspace | None) -> bool:
        if self.deleted:
            return False
        if self.kind == KIND_DIRECT:
            return user_id in self.member_ids
        if workspace is None or "view_channels" not in workspace.permissions_of(user_id):
            return False
        return not self.private or self.is_member(user_id, workspace)

    def is_member(self, user_id: str, workspace: Workspace | None) -> bool:
        """Listed in the channel, in the user's current membership of the workspace: one who
        left, was kicked or banned and came back is not a member until added again."""
        if user_id not in self.member_ids:
            return False
        if self.kind == KIND_DIRECT:
            return True
        tenure = None if workspace is None else workspace.tenure_of(user_id)
        return tenure is not None and self._tenures().get(user_id, 1) == tenure

    def _tenures(self) -> dict[str, int]:
        # Snapshots taken before tenures were recorded lack the attribute.
        tenures: dict[str, int] = self.__dict__.setdefault("tenures", {})
        return tenures

    def check_can_view(self, user_id: str, workspace: Workspace | None) -> None:
        if not self.can_view(user_id, workspace):
            raise NotAMember("unknown channel")

    def check_can_post(self, user_id: str, workspace: Workspace | None) -> None:
        self.check_can_view(user_id, workspace)
        if self.archived:
            raise ChannelArchived("the channel is archived")
        if workspace is not None and "send_messages" not in workspace.permissions_of(user_id):
            raise PermissionDenied("missing permission 'send_messages'")

    def check_can_moderate(self, user_id: str, workspace: Workspace | None) -> None:
        self.check_can_view(user_id, workspace)
        if workspace is None or "manage_messages" not in workspace.permissions_of(user_id):
            raise PermissionDenied("missing permission 'manage_messages'")

    def _check_can_manage(self, actor: str, workspace: Workspace | None) -> None:
        if self.kind == KIND_DIRECT or workspace is None:
            raise PermissionDenied("direct-message channels cannot be changed")
        self.check_can_view(actor, workspace)
        workspace.check_permission(actor, "manage_channels")

    def _check_can_manage_members(self, actor: str, workspace: Workspace | None) -> None:
        """Channel managers who can read the channel, and the workspace's owners even when
        they cannot: a private channel whose members have all left would otherwise be out of
        everyone's reach, since coming back does not restore a membership."""
        if self.deleted:
            raise NotAMember("unknown channel")
        if workspace is not None and self.kind != KIND_DIRECT and actor in workspace.owners():
            return
        self._check_can_manage(actor, workspace)

    # -- changes -------------------------------------------------------------------------

    @caused
    def add_member(self, user_id: str, workspace: Workspace | None, cause: Cause) -> None:
        actor = cause.actor
        self._check_can_manage_members(actor, workspace)
        if not self.private:
            raise Conflict("public channels are open to every workspace member")
        assert workspace is not None
        if not workspace.is_member(user_id):
            raise NotFound("that user is not a member of the workspace")
        if self.is_member(user_id, workspace):
            raise AlreadyAMember("already a member of this channel")
        self._member_added(
            user_id=user_id,
            tenure=workspace.tenure_of(user_id),
        )

    @event("ChannelMemberAdded")
    def _member_added(self, user_id: str, tenure: int | None = None) -> None:
        self.member_ids.add(user_id)
        self._tenures()[user_id] = tenure or 1

    @caused
    def remove_member(self, user_id: str, workspace: Workspace | None, cause: Cause) -> None:
        actor = cause.actor
        self._check_can_manage_members(actor, workspace)
        if not self.is_member(user_id, workspace):
            raise NotFound("not a member of this channel")
        self._member_removed(user_id=user_id)

    @property
    def is_group(self) -> bool:
        # Snapshots taken before group direct messages existed lack the attribute.
        return bool(self.__dict__.get("group", False))

    @caused
    def leave_group(self, cause: Cause) -> None:
        """The caller leaves a group direct message they are in (another's, or a channel
        that is none, is "unknown" to them, as an id that does not exist)."""
        actor = cause.actor
        if not (self.kind == KIND_DIRECT and self.is_group) or not self.can_view(actor, None):
            raise NotAMember("unknown group direct message")
        self._member_removed(user_id=actor)

    @event("ChannelMemberRemoved")
    def _member_removed(self, user_id: str) -> None:
        self.member_ids.discard(user_id)
        self._tenures().pop(user_id, None)

    @caused
    def change(
        self, name: str | None, topic: str | None, workspace: Workspace | None, cause: Cause
    ) -> None:
        actor = cause.actor
        self._check_can_manage(actor, workspace)
        if name is None and topic is None:
            raise InvalidValue("nothing to change: give a name or a topic")
        new_name = (
            self.name
            if name is None
            else shown_name(name, field="name", max_length=MAX_CHANNEL_NAME)
        )
        new_topic = self.topic if topic is None else _topic(topic)
        self._changed(name=new_name, topic=new_topic)

    @event("ChannelChanged")
    def _changed(self, name: str, topic: str) -> None:
        self.name = name
        self.topic = topic

    @caused
    def archive(self, workspace: Workspace | None, cause: Cause) -> None:
        actor = cause.actor
        self._check_can_manage(actor, workspace)
        if self.archived:
            raise Conflict("already archived")
        self._archived()

    @event("ChannelArchived")
    def _archived(self) -> None:
        self.archived = True

    @caused
    def unarchive(self, workspace: Workspace | None, cause: Cause) -> None:
        actor = cause.actor
        self._check_can_manage(actor, workspace)
        if not self.archived:
            raise Conflict("not archived")
        self._unarchived()

    @event("ChannelUnarchived")
    def _unarchived(self) -> None:
        self.archived = False

    @caused
    def delete(self, workspace: Workspace | None, cause: Cause) -> None:
        """Deletes the channel (needs ``manage_channels``): nobody reads or posts in it any
        more; its messages stay in the log, for the workspace's auditors."""
        actor = cause.actor
        self._check_can_manage(actor, workspace)
        self._deleted()

    @event("ChannelDeleted")
    def _deleted(self) -> None:
        self.is_deleted = True


def _topic(topic: str | None) -> str:
    if topic is None:
        return ""
    return bounded_text(topic, field="topic", max_length=MAX_TOPIC, allow_empty=True)
