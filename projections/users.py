"""Read model of users: who is registered, by id and by username."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement


class UsersProjection(EventProjection):
    name = "users"
    tables = ("rm_users",)
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_users (
        user_id uuid PRIMARY KEY,
        username text NOT NULL UNIQUE,
        display_name text NOT NULL,
        registered_at timestamptz NOT NULL
    );
    """
    handles = frozenset({"UserRegistered"})

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d = event.data
        cur.execute(
            "INSERT INTO rm_users (user_id, username, display_name, registered_at)"
            " VALUES (%s, %s, %s, %s)",
            (event.stream, d["username"], d["display_name"], event.at),
        )


# -- queries ---------------------------------------------------------------------------------


def get_user(user_id: str) -> Query[dict[str, Any] | None]:
    rows = yield Statement(
        "SELECT user_id::text, username, display_name FROM rm_users WHERE user_id = %s",
        (user_id,),
    )
    return rows[0] if rows else None
