"""Read model of workspaces, their members with roles, custom roles, bans and invites."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor
from psycopg_pool import ConnectionPool

from domain.permissions import ADMIN, BUILTIN_ROLES, DEFAULT_ROLE, MEMBER, OWNER, VIEWER
from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement, run

# At most this many invites are listed (the newest expiry first).
MAX_LISTED_INVITES = 500


class WorkspacesProjection(EventProjection):
    name = "workspaces"
    tables = (
        "rm_workspaces",
        "rm_workspace_members",
        "rm_workspace_roles",
        "rm_workspace_bans",
        "rm_workspace_invites",
    )
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_workspaces (
        workspace_id uuid PRIMARY KEY,
        name text NOT NULL,
        visibility text NOT NULL,
        has_password boolean NOT NULL,
        owner_id uuid NOT NULL,
        member_count integer NOT NULL,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rm_workspace_members (
        workspace_id uuid NOT NULL,
        user_id uuid NOT NULL,
        roles text[] NOT NULL,
        joined_at timestamptz NOT NULL,
        PRIMARY KEY (workspace_id, user_id)
    );
    CREATE INDEX IF NOT EXISTS rm_workspace_members_user ON rm_workspace_members (user_id);
    CREATE TABLE IF NOT EXISTS rm_workspace_roles (
        workspace_id uuid NOT NULL,
        name text NOT NULL,
        permissions text[] NOT NULL,
        builtin boolean NOT NULL,
        PRIMARY KEY (workspace_id, name)
    );
    CREATE TABLE IF NOT EXISTS rm_workspace_bans (
        workspace_id uuid NOT NULL,
        user_id uuid NOT NULL,
        banned_by uuid,
        banned_at timestamptz NOT NULL,
        PRIMARY KEY (workspace_id, user_id)
    );
    CREATE TABLE IF NOT EXISTS rm_workspace_invites (
        code_hash text PRIMARY KEY,
        workspace_id uuid NOT NULL,
        created_by uuid,
        max_uses integer,
        uses integer NOT NULL,
        expires_at timestamptz NOT NULL
    );
    -- Issue 20: a custom role's place among the custom roles (1: the highest).
    ALTER TABLE rm_workspace_roles ADD COLUMN IF NOT EXISTS position integer NOT NULL DEFAULT 0;
    """
    handles = frozenset(
        {
            "WorkspaceCreated",
            "MemberJoined",
            "MemberLeft",
            "MemberKicked",
            "MemberBanned",
            "MemberUnbanned",
            "InviteCreated",
            "RoleCreated",
            "RoleGranted",
            "RoleRevoked",
            # Issue 20: the whole life of a workspace, its roles and invites.
            "WorkspaceRenamed",
            "WorkspaceVisibilityChanged",
            "WorkspaceOwnershipTransferred",
            "WorkspaceDeleted",
            "InviteRevoked",
            "RoleRenamed",
            "RolePermissionsChanged",
            "RolesReordered",
            "RoleDeleted",
        }
    )

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d, ws = event.data, event.stream
        match event.type:
            case "WorkspaceCreated":
                cur.execute(
                    "INSERT INTO rm_workspaces (workspace_id, name, visibility, has_password,"
                    " owner_id, member_count, created_at) VALUES (%s, %s, %s, %s, %s, 1, %s)",
                    (ws, d["name"], d["visibility"], d["has_password"], d["owner_id"], event.at),
                )
                cur.execute(
                    "INSERT INTO rm_workspace_members (workspace_id, user_id, roles, joined_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (ws, d["owner_id"], [OWNER], event.at),
                )
                cur.executemany(
                    "INSERT INTO rm_workspace_roles (workspace_id, name, permissions, builtin)"
                    " VALUES (%s, %s, %s, true)",
                    [(ws, name, sorted(perms)) for name, perms in BUILTIN_ROLES.items()],
                )
            case "MemberJoined":
                cur.execute(
                    "INSERT INTO rm_workspace_members (workspace_id, user_id, roles, joined_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (ws, d["user_id"], [DEFAULT_ROLE], event.at),
                )
                self._count(cur, ws, +1)
                if d.get("invite_hash"):
                    cur.execute(
                        "UPDATE rm_workspace_invites SET uses = uses + 1 WHERE code_hash = %s",
                        (d["invite_hash"],),
                    )
            case "MemberLeft" | "MemberKicked":
                self._remove_member(cur, ws, d["user_id"])
            case "MemberBanned":
                self._remove_member(cur, ws, d["user_id"])
                cur.execute(
                    "INSERT INTO rm_workspace_bans (workspace_id, user_id, banned_by, banned_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (ws, d["user_id"], event.actor, event.at),
                )
            case "MemberUnbanned":
                cur.execute(
                    "DELETE FROM rm_workspace_bans WHERE workspace_id = %s AND user_id = %s",
                    (ws, d["user_id"]),
                )
            case "InviteCreated":
                cur.execute(
                    "INSERT INTO rm_workspace_invites (code_hash, workspace_id, created_by,"
                    " max_uses, uses, expires_at) VALUES (%s, %s, %s, %s, 0, %s)",
                    (d["code_hash"], ws, event.actor, d["max_uses"], d["expires_at"]),
                )
            case "RoleCreated":
                # The newest custom role is the lowest (domain/workspaces.py).
                cur.execute(
                    "INSERT INTO rm_workspace_roles (workspace_id, name, permissions, builtin,"
                    " position) SELECT %s, %s, %s, false, coalesce(max(position), 0) + 1"
                    " FROM rm_workspace_roles WHERE workspace_id = %s AND NOT builtin",
                    (ws, d["name"], d["permissions"], ws),
                )
            case "RoleGranted":
                cur.execute(
                    "UPDATE rm_workspace_members SET roles = array_append(roles, %s)"
                    " WHERE workspace_id = %s AND user_id = %s",
                    (d["role"], ws, d["user_id"]),
                )
            case "RoleRevoked":
                cur.execute(
                    "UPDATE rm_workspace_members SET roles = array_remove(roles, %s)"
                    " WHERE workspace_id = %s AND user_id = %s",
                    (d["role"], ws, d["user_id"]),
                )

            case _:
                self._apply_lifecycle(cur, event)

    @staticmethod
    def _apply_lifecycle(cur: Cursor[Any], event: LogEvent) -> None:
        """The changes issue 20 added: renames, visibility, ownership, deletion, revoked
        invites and the roles' own life."""
        d, ws = event.data, event.stream
        match event.type:
            case "WorkspaceRenamed":
                cur.execute(
                    "UPDATE rm_workspaces SET name = %s WHERE workspace_id = %s", (d["name"], ws)
                )
            case "WorkspaceVisibilityChanged":
                cur.execute(
                    "UPDATE rm_workspaces SET visibility = %s, has_password = %s"
                    " WHERE workspace_id = %s",
                    (d["visibility"], d["has_password"], ws),
                )
            case "WorkspaceOwnershipTransferred":
                cur.execute(
                    "UPDATE rm_workspaces SET owner_id = %s WHERE workspace_id = %s",
                    (d["owner_id"], ws),
                )
                cur.execute(
                    "UPDATE rm_workspace_members SET roles = CASE"
                    "   WHEN user_id = %(to)s AND NOT %(owner)s = ANY(roles)"
                    "     THEN array_append(roles, %(owner)s)"
                    "   WHEN user_id = %(from)s THEN array_remove(roles, %(owner)s)"
                    "     || CASE WHEN %(admin)s = ANY(roles) THEN '{}'::text[]"
                    "        ELSE ARRAY[%(admin)s] END"
                    "   ELSE roles END"
                    " WHERE workspace_id = %(ws)s AND user_id IN (%(to)s, %(from)s)",
                    {
                        "to": d["owner_id"],
                        "from": d["previous_owner_id"],
                        "owner": OWNER,
                        "admin": ADMIN,
                        "ws": ws,
                    },
                )
            case "WorkspaceDeleted":
                # Members lose it at once; the log keeps what it held.
                for table in (
                    "rm_workspace_members",
                    "rm_workspace_roles",
                    "rm_workspace_bans",
                    "rm_workspace_invites",
                    "rm_workspaces",
                ):
                    cur.execute(f"DELETE FROM {table} WHERE workspace_id = %s", (ws,))
            case "InviteRevoked":
                cur.execute(
                    "DELETE FROM rm_workspace_invites WHERE code_hash = %s AND workspace_id = %s",
                    (d["code_hash"], ws),
                )
            case "RoleRenamed":
                cur.execute(
                    "UPDATE rm_workspace_roles SET name = %s WHERE workspace_id = %s AND name = %s",
                    (d["new_name"], ws, d["name"]),
                )
                cur.execute(
                    "UPDATE rm_workspace_members SET roles = array_replace(roles, %s, %s)"
                    " WHERE workspace_id = %s AND %s = ANY(roles)",
                    (d["name"], d["new_name"], ws, d["name"]),
                )
            case "RolePermissionsChanged":
                cur.execute(
                    "UPDATE rm_workspace_roles SET permissions = %s"
                    " WHERE workspace_id = %s AND name = %s",
                    (d["permissions"], ws, d["name"]),
                )
            case "RolesReordered":
                cur.execute(
                    "UPDATE rm_workspace_roles SET position = array_position(%s::text[], name)"
                    " WHERE workspace_id = %s AND NOT builtin",
                    (d["names"], ws),
                )
            case "RoleDeleted":
                cur.execute(
                    "DELETE FROM rm_workspace_roles WHERE workspace_id = %s AND name = %s",
                    (ws, d["name"]),
                )
                cur.execute(
                    "UPDATE rm_workspace_members SET roles = array_remove(roles, %s)"
                    " WHERE workspace_id = %s AND %s = ANY(roles)",
                    (d["name"], ws, d["name"]),
                )

    @staticmethod
    def _remove_member(cur: Cursor[Any], ws: object, user_id: str) -> None:
        # One statement, no result to wait for: the runner pipelines its writes.
        cur.execute(
            "WITH gone AS (DELETE FROM rm_workspace_members"
            " WHERE workspace_id = %s AND user_id = %s RETURNING 1)"
            " UPDATE rm_workspaces SET member_count = member_count - (SELECT count(*) FROM gone)"
            " WHERE workspace_id = %s",
            (ws, user_id, ws),
        )

    @staticmethod
    def _count(cur: Cursor[Any], ws: object, delta: int) -> None:
        cur.execute(
            "UPDATE rm_workspaces SET member_count = member_count + %s WHERE workspace_id = %s",
            (delta, ws),
        )


