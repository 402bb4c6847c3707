"""The handler table: joined from each context's own, one handler per command type."""

from __future__ import annotations

import inspect

import pytest

from api.contexts import CONTEXTS
from application import commands
from application.commands import Command, CreateChannel, SendMessage
from application.decisions import Decision, DuplicateHandler, HandlerTable
from application.handlers import join
from application.ports import DecisionContext
from domain.base import Cause


def _command_types() -> set[type[Command]]:
    return {
        c
        for _, c in inspect.getmembers(commands, inspect.isclass)
        if issubclass(c, Command) and c is not Command and c.__module__ == commands.__name__
    }


def test_every_command_has_exactly_one_handler() -> None:
    assert len(_command_types()) >= 30  # the enumeration finds the commands
    assert set(CONTEXTS.handlers) == _command_types()
    handled = [command_type for c in CONTEXTS.contexts for command_type in c.handlers]
    assert sorted(t.__name__ for t in handled) == sorted(t.__name__ for t in _command_types())


def _refuse(app: DecisionContext, cmd: SendMessage, cause: Cause) -> Decision:
    raise AssertionError("not called")


def test_a_command_type_handled_twice_is_refused() -> None:
    table = HandlerTable()
    table.on(SendMessage)(_refuse)
    with pytest.raises(DuplicateHandler, match="SendMessage"):
        table.on(SendMessage)(_refuse)
    other = HandlerTable()
    other.on(SendMessage)(_refuse)
    with pytest.raises(DuplicateHandler, match="SendMessage"):
        join([table, other])
    assert set(join([table, {CreateChannel: CONTEXTS.handlers[CreateChannel]}])) == {
        SendMessage,
        CreateChannel,
    }


def test_cause_actor_is_the_actor_id_or_nobody() -> None:
    assert Cause("u-1", "k").actor == "u-1"
    assert Cause(None).actor == ""
