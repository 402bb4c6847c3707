"""Where each kind of stream lives and who may read it.

Every aggregate declares its ``stream_kind`` once (its scope: the workspace, channel and
owner its creation event names; and its readers). The event hub, the streams read model, the
event log's visibility filter and the ``/ws`` subscriptions derive theirs from these
declarations, so a new context is scoped and filtered everywhere by declaring its kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from eventsourcing.domain import Aggregate

# The stream's own id, where a scope field names the stream itself (a workspace's workspace).
SELF = "@self"

Rule = Literal["workspace_members", "channel_readers", "owner", "permission", "operators"]


@dataclass(frozen=True)
class Readers:
    """Who may read a kind of stream, besides holders of ``view_audit`` in its workspace and
    the instance's auditors (who read everything)."""

    rule: Rule
    permission: str | None = None


# Every member of the stream's workspace.
WORKSPACE_MEMBERS = Readers("workspace_members")
# Whoever may read the stream's channel (its members if private or direct).
CHANNEL_READERS = Readers("channel_readers")
# The one user the stream belongs to.
OWNER = Readers("owner")
# Nobody through the member-facing paths: the operator's tools and auditors only.
OPERATORS = Readers("operators")


def holders_of(permission: str) -> Readers:
    """Members of the stream's workspace whose roles grant ``permission``."""
    return Readers("permission", permission)


@dataclass(frozen=True)
class Scope:
    """Where one stream lives."""

    kind: str
    workspace: str | None
    channel: str | None
    owner: str | None = None


@dataclass(frozen=True)
class StreamKind:
    """A kind of stream: its name, and which fields of its creation event name its workspace,
    channel and owner (``SELF``: the stream's own id; None: it has none)."""

    name: str
    readers: Readers
    workspace: str | None = None
    channel: str | None = None
    owner: str | None = None
    # Events of this kind that change what the user they name (``user_id``) may read; one
    # naming no user changes what every reader of its workspace or channel may read (a
    # workspace or channel deleted, a role's permissions changed: issue 20).
    access_events: tuple[str, ...] = ()

    def scope_of(self, stream: str, data: Mapping[str, Any]) -> Scope:
        def field(name: str | None) -> str | None:
            if name is None:
                return None
            value = stream if name == SELF else data.get(name)
            return None if value is None else str(value)

        return Scope(self.name, field(self.workspace), field(self.channel), field(self.owner))


# A stream whose first event no declaration knows (written by a newer release, say): it
# belongs nowhere, so no member-facing path shows it.
UNKNOWN = Scope("other", None, None)


def event_classes(aggregate: type[Aggregate]) -> list[type[Aggregate.Event]]:
    """The event classes an aggregate declares (its ``@event`` methods make them)."""
    return [
        value
        for name, value in vars(aggregate).items()
        if inspect.isclass(value)
        and issubclass(value, Aggregate.Event)
        and name not in ("Event", "Created")
    ]


def creation_event(aggregate: type[Aggregate]) -> str:
    """The name of the event that starts an aggregate's stream."""
    created = [e for e in event_classes(aggregate) if issubclass(e, Aggregate.Created)]
    if len(created) != 1:
        raise TypeError(f"{aggregate.__name__} needs one named creation event (@event on __init__)")
    return created[0].__name__


def stream_kind_of(aggregate: type[Aggregate]) -> StreamKind:
    kind = vars(aggregate).get("stream_kind")
    if not isinstance(kind, StreamKind):
        raise TypeError(f"{aggregate.__name__} declares no stream_kind")
    return kind


class StreamKinds:
    """The stream kinds of a set of aggregates, looked up by name or by creation event."""

    def __init__(self, aggregates: Iterable[type[Aggregate]]) -> None:
        self.by_name: dict[str, StreamKind] = {}
        self.by_creation: dict[str, StreamKind] = {}
        self._by_class: dict[type[Aggregate], StreamKind] = {}
        for aggregate in aggregates:
            kind = stream_kind_of(aggregate)
            self._by_class[aggregate] = kind
            created = creation_event(aggregate)
            if created in self.by_creation:
                raise ValueError(f"two aggregates start with {created}")
            known = self.by_name.setdefault(kind.name, kind)
            if known != kind:
                raise ValueError(f"stream kind {kind.name!r} is declared twice, differently")
            self.by_creation[created] = kind
        # Every event that changes what the user it names may read.
        self.access_events = frozenset(e for k in self.by_name.values() for e in k.access_events)

    def of(self, aggregate: type[Aggregate]) -> StreamKind | None:
        return self._by_class.get(aggregate)

    def workspace_streams(self) -> list[str]:
        """The kinds of stream that live in a workspace and are read by its members (or
        holders of a permission): each can be subscribed to on its own."""
        return sorted(
            k.name
            for k in self.by_name.values()
            if k.workspace not in (None, SELF)
            and k.readers.rule in ("workspace_members", "permission")
        )

    def scope_of_created(self, event_type: str, stream: str, data: Mapping[str, Any]) -> Scope:
        """The scope of a stream, from its first event."""
        kind = self.by_creation.get(event_type)
        return UNKNOWN if kind is None else kind.scope_of(stream, data)

    def names(self, rule: Rule, permission: str | None = None) -> list[str]:
        """The kinds whose readers follow ``rule`` (and ``permission``), sorted."""
        return sorted(
            k.name
            for k in self.by_name.values()
            if k.readers.rule == rule and (permission is None or k.readers.permission == permission)
        )

    @cached_property
    def visibility_params(self) -> dict[str, list[str]]:
        """The kinds each readers rule admits, as the event log's visibility filter takes
        them (projections/log.py): worked out once, not per request."""
        held = [(k, p) for p in self.permissions() for k in self.names("permission", p)]
        return {
            "members": self.names("workspace_members"),
            "channel_readers": self.names("channel_readers"),
            "owned": self.names("owner"),
            "held_kinds": [k for k, _ in held],
            "held_by": [p for _, p in held],
        }

    def permissions(self) -> list[str]:
        """The permissions some kind's readers need, sorted."""
        return sorted(
            {str(k.readers.permission) for k in self.by_name.values() if k.readers.permission}
        )

    def fields(self) -> list[str]:
        """Every creation-event field some scope reads, sorted."""
        names = {
            f
            for k in self.by_name.values()
            for f in (k.workspace, k.channel, k.owner)
            if f is not None and f != SELF
        }
        for name in names:
            # Names reach generated SQL (projections/streams.py): identifiers only.
            if not name.isidentifier() or name != name.lower():
                raise ValueError(f"scope field {name!r} is not a plain identifier")
        return sorted(names)


@dataclass(frozen=True)
class StreamScope:
    """Which streams a catch-up reads, in terms of the streams read model: streams by id,
    every stream of some workspaces, every stream of some channels (the channel and its
    messages), and the direct-message channels (and their messages) of one user."""

    streams: frozenset[str] = frozenset()
    workspaces: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    direct_member: str | None = None
    # Every stream of these kinds that this user owns (their user stream, ...).
    owner: str | None = None
    owned_kinds: frozenset[str] = frozenset()

    def __or__(self, other: StreamScope) -> StreamScope:
        for mine, theirs in ((self.direct_member, other.direct_member), (self.owner, other.owner)):
            if None not in (mine, theirs) and mine != theirs:
                raise ValueError("one scope reads one user's own streams")
        return StreamScope(
            self.streams | other.streams,
            self.workspaces | other.workspaces,
            self.channels | other.channels,
            self.direct_member or other.direct_member,
            self.owner or other.owner,
            self.owned_kinds | other.owned_kinds,
        )