# -- queries ---------------------------------------------------------------------------------

_WORKSPACE_COLUMNS = (
    "w.workspace_id::text AS id, w.name, w.visibility, w.owner_id::text, w.member_count,"
    " w.has_password, w.created_at"
)


def permissions_of(workspace_id: str, user_id: str) -> Query[frozenset[str] | None]:
    """A member's permissions in a workspace, or None when not a member."""
    rows = yield Statement(
        "SELECT coalesce(array_agg(DISTINCT p), '{}') AS perms, count(m.user_id) AS n"
        " FROM rm_workspace_members m"
        " LEFT JOIN rm_workspace_roles r"
        "   ON r.workspace_id = m.workspace_id AND r.name = ANY(m.roles)"
        " LEFT JOIN LATERAL unnest(r.permissions) AS p ON true"
        " WHERE m.workspace_id = %s AND m.user_id = %s",
        (workspace_id, user_id),
    )
    if not rows or rows[0]["n"] == 0:
        return None
    return frozenset(p for p in rows[0]["perms"] if p is not None)


def get_workspace(workspace_id: str, user_id: str) -> Query[dict[str, Any] | None]:
    """A workspace as the user may see it: members see it, others only if it is public."""
    rows = yield Statement(
        f"SELECT {_WORKSPACE_COLUMNS},"
        " EXISTS (SELECT 1 FROM rm_workspace_members m"
        "   WHERE m.workspace_id = w.workspace_id AND m.user_id = %s) AS is_member"
        " FROM rm_workspaces w WHERE w.workspace_id = %s",
        (user_id, workspace_id),
    )
    if not rows or (rows[0]["visibility"] != "public" and not rows[0]["is_member"]):
        return None
    return rows[0]


