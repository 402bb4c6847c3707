"""Read model of users: who is registered, by id and by username, and whom each blocks."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement

# An erased user's username in the read model: no username can start with it.
ERASED_USERNAME = "erased:"


class UsersProjection(EventProjection):
    name = "users"
    tables = ("rm_users", "rm_user_blocks", "rm_instance_roles")
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_users (
        user_id uuid PRIMARY KEY,
        username text NOT NULL UNIQUE,
        display_name text NOT NULL,
        registered_at timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rm_user_blocks (
        user_id uuid NOT NULL,
        blocked_id uuid NOT NULL,
        blocked_at timestamptz NOT NULL,
        PRIMARY KEY (user_id, blocked_id)
    );
    CREATE TABLE IF NOT EXISTS rm_instance_roles (
        user_id uuid NOT NULL,
        role text NOT NULL,
        granted_at timestamptz NOT NULL,
        PRIMARY KEY (user_id, role)
    );
    """
    handles = frozenset(
        {
            "UserRegistered",
            "UserErased",
            "UserBlocked",
            "UserUnblocked",
            "InstanceRoleGranted",
            "InstanceRoleRevoked",
        }
    )

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d = event.data
        match event.type:
            case "UserRegistered":
                # Erased (issue 20), a user's name reads null: the row keeps a placeholder.
                cur.execute(
                    "INSERT INTO rm_users (user_id, username, display_name, registered_at)"
                    " VALUES (%(u)s::uuid, coalesce(%(name)s, %(erased)s || %(u)s::text),"
                    " coalesce(%(shown)s, ''), %(at)s)",
                    {
                        "u": str(event.stream),
                        "name": d["username"],
                        "shown": d["display_name"],
                        "erased": ERASED_USERNAME,
                        "at": event.at,
                    },
                )
            case "UserErased":
                cur.execute(
                    "UPDATE rm_users SET username = %s || user_id::text, display_name = ''"
                    " WHERE user_id = %s",
                    (ERASED_USERNAME, event.stream),
                )
            case "UserBlocked":
                cur.execute(
                    "INSERT INTO rm_user_blocks (user_id, blocked_id, blocked_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (event.stream, d["user_id"], event.at),
                )
            case "UserUnblocked":
                cur.execute(
                    "DELETE FROM rm_user_blocks WHERE user_id = %s AND blocked_id = %s",
                    (event.stream, d["user_id"]),
                )
            case "InstanceRoleGranted":
                cur.execute(
                    "INSERT INTO rm_instance_roles (user_id, role, granted_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (d["user_id"], d["role"], event.at),
                )
            case "InstanceRoleRevoked":
                cur.execute(
                    "DELETE FROM rm_instance_roles WHERE user_id = %s AND role = %s",
                    (d["user_id"], d["role"]),
                )


# -- queries ---------------------------------------------------------------------------------


def get_user(user_id: str) -> Query[dict[str, Any] | None]:
    rows = yield Statement(
        "SELECT user_id::text, username, display_name FROM rm_users WHERE user_id = %s",
        (user_id,),
    )
    return rows[0] if rows else None


def list_blocked(user_id: str) -> Query[list[dict[str, Any]]]:
    """Whom the user blocks, newest first."""
    return (
        yield Statement(
            "SELECT b.blocked_id::text AS user_id, u.username, u.display_name, b.blocked_at"
            " FROM rm_user_blocks b LEFT JOIN rm_users u ON u.user_id = b.blocked_id"
            " WHERE b.user_id = %s ORDER BY b.blocked_at DESC, b.blocked_id",
            (user_id,),
        )
    )


def holds_instance_role(user_id: str, role: str) -> Query[bool]:
    """Whether the user holds an instance role (granted with ``chorus grant``)."""
    rows = yield Statement(
        "SELECT EXISTS (SELECT 1 FROM rm_instance_roles WHERE user_id = %s AND role = %s) AS held",
        (user_id, role),
    )
    return bool(rows and rows[0]["held"])
