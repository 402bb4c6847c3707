"""Read-model queries written once and run on sync or async cursors ("sans-IO").

A query is a generator: it yields the statements it needs, receives each one's rows, and
returns its answer. It does no I/O itself, so the same code serves the HTTP reads on the event
loop (``run_async``) and the threads that read projections (``run``: WebSockets, Yjs rooms,
CLI tools). A query built from others delegates with ``yield from``.

    def get_user(user_id: str) -> Query[dict[str, Any] | None]:
        rows = yield Statement("SELECT ... WHERE user_id = %s", (user_id,))
        return rows[0] if rows else None

    run(cur, get_user(uid))              # sync cursor
    await run_async(acur, get_user(uid))  # async cursor

Only statements that return rows belong here (the read side); projections write with their
cursor directly.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from psycopg import AsyncCursor, Cursor
from psycopg.abc import Params, QueryNoTemplate

T = TypeVar("T")

Rows: TypeAlias = list[dict[str, Any]]


@dataclass(frozen=True)
class Statement:
    """One SQL statement with its parameters; it must return rows (possibly none)."""

    sql: QueryNoTemplate
    params: Params | None = None


# Yields statements, is sent each one's rows, returns T.
Query: TypeAlias = Generator[Statement, Rows, T]


def run(cur: Cursor[Any], query: Query[T]) -> T:
    """Runs ``query`` on a sync cursor whose rows are dicts."""
    try:
        statement = next(query)
        while True:
            cur.execute(statement.sql, statement.params)
            statement = query.send(cur.fetchall())
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(cur: AsyncCursor[Any], query: Query[T]) -> T:
    """Runs ``query`` on an async cursor whose rows are dicts, without blocking the loop."""
    try:
        statement = next(query)
        while True:
            await cur.execute(statement.sql, statement.params)
            statement = query.send(await cur.fetchall())
    except StopIteration as done:
        result: T = done.value
        return result
