"""What a command handler returns, and the table of handlers by command type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from application.commands import Command
from domain.base import Cause, ChorusAggregate

if TYPE_CHECKING:
    from application.chorus import Chorus


@dataclass
class Decision:
    """The aggregates a command changed and the answer to give once they are saved."""

    aggregates: list[ChorusAggregate]
    body: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    credentials: dict[UUID, str] = field(default_factory=dict)


C = TypeVar("C", bound=Command)
Handler = Callable[["Chorus", Any, Cause], Decision]
HANDLERS: dict[type[Command], Handler] = {}


def handles(command_type: type[C]) -> Callable[[Callable[[Chorus, C, Cause], Decision]], Any]:
    """Registers the one handler of a command type."""

    def register(handler: Callable[[Chorus, C, Cause], Decision]) -> Any:
        assert command_type not in HANDLERS, command_type
        HANDLERS[command_type] = handler
        return handler

    return register
