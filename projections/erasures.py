"""Erasures (issue 20): the read model that destroys data keys when the log says so.

Keeping no table of its own, it runs ``infrastructure.keys.erase_statement`` in the runner's
transaction for each ``UserErased`` (the user's keys and those of every subject they own:
their messages) and each ``MessageDeleted`` that erased its text (``text_erased``): exactly once
with its tracking position, again on a rebuild (a key already destroyed stays so), and with
no window in which a crash between the command and the key store leaves the data readable
for good.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from infrastructure.keys import erase_statement
from projections.base import EventProjection, LogEvent


class ErasuresProjection(EventProjection):
    name = "erasures"
    tables = ()
    create_sql = "SELECT 1"
    handles = frozenset({"UserErased", "MessageDeleted"})

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        if event.type == "MessageDeleted":
            if not event.data.get("text_erased"):
                return
            # Destroyed when the event was stored (infrastructure/eventstore.py); again here
            # for a key store restored from before it.
            cur.execute(*erase_statement([event.stream], []))
        else:
            cur.execute(*erase_statement([event.stream], [event.stream]))
