"""The one table of command handlers, joined from each context's own (no handler is
registered by importing a module: this list is the registration)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from application import channels, documents, identity, instance, messages, presence, workspaces
from application.commands import Command
from application.decisions import DuplicateHandler, Handler

# One entry per context.
CONTEXT_HANDLERS: tuple[Mapping[type[Command], Handler], ...] = (
    identity.HANDLERS,
    workspaces.HANDLERS,
    channels.HANDLERS,
    messages.HANDLERS,
    presence.HANDLERS,
    documents.HANDLERS,
    instance.HANDLERS,
)


def join(tables: Iterable[Mapping[type[Command], Handler]]) -> dict[type[Command], Handler]:
    """The contexts' tables as one; a command type two of them handle is a mistake."""
    joined: dict[type[Command], Handler] = {}
    for table in tables:
        for command_type, handler in table.items():
            if command_type in joined:
                raise DuplicateHandler(f"{command_type.__name__} is handled twice")
            joined[command_type] = handler
    return joined


HANDLERS = join(CONTEXT_HANDLERS)
