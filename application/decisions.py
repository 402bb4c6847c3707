"""What a command handler returns, and the table a context declares its handlers in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from application.commands import Command
from application.ports import DecisionContext
from domain.base import Cause, ChorusAggregate


@dataclass
class Decision:
    """The aggregates a command changed and the answer to give once they are saved."""

    aggregates: list[ChorusAggregate]
    body: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    credentials: dict[UUID, str] = field(default_factory=dict)


C = TypeVar("C", bound=Command)
Handler = Callable[[DecisionContext, Any, Cause], Decision]


class DuplicateHandler(ValueError):
    """Two handlers for one command type."""


class HandlerTable(dict[type[Command], Handler]):
    """A context's handlers by command type, filled where they are written::

        HANDLERS = HandlerTable()

        @HANDLERS.on(CreateChannel)
        def create_channel(app: DecisionContext, cmd: CreateChannel, cause: Cause) -> Decision:

    application/handlers.py joins the contexts' tables into the one the command path uses."""

    def on(
        self, command_type: type[C]
    ) -> Callable[
        [Callable[[DecisionContext, C, Cause], Decision]],
        Callable[[DecisionContext, C, Cause], Decision],
    ]:
        def register(
            handler: Callable[[DecisionContext, C, Cause], Decision],
        ) -> Callable[[DecisionContext, C, Cause], Decision]:
            if command_type in self:
                raise DuplicateHandler(f"{command_type.__name__} has two handlers")
            self[command_type] = handler
            return handler

        return register
