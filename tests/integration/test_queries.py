"""Read-model queries are written once (projections/queries.py) and run on a sync cursor in
threads and on an async cursor on the event loop: both must give the same answers, on the
real read models of a real store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.contexts import CONTEXTS, all_projections
from application.chorus import Chorus
from application.commands import (
    AddReaction,
    CreateChannel,
    CreateWorkspace,
    RegisterUser,
    SendMessage,
)
from domain.base import Cause
from domain.permissions import BUILTIN_ROLES, OWNER
from projections import channels, timelines, users, workspaces
from projections.log import log_end, visible_events
from projections.queries import Query, Statement, run, run_async
from projections.runner import ProjectionRunner


@pytest.fixture
def read_pool(store_url: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(
        store_url,
        min_size=1,
        max_size=2,
        kwargs={"autocommit": True, "row_factory": dict_row},
        open=True,
    ) as pool:
        yield pool


def run_on_async_cursor(database_url: str, query: Query[Any]) -> Any:
    async def main() -> Any:
        async with (
            await psycopg.AsyncConnection.connect(
                database_url, autocommit=True, row_factory=dict_row
            ) as conn,
            conn.cursor() as cur,
        ):
            return await run_async(cur, query)

    return asyncio.run(main())


def both_ways(
    pool: ConnectionPool[Any], database_url: str, make: Callable[[], Query[Any]]
) -> tuple[Any, Any]:
    """The query's answer on a sync cursor and on an async one (a generator runs once, so
    each gets its own)."""
    with pool.connection() as conn, conn.cursor() as cur:
        sync_answer = run(cur, make())
    return sync_answer, run_on_async_cursor(database_url, make())


def register(app: Chorus, username: str) -> str:
    result = app.execute(
        RegisterUser(username=username, password="plum-Orbit-kettle-42"), Cause(None)
    )
    return str(result.body["user_id"])


def test_projection_queries_answer_the_same_on_sync_and_async_cursors(
    app: Chorus, store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    ann, bob = register(app, "ann"), register(app, "bob")
    ws = str(app.execute(CreateWorkspace(name="Acme"), Cause(ann)).body["id"])
    ch = str(app.execute(CreateChannel(workspace_id=ws, name="general"), Cause(ann)).body["id"])
    first = str(app.execute(SendMessage(channel_id=ch, text="hello"), Cause(ann)).body["id"])
    app.execute(SendMessage(channel_id=ch, text="again"), Cause(ann))
    app.execute(AddReaction(message_id=first, emoji="tada"), Cause(ann))
    ProjectionRunner(read_pool, store_url, all_projections()).catch_up()

    # A query that composes others (``yield from``): the channel, then the permissions.
    seen, seen_async = both_ways(read_pool, store_url, lambda: channels.visible_channel(ch, ann))
    assert seen == seen_async
    assert seen is not None and seen["name"] == "general"
    # Two statements, the second one's parameters made from the first one's rows.
    page, page_async = both_ways(
        read_pool,
        store_url,
        lambda: timelines.list_messages(ch, limit=10, before=None, after=None),
    )
    assert page == page_async
    items, next_cursor = page
    assert [m["text"] for m in items] == ["again", "hello"] and next_cursor is None
    assert items[1]["reactions"] == {"tada": [ann]}
    # One statement whose answer ends the query early: bob is not a member.
    assert both_ways(read_pool, store_url, lambda: channels.list_visible_channels(ws, bob)) == (
        [],
        [],
    )
    assert both_ways(read_pool, store_url, lambda: workspaces.permissions_of(ws, ann)) == (
        (BUILTIN_ROLES[OWNER],) * 2
    )
    user, user_async = both_ways(read_pool, store_url, lambda: users.get_user(bob))
    assert (
        user
        == user_async
        == {
            "user_id": bob,
            "username": "bob",
            "display_name": "bob",
            "avatar_url": None,
            "deactivated": False,
        }
    )
    events, events_async = both_ways(
        read_pool,
        store_url,
        lambda: visible_events(
            ann, CONTEXTS.kinds, after=0, limit=100, stream=None, type_name="MessageSent"
        ),
    )
    assert events == events_async and [e.data["text"] for e in events] == ["hello", "again"]
    end, end_async = both_ways(read_pool, store_url, log_end)
    assert end == end_async == events[-1].position + 1  # the reaction came last


def counting(start: int) -> Query[tuple[int, list[int]]]:
    """A query that needs no statement at all when ``start`` is negative, and otherwise
    chains three, each one's parameter taken from the previous one's rows."""
    if start < 0:
        return 0, []
    seen: list[int] = []
    value = start
    for _ in range(3):
        rows = yield Statement("SELECT %s::int + 1 AS n", (value,))
        value = int(rows[0]["n"])
        seen.append(value)
    empty = yield Statement("SELECT 1 AS n WHERE false")
    return len(empty), seen


def test_each_statement_is_sent_its_own_rows(
    store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    assert both_ways(read_pool, store_url, lambda: counting(10)) == ((0, [11, 12, 13]),) * 2
    assert both_ways(read_pool, store_url, lambda: counting(-1)) == ((0, []),) * 2


def test_a_failing_statement_raises_from_both_runners(
    store_url: str, read_pool: ConnectionPool[Any]
) -> None:
    def broken() -> Query[None]:
        yield Statement("SELECT * FROM no_such_table")

    with (
        pytest.raises(psycopg.errors.UndefinedTable),
        read_pool.connection() as conn,
        conn.cursor() as cur,
    ):
        run(cur, broken())
    with pytest.raises(psycopg.errors.UndefinedTable):
        run_on_async_cursor(store_url, broken())
