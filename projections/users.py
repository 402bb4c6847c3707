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
    -- Issue 20: the profile's avatar, and whether the account is deactivated.
    ALTER TABLE rm_users ADD COLUMN IF NOT EXISTS avatar_url text;
    ALTER TABLE rm_users ADD COLUMN IF NOT EXISTS deactivated_at timestamptz;
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
            "DisplayNameChanged",
            "AvatarChanged",
            "UsernameChanged",
            "UserDeactivated",
            "UserReactivated",
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
            # Issue 20. Every read path that shows a user's names (members of workspaces and
            # channels, direct-message lists, blocks, /api/auth/me) joins this table: one
            # row changed here is the new name everywhere.
            case "DisplayNameChanged":
                cur.execute(
                    # Erased (issue 20), the name reads null: the row keeps what erasure left.
                    "UPDATE rm_users SET display_name = coalesce(%s, display_name)"
                    " WHERE user_id = %s",
                    (d["display_name"], event.stream),
                )
            case "AvatarChanged":
                cur.execute(
                    "UPDATE rm_users SET avatar_url = %s WHERE user_id = %s",
                    (d["avatar_url"], event.stream),
                )
            case "UsernameChanged":
                cur.execute(
                    "UPDATE rm_users SET username = coalesce(%s, username) WHERE user_id = %s",
                    (d["username"], event.stream),
                )
            case "UserDeactivated":
                cur.execute(
                    "UPDATE rm_users SET deactivated_at = %s WHERE user_id = %s",
                    (event.at, event.stream),
                )
            case "UserReactivated":
                cur.execute(
                    "UPDATE rm_users SET deactivated_at = NULL WHERE user_id = %s",
                    (event.stream,),
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
        "SELECT user_id::text, username, display_name, avatar_url,"
        " deactivated_at IS NOT NULL AS deactivated FROM rm_users WHERE user_id = %s",
        (user_id,),
    )
    return rows[0] if rows else None


def find_acquaintance(caller_id: str, username: str) -> Query[dict[str, Any] | None]:
    """The public profile of the active user holding ``username`` (normalised), if the
    caller is that user or shares a workspace with them; None otherwise, whether or not
    the name is taken (a caller must not learn who exists beyond their workspaces)."""
    rows = yield Statement(
        "SELECT u.user_id::text, u.username, u.display_name, u.avatar_url FROM rm_users u"
        " WHERE u.username = %s AND u.deactivated_at IS NULL AND (u.user_id = %s::uuid"
        "  OR EXISTS (SELECT 1 FROM rm_workspace_members a JOIN rm_workspace_members b"
        "   ON b.workspace_id = a.workspace_id AND b.user_id = u.user_id"
        "   WHERE a.user_id = %s::uuid))",
        (username, caller_id, caller_id),
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