def list_my_workspaces(user_id: str) -> Query[list[dict[str, Any]]]:
    return (
        yield Statement(
            f"SELECT {_WORKSPACE_COLUMNS}, true AS is_member FROM rm_workspaces w"
            " JOIN rm_workspace_members m ON m.workspace_id = w.workspace_id"
            " WHERE m.user_id = %s ORDER BY w.created_at, w.workspace_id",
            (user_id,),
        )
    )


def list_members(
    workspace_id: str, *, limit: int, after: str | None
) -> Query[list[dict[str, Any]]]:
    """Members in join order; ``after`` is the last user id of the previous page."""
    return (
        yield Statement(
            "SELECT m.user_id::text, m.roles, m.joined_at, u.username, u.display_name"
            " FROM rm_workspace_members m LEFT JOIN rm_users u ON u.user_id = m.user_id"
            # A deactivated account (issue 20) is no active member: left out until reactivated.
            " WHERE m.workspace_id = %s AND u.deactivated_at IS NULL"
            " AND (%s::uuid IS NULL OR (m.joined_at, m.user_id) >"
            "   (SELECT joined_at, user_id FROM rm_workspace_members"
            "    WHERE workspace_id = %s AND user_id = %s::uuid))"
            " ORDER BY m.joined_at, m.user_id LIMIT %s",
            (workspace_id, after, workspace_id, after, limit),
        )
    )


