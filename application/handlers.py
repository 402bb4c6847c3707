"""Joining the contexts' handler tables into the one table a ``Chorus`` runs (the contexts are
listed once, in api/contexts.py, which hands the joined table to ``Chorus``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from application.commands import Command
from application.decisions import DuplicateHandler, Handler


def join(tables: Iterable[Mapping[type[Command], Handler]]) -> dict[type[Command], Handler]:
    """The contexts' tables as one; a command type two of them handle is a mistake."""
    joined: dict[type[Command], Handler] = {}
    for table in tables:
        for command_type, handler in table.items():
            if command_type in joined:
                raise DuplicateHandler(f"{command_type.__name__} is handled twice")
            joined[command_type] = handler
    return joined
