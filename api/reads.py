"""Reading projections: wait until they include the reader's writes, then query."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from litestar.connection import ASGIConnection
from psycopg import AsyncCursor, Cursor

from api.commands import services_of
from api.errors import ReadPositionInFuture, ServiceUnavailable
from domain.errors import InvalidValue
from projections.log import log_end, max_position
from projections.queries import run_async

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@contextmanager
def read_cursor(
    connection: ASGIConnection[Any, Any, Any, Any], min_position: int | None
) -> Iterator[Cursor[Any]]:
    """A cursor on the read models once they have reached ``min_position`` and the
    caller's own last write in this process."""
    services = services_of(connection)
    target = _read_target(connection, min_position)
    # A bounded wait for a connection: while PostgreSQL is down (or the pool is exhausted) a
    # read answers 503 after this, rather than after the pool's default 30 s.
    wait = services.settings.read_wait_timeout_s
    with services.read_pool.connection(timeout=wait) as conn, conn.cursor() as cur:
        if target and not services.runner.wait_for(target, wait):
            if target > max_position(cur):
                raise ReadPositionInFuture("min_position is past the last event")
            raise ServiceUnavailable("read models are catching up; retry shortly")
        yield cur


@asynccontextmanager
async def read_cursor_async(
    connection: ASGIConnection[Any, Any, Any, Any], min_position: int | None
) -> AsyncIterator[AsyncCursor[Any]]:
    """``read_cursor`` for handlers on the event loop: the same waits and answers (422 for a
    position past the log, 503 when the read models or the database do not answer in time),
    none of them blocking the loop."""
    services = services_of(connection)
    target = _read_target(connection, min_position)
    wait = services.settings.read_wait_timeout_s
    # The read models are awaited before a connection is taken: many more reads can wait
    # on the loop than the pool has connections, and a waiting read needs none.
    caught_up = not target or await services.runner.wait_for_async(target, wait)
    # A PoolTimeout (PostgreSQL down, pool exhausted) is an OperationalError: 503.
    async with (
        services.async_read_pool.connection(timeout=wait) as conn,
        conn.cursor() as cur,
    ):
        if not caught_up:
            if target > await run_async(cur, log_end()):
                raise ReadPositionInFuture("min_position is past the last event")
            raise ServiceUnavailable("read models are catching up; retry shortly")
        yield cur


def _read_target(connection: ASGIConnection[Any, Any, Any, Any], min_position: int | None) -> int:
    """The position the read models must have reached: ``min_position``, and the caller's
    own last write in this process."""
    check_position("min_position", min_position)
    user = connection.scope.get("user")
    last_write = services_of(connection).last_writes.get(user) if user else 0
    return max(min_position or 0, last_write)


# Positions are PostgreSQL bigints: a larger number is refused here, not by the database.
MAX_POSITION = 2**63 - 1


def check_position(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_POSITION:
        raise InvalidValue(f"{name} must be a position, 0 to {MAX_POSITION}")


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidValue(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def parse_cursor(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    # ASCII digits only: str.isdigit() also takes "²" (which int() refuses) and "٣".
    ascii_digits = value.isascii() and value.isdigit()
    if not ascii_digits or len(value) > 19 or int(value) > MAX_POSITION:
        raise InvalidValue(f"{name} is not a valid cursor")
    return int(value)


def paged(
    rows: list[dict[str, Any]], limit: int, key: str
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows fetched with ``limit + 1``: the page, and the cursor of the next one (None at the
    end)."""
    page = rows[:limit]
    return page, (str(page[-1][key]) if len(rows) > limit and page else None)
