"""What one user may receive through one subscription, decided against current state."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.realtime.hub import Delivery
from application.channels import channel_with_workspace
from application.chorus import Chorus
from application.documents import document_with_workspace
from domain.base import as_uuid
from domain.channels import Channel
from domain.errors import InvalidValue, NotAMember
from domain.workspaces import Workspace
from projections.log import StreamScope

KINDS = ("workspace", "channel", "user", "document")

# Events that can change what a user may see, when they name that user.
ACCESS_EVENTS = frozenset(
    {
        "MemberLeft",
        "MemberKicked",
        "MemberBanned",
        "RoleGranted",
        "RoleRevoked",
        "ChannelMemberAdded",
        "ChannelMemberRemoved",
    }
)


@dataclass(frozen=True)
class Target:
    kind: str
    id: str

    @classmethod
    def parse(cls, spec: dict[str, str], user_id: str) -> Target:
        if len(spec) != 1:
            raise InvalidValue("each stream is one of {workspace}, {channel}, {document}, {user}")
        ((kind, value),) = spec.items()
        if kind not in KINDS:
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
    workspace_id: str | None = None
    views_documents: bool = False
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
                self.workspace_id = str(workspace.id)
                self.views_documents = "view_documents" in workspace.permissions_of(self.user_id)
            case "document":
                _, workspace = document_with_workspace(self.app, self.target.id, self.user_id)
                self.workspace_id = str(workspace.id)
                self.views_documents = True

    def concerns(self, d: Delivery) -> bool:
        """Cheap test, on the event loop, of whether the event is about this target at all."""
        s = d.scope
        match self.target.kind:
            case "channel":
                # The workspace's own events may take access away (a direct channel has none).
                return s.channel == self.target.id or (
                    s.kind == "workspace" and s.workspace == self.workspace_id
                )
            case "workspace":
                return s.workspace == self.target.id
            case "document":
                # The workspace's own events may take access away.
                return str(d.event.stream) == self.target.id or (
                    s.kind == "workspace" and s.workspace == self.workspace_id
                )
            case _:
                return (s.kind == "user" and str(d.event.stream) == self.user_id) or (
                    s.workspace is None and s.channel is not None
                )

    def stream_scope(self) -> StreamScope:
        """The streams a catch-up reads for this target (after ``check``): those ``concerns``
        accepts, narrowed to the user's own direct channels (their members never change)."""
        workspace = frozenset() if self.workspace_id is None else frozenset({self.workspace_id})
        match self.target.kind:
            case "channel":
                return StreamScope(streams=workspace, channels=frozenset({self.target.id}))
            case "workspace":
                return StreamScope(workspaces=frozenset({self.target.id}))
            case "document":
                return StreamScope(streams=workspace | {self.target.id})
            case _:
                return StreamScope(streams=frozenset({self.user_id}), direct_member=self.user_id)

    def changes_access(self, d: Delivery) -> bool:
        return d.event.type in ACCESS_EVENTS and d.event.data.get("user_id") == self.user_id

    def admits_cached(self, d: Delivery) -> bool | None:
        """Whether to deliver, or None when it needs a look at current state (a thread)."""
        s = d.scope
        if not self.concerns(d):
            return False
        match self.target.kind:
            case "channel":
                return s.channel == self.target.id
            case "workspace":
                if s.kind == "document":
                    return self.views_documents
                return True if s.channel is None else self._channels.get(s.channel)
            case "document":
                return str(d.event.stream) == self.target.id
            case _:
                if s.kind == "user":
                    return True
                return self._channels.get(s.channel or "")

    def admits(self, d: Delivery) -> bool:
        """Like ``admits_cached``, loading channels it has not decided yet (blocking)."""
        cached = self.admits_cached(d)
        if cached is not None:
            return cached
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
            case ("channel", "channel") | ("document", "document"):
                return scope_id == self.target.id
            case ("workspace", "document"):
                return self.views_documents
            case ("workspace" | "user", "channel"):
                return self._channels.get(scope_id)
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
