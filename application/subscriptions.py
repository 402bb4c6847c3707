"""What one user may receive through one ``/ws`` subscription, decided against current state.

The subscription kinds, the events that change access and what each subscriber is shown are
derived from the stream kinds the aggregates declare (domain/scopes.py): ``workspace`` (what
the user may read of a workspace), ``channel`` (a channel and its messages), ``user`` (the
user's own streams and direct messages), and one kind per stream kind that lives in a
workspace and is read by its members or holders of a permission (``document``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from application.channels import channel_with_workspace
from application.chorus import Chorus
from application.notifications import deliverable
from application.ports import LoggedEvent
from application.projects import project_with_workspace
from domain.base import ChorusAggregate, as_uuid
from domain.channels import Channel
from domain.errors import InvalidValue, NotAMember, NotFound, PermissionDenied
from domain.scopes import Scope, StreamKind, StreamKinds, StreamScope
from domain.workspaces import Workspace

# A project (issue 21) contains its tasks as a channel its messages: both scope-name it.
CONTAINERS = ("workspace", "channel", "user", "project")
# The user's inbox (domain/notifications.py): delivered on their user stream, each
# notification only while they may read what it is about (checked on delivery).
INBOX = "inbox"
NOTIFICATION_EVENTS = frozenset({"MentionNotified", "Notified"})


class Delivery(Protocol):
    """An event as the log follower delivers it, with its stream's scope
    (api/realtime/hub.py)."""

    @property
    def event(self) -> LoggedEvent: ...

    @property
    def scope(self) -> Scope: ...


def subscribable(kinds: StreamKinds) -> list[str]:
    """Every kind a ``/ws`` subscription may name."""
    return [*CONTAINERS, *kinds.workspace_streams()]


@dataclass(frozen=True)
class Target:
    kind: str
    id: str

    @classmethod
    def parse(cls, spec: dict[str, str], user_id: str, kinds: StreamKinds) -> Target:
        known = subscribable(kinds)
        if len(spec) != 1:
            names = ", ".join("{" + k + "}" for k in known)
            raise InvalidValue(f"each stream is one of {names}")
        ((kind, value),) = spec.items()
        if kind not in known:
            raise InvalidValue(f"unknown stream kind {kind!r}")
        if kind == "user":
            if value not in ("me", user_id):
                raise NotAMember("only your own user stream can be subscribed to")
            return cls(kind, user_id)
        # Canonical form, as the hub writes stream ids.
        return cls(kind, str(as_uuid(value)))


@dataclass
class Access:
    """Checked when the subscription starts and again whenever an event changes the user's
    membership or roles; per-channel visibility is cached until then."""

    app: Chorus
    user_id: str
    target: Target
    kinds: StreamKinds
    workspace_id: str | None = None
    # The user's permissions in the workspace (after ``check``).
    permissions: frozenset[str] = frozenset()
    _channels: dict[str, bool] = field(default_factory=dict)

    def check(self) -> None:
        """Raises a domain error when the user may not (or no longer) see the target."""
        self._channels.clear()
        match self.target.kind:
            case "channel":
                _, workspace = channel_with_workspace(self.app, self.target.id, self.user_id)
                self.workspace_id = None if workspace is None else str(workspace.id)
            case "workspace":
                workspace = self.app.load(Workspace, self.target.id)
                workspace.check_member(self.user_id)
                self._enter(workspace)
            case "project":
                _, workspace = project_with_workspace(self.app, self.target.id, self.user_id)
                self._enter(workspace)
            case "user":
                pass
            case kind:
                self._check_stream(self.kinds.by_name[kind])

    def _enter(self, workspace: Workspace) -> None:
        self.workspace_id = str(workspace.id)
        self.permissions = frozenset(workspace.permissions_of(self.user_id))

    def _check_stream(self, kind: StreamKind) -> None:
        """A stream that lives in a workspace: readable as its kind's readers rule says (and
        as the aggregate itself says, where it has a rule of its own, e.g. deleted)."""
        aggregate = self.app.load(ChorusAggregate, self.target.id, kind.name)
        if self.kinds.of(type(aggregate)) != kind:
            raise NotFound(f"unknown {kind.name}")
        workspace = self.app.load(Workspace, getattr(aggregate, kind.workspace or ""))
        own_rule = getattr(aggregate, "check_can_view", None)
        if own_rule is not None:
            own_rule(self.user_id, workspace)
        else:
            workspace.check_member(self.user_id)
            if kind.readers.permission is not None and (
                kind.readers.permission not in workspace.permissions_of(self.user_id)
            ):
                raise PermissionDenied(f"this needs the {kind.readers.permission} permission")
        self._enter(workspace)

    def concerns(self, d: Delivery) -> bool:
        """Cheap test, on the event loop, of whether the event is about this target at all."""
        s = d.scope
        match self.target.kind:
            case "channel" | "project":
                # The workspace's own events may take access away (a direct channel has none).
                return s.channel == self.target.id or (
                    s.kind == "workspace" and s.workspace == self.workspace_id
                )
            case "workspace":
                return s.workspace == self.target.id
            case "user":
                return (
                    self._owns(d)
                    or self._my_inbox(d)
                    or (s.workspace is None and s.channel is not None)
                )
            case _:
                # The workspace's own events may take access away.
                return str(d.event.stream) == self.target.id or (
                    s.kind == "workspace" and s.workspace == self.workspace_id
                )

    def _owns(self, d: Delivery) -> bool:
        s = d.scope
        kind = self.kinds.by_name.get(s.kind)
        return kind is not None and kind.readers.rule == "owner" and s.owner == self.user_id

    def _my_inbox(self, d: Delivery) -> bool:
        return d.scope.kind == INBOX and d.scope.owner == self.user_id

    def stream_scope(self) -> StreamScope:
        """The streams a catch-up reads for this target (after ``check``): those ``concerns``
        accepts, narrowed to the user's own direct channels (their members never change)."""
        workspace = frozenset() if self.workspace_id is None else frozenset({self.workspace_id})
        match self.target.kind:
            case "channel" | "project":
                return StreamScope(streams=workspace, channels=frozenset({self.target.id}))
            case "workspace":
                return StreamScope(workspaces=frozenset({self.target.id}))
            case "user":
                return StreamScope(
                    owner=self.user_id,
                    owned_kinds=frozenset([*self.kinds.names("owner"), INBOX]),
                    direct_member=self.user_id,
                )
            case _:
                return StreamScope(streams=workspace | {self.target.id})

    def changes_access(self, d: Delivery) -> bool:
        """An access event naming this user, or naming nobody (a workspace or channel deleted,
        a role changed: issue 20) about what this subscription reads."""
        if d.event.type not in self.kinds.access_events:
            return False
        named = d.event.data.get("user_id")
        return named == self.user_id or (named is None and self.concerns(d))

    def admits_cached(self, d: Delivery) -> bool | None:
        """Whether to deliver, or None when it needs a look at current state (a thread)."""
        s = d.scope
        if not self.concerns(d):
            return False
        match self.target.kind:
            case "channel" | "project":
                return s.channel == self.target.id
            case "workspace":
                return self._readable(s.kind, s.channel, s.owner)
            case "user":
                if self._owns(d):
                    return True
                if self._my_inbox(d):
                    # A notification: looked at when delivered (``admits``), never cached.
                    return None if d.event.type in NOTIFICATION_EVENTS else True
                return self._channels.get(s.channel or "")
            case _:
                return str(d.event.stream) == self.target.id

    def _readable(self, kind_name: str, channel: str | None, owner: str | None) -> bool | None:
        """Whether a stream of ``kind_name`` in this workspace is for this user, as its kind's
        readers rule says; None when its channel is not decided yet."""
        kind = self.kinds.by_name.get(kind_name)
        if kind is None:
            return False
        match kind.readers.rule:
            case "workspace_members":
                return True
            case "channel_readers":
                return True if channel is None else self._channels.get(channel)
            case "permission":
                return kind.readers.permission in self.permissions
            case "owner":
                return owner == self.user_id
            case _:
                return False

    def admits(self, d: Delivery) -> bool:
        """Like ``admits_cached``, loading channels it has not decided yet (blocking)."""
        cached = self.admits_cached(d)
        if cached is not None:
            return cached
        if self.target.kind == "user" and self._my_inbox(d):
            return deliverable(self.app, self.user_id, d.event.data)
        return self.sees_channel(d.scope.channel or "")

    # -- signals (api/realtime/signals.py) ---------------------------------------------------

    def signal_group(self) -> str:
        """The signal-bus group this subscription listens on."""
        if self.target.kind == "workspace":
            return self.target.id
        return f"{self.target.kind}:{self.target.id}"

    def accepts_signal(self, scope: str) -> bool | None:
        """Whether a signal about ``scope`` ("channel:<id>" or "document:<id>") may reach
        this subscriber; None when a channel is not decided yet (``sees_channel``)."""
        kind, _, scope_id = scope.partition(":")
        match self.target.kind, kind:
            case ("workspace" | "user", "channel"):
                return self._channels.get(scope_id)
            case ("workspace", _):
                return self._readable(kind, None, None) is True
            case (target, _) if target == kind:
                return scope_id == self.target.id
            case _:
                return False

    def sees_channel(self, channel_id: str) -> bool:
        """Decides (blocking) and remembers whether the user may read the channel."""
        try:
            channel = self.app.load(Channel, channel_id)
        except Exception:
            visible = False
        else:
            workspace = (
                None
                if channel.workspace_id is None
                else self.app.load(Workspace, channel.workspace_id)
            )
            visible = channel.can_view(self.user_id, workspace)
        self._channels[channel_id] = visible
        return visible
