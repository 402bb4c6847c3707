"""Every domain event has a scope and a visibility rule, declared once by its aggregate
(domain/scopes.py), and every aggregate belongs to exactly one registered context
(api/contexts.py). A new aggregate without them fails here, not silently at delivery."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import pytest
from eventsourcing.domain import event

import domain
from api.contexts import CONTEXTS
from domain.base import ChorusAggregate
from domain.scopes import (
    OPERATORS,
    SELF,
    WORKSPACE_MEMBERS,
    StreamKind,
    StreamKinds,
    creation_event,
    event_classes,
    stream_kind_of,
)


def _domain_aggregates() -> list[type[ChorusAggregate]]:
    found: set[type[ChorusAggregate]] = set()
    for module in pkgutil.iter_modules(domain.__path__):
        loaded = importlib.import_module(f"domain.{module.name}")
        for value in vars(loaded).values():
            if (
                inspect.isclass(value)
                and issubclass(value, ChorusAggregate)
                and value is not ChorusAggregate
            ):
                found.add(value)
    return sorted(found, key=lambda a: a.__name__)


AGGREGATES = _domain_aggregates()


def test_the_domain_has_the_aggregates_this_test_expects_to_find() -> None:
    # The walk above must see them, or every test below passes on nothing.
    names = {a.__name__ for a in AGGREGATES}
    assert {"User", "Workspace", "Channel", "Message", "Document", "Session"} <= names


@pytest.mark.parametrize("aggregate", AGGREGATES, ids=lambda a: a.__name__)
def test_every_aggregate_is_in_exactly_one_registered_context(
    aggregate: type[ChorusAggregate],
) -> None:
    owners = [c.name for c in CONTEXTS.contexts if aggregate in c.aggregates]
    assert len(owners) == 1, (aggregate.__name__, owners)


@pytest.mark.parametrize("aggregate", AGGREGATES, ids=lambda a: a.__name__)
def test_every_event_has_a_scope_and_a_visibility_rule(aggregate: type[ChorusAggregate]) -> None:
    kind = stream_kind_of(aggregate)
    events = event_classes(aggregate)
    assert events, aggregate.__name__
    assert CONTEXTS.kinds.by_name[kind.name] == kind
    assert kind.readers.rule in typing.get_args(typing.get_type_hints(type(kind.readers))["rule"])
    if kind.readers.rule == "permission":
        assert kind.readers.permission
    # Every event of the stream is scoped by the stream's first event.
    assert CONTEXTS.kinds.by_creation[creation_event(aggregate)] == kind
    # The fields a scope reads are fields of that creation event.
    created = next(e for e in events if e.__name__ == creation_event(aggregate))
    fields = set(inspect.signature(aggregate.__init__).parameters) | set(
        typing.get_type_hints(created)
    )
    for name in (kind.workspace, kind.channel, kind.owner):
        assert name in (None, SELF) or name in fields, (aggregate.__name__, name)
    # Events said to change access are events of this aggregate.
    assert set(kind.access_events) <= {e.__name__ for e in events}
    # A rule that needs a workspace has one to look in.
    if kind.readers.rule in ("workspace_members", "permission"):
        assert kind.workspace is not None, aggregate.__name__
    if kind.readers.rule == "channel_readers":
        assert kind.channel is not None, aggregate.__name__
    if kind.readers.rule == "owner":
        assert kind.owner is not None, aggregate.__name__


def test_an_aggregate_without_a_declaration_is_refused() -> None:
    class Undeclared(ChorusAggregate):
        pass

    with pytest.raises(TypeError, match="declares no stream_kind"):
        StreamKinds([*AGGREGATES, Undeclared])


def test_two_different_kinds_of_one_name_are_refused() -> None:
    workspace = next(a for a in AGGREGATES if a.__name__ == "Workspace")

    class Twin(ChorusAggregate):
        stream_kind = StreamKind("workspace", OPERATORS)

        @event("TwinCreated")
        def __init__(self) -> None:
            pass

    with pytest.raises(ValueError, match="declared twice"):
        StreamKinds([workspace, Twin])


def test_scopes_are_read_from_the_creation_event() -> None:
    kinds = CONTEXTS.kinds
    channel = kinds.scope_of_created("ChannelCreated", "c", {"workspace_id": "w"})
    assert (channel.kind, channel.workspace, channel.channel) == ("channel", "w", "c")
    message = kinds.scope_of_created("MessageSent", "m", {"workspace_id": "w", "channel_id": "c"})
    assert (message.kind, message.workspace, message.channel) == ("message", "w", "c")
    user = kinds.scope_of_created("UserRegistered", "u", {})
    assert (user.kind, user.owner) == ("user", "u")
    assert kinds.scope_of_created("NoSuchEvent", "x", {}).kind == "other"
    assert kinds.names("workspace_members") == ["workspace"]
    assert WORKSPACE_MEMBERS.rule == "workspace_members"