def list_roles(workspace_id: str) -> Query[list[dict[str, Any]]]:
    """Every role, highest first: owner, admin, the custom roles in their order, member,
    viewer (the hierarchy of domain/workspaces.py)."""
    return (
        yield Statement(
            "SELECT name, permissions, builtin FROM rm_workspace_roles"
            " WHERE workspace_id = %s ORDER BY CASE name"
            "   WHEN %s THEN 0 WHEN %s THEN 1 WHEN %s THEN 3 WHEN %s THEN 4 ELSE 2 END,"
            " CASE WHEN builtin THEN 0 ELSE position END, name",
            (workspace_id, OWNER, ADMIN, MEMBER, VIEWER),
        )
    )


def list_invites(workspace_id: str) -> Query[list[dict[str, Any]]]:
    """The workspace's invites not revoked, newest expiry first, with uses left (None: no
    limit) and whether they have expired. An invite's id is its code's hash (never the code,
    which is not stored)."""
    return (
        yield Statement(
            "SELECT code_hash AS id, created_by::text, max_uses, uses,"
            " CASE WHEN max_uses IS NULL THEN NULL ELSE greatest(max_uses - uses, 0) END"
            "   AS uses_left,"
            " expires_at, expires_at <= now() AS expired"
            " FROM rm_workspace_invites WHERE workspace_id = %s"
            " ORDER BY expires_at DESC, code_hash LIMIT %s",
            (workspace_id, MAX_LISTED_INVITES),
        )
    )


def holds_anywhere(user_id: str, permission: str) -> Query[bool]:
    """Whether the user holds the permission in at least one workspace."""
    rows = yield Statement(
        "SELECT EXISTS (SELECT 1 FROM rm_workspace_members m JOIN rm_workspace_roles r"
        " ON r.workspace_id = m.workspace_id AND r.name = ANY(m.roles)"
        " WHERE m.user_id = %s AND %s = ANY(r.permissions)) AS held",
        (user_id, permission),
    )
    return bool(rows and rows[0]["held"])


def shared_workspaces(user_a: str, user_b: str) -> Query[list[str]]:
    """The workspaces both users are members of, as the read model knows them."""
    rows = yield Statement(
        "SELECT a.workspace_id::text FROM rm_workspace_members a"
        " JOIN rm_workspace_members b ON b.workspace_id = a.workspace_id AND b.user_id = %s"
        " WHERE a.user_id = %s ORDER BY a.workspace_id LIMIT 20",
        (user_b, user_a),
    )
    return [row["workspace_id"] for row in rows]


class WorkspaceDirectory:
    """application.ports.Directory over the workspaces read model."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def shared_workspaces(self, user_a: str, user_b: str) -> list[str]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            return run(cur, shared_workspaces(user_a, user_b))

    def online(self, user_ids: Sequence[str]) -> set[str]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT user_id::text AS user_id FROM rm_presence"
                " WHERE online AND user_id::text = ANY(%s)",
                (list(user_ids),),
            )
            return {row["user_id"] for row in cur.fetchall()}
