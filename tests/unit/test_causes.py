"""Every event records who caused it and by which command, from the one ``Cause`` the domain
method was given (domain/base.py ``caused``), not from arguments passed by hand."""

from __future__ import annotations

import inspect
from typing import Any
from uuid import uuid4

import pytest

from api.contexts import CONTEXTS
from domain.base import Cause, ChorusAggregate, recording
from domain.identity import User
from domain.workspaces import Workspace


def _methods_taking_a_cause() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for context in CONTEXTS.contexts:
        for aggregate in context.aggregates:
            for name, member in vars(aggregate).items():
                func = member.__func__ if isinstance(member, classmethod) else member
                if not inspect.isfunction(func) or name.startswith("_check"):
                    continue
                if "cause" in inspect.signature(func).parameters:
                    found.append((f"{aggregate.__name__}.{name}", func))
    return found


def test_every_domain_method_given_a_cause_stamps_its_events_with_it() -> None:
    methods = _methods_taking_a_cause()
    assert len(methods) > 30  # the enumeration sees the domain
    unstamped = [name for name, func in methods if not hasattr(func, "__wrapped__")]
    assert unstamped == []


def test_the_events_of_a_command_carry_its_actor_and_command_id() -> None:
    ws = Workspace.create(uuid4(), "team", "private", False, Cause("olivia", "c-1"))
    ws.create_role("helpers", ["send_messages"], Cause("olivia", "c-2"))
    events: list[Any] = list(ws.collect_events())
    assert [(e.actor_id, e.command_id) for e in events] == [
        ("olivia", "c-1"),
        ("olivia", "c-2"),
    ]


def test_an_actor_given_explicitly_wins_over_the_cause() -> None:
    """A sign-up has no actor yet: the new user is the actor of their own registration."""
    uid = uuid4()
    user = User.register(uid, "ada", None, Cause(None, "signup-1"))
    registered: Any = user.collect_events()[0]
    assert (registered.actor_id, registered.command_id) == (str(uid), "signup-1")


def test_the_cause_ends_with_its_method() -> None:
    """An event triggered after a caused method returned (or outside any) must say who
    caused it itself: it is refused rather than stamped with a stale cause."""
    ws = Workspace.create(uuid4(), "team", "private", False, Cause("olivia", "c-1"))
    with pytest.raises(TypeError):
        ws._member_banned(user_id="mia")
    with recording(Cause("olivia", "c-9")):
        ws._member_banned(user_id="mia")
    last: Any = ws.collect_events()[-1]
    assert last.command_id == "c-9"


def test_aggregates_are_chorus_aggregates() -> None:
    for context in CONTEXTS.contexts:
        for aggregate in context.aggregates:
            assert issubclass(aggregate, ChorusAggregate), aggregate
