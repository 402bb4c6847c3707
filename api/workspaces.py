"""Workspaces, membership, roles and invites over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response
from psycopg import AsyncCursor

from api.commands import Created, Written, execute, reply
from api.errors import problems
from api.reads import DEFAULT_LIMIT, check_limit, paged, read_cursor_async
from application.commands import (
    AcceptInvite,
    BanMember,
    ChangeRolePermissions,
    ChangeWorkspaceVisibility,
    CreateInvite,
    CreateRole,
    CreateWorkspace,
    DeleteRole,
    DeleteWorkspace,
    GrantRole,
    JoinWorkspace,
    KickMember,
    LeaveWorkspace,
    RenameRole,
    RenameWorkspace,
    ReorderRoles,
    RevokeInvite,
    RevokeRole,
    SetDeletedMeansErased,
    TransferWorkspace,
    UnbanMember,
)
from domain.base import as_uuid
from domain.errors import NotAMember, PermissionDenied
from domain.rules import MAX_CUSTOM_ROLES, MAX_PASSWORD, MAX_WORKSPACE_NAME
from projections import presence as presence_views
from projections import read_state
from projections import workspaces as views
from projections.queries import run_async

Req = Request[str, Any, Any]
WRITE_ERRORS = problems(400, 401, 403, 404, 409, 413, 422, 429)
READ_ERRORS = problems(401, 404, 422, 429)


class CreateWorkspaceBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_WORKSPACE_NAME)]
    visibility: Literal["public", "private"] = "private"
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)] | None = None


class JoinBody(msgspec.Struct, forbid_unknown_fields=True):
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)] | None = None


class InviteBody(msgspec.Struct, forbid_unknown_fields=True):
    max_uses: int | None = None
    expires_in_s: int | None = None


class AcceptInviteBody(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class RoleBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    permissions: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=64)
    ]


# Issue 20: the whole life of a workspace, its roles and invites.
# Raw input may be looser than the domain's limits (it strips white space first): these
# only stop absurd sizes early, the domain gives the precise message.
WorkspaceName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_WORKSPACE_NAME * 2)]
RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Permissions = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=64)
]


class RenameWorkspaceBody(msgspec.Struct, forbid_unknown_fields=True):
    name: WorkspaceName


class VisibilityBody(msgspec.Struct, forbid_unknown_fields=True):
    visibility: Literal["public", "private"]
    # A public workspace's join password; left out: none (the old one stops working).
    password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)] | None = None


class DeletedMeansErasedBody(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool


class TransferBody(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class DeleteWorkspaceBody(msgspec.Struct, forbid_unknown_fields=True):
    # The workspace's exact name: what stands between a slip and the loss of a workspace.
    confirm_name: WorkspaceName


class RenameRoleBody(msgspec.Struct, forbid_unknown_fields=True):
    name: RoleName


class RolePermissionsBody(msgspec.Struct, forbid_unknown_fields=True):
    permissions: Permissions


class RoleOrderBody(msgspec.Struct, forbid_unknown_fields=True):
    # Every custom role, highest first.
    roles: Annotated[list[RoleName], msgspec.Meta(max_length=MAX_CUSTOM_ROLES)]


class InviteView(msgspec.Struct):
    id: str
    created_by: str | None
    max_uses: int | None
    uses: int
    uses_left: int | None
    expires_at: datetime
    expired: bool


class InviteList(msgspec.Struct):
    items: list[InviteView]
    next: str | None = None


class RoleRenamed(msgspec.Struct):
    name: str
    position: int | None


class WorkspaceView(msgspec.Struct):
    id: str
    name: str
    visibility: str
    owner_id: str
    member_count: int
    has_password: bool
    created_at: datetime
    is_member: bool


class ListedWorkspace(WorkspaceView):
    # Issue 19: the caller's unread and mention counts summed over the channels they may
    # read in it (projections/read_state.py).
    unread_count: int = 0
    mention_count: int = 0


class WorkspaceList(msgspec.Struct):
    items: list[ListedWorkspace]
    next: str | None = None


class MemberView(msgspec.Struct):
    user_id: str
    roles: list[str]
    joined_at: datetime
    username: str | None
    display_name: str | None


class MemberPage(msgspec.Struct):
    items: list[MemberView]
    next: str | None


class RoleView(msgspec.Struct):
    name: str
    permissions: list[str]
    builtin: bool


class RoleList(msgspec.Struct):
    items: list[RoleView]
    next: str | None = None


class PresenceView(msgspec.Struct):
    user_id: str
    status: str
    last_seen: datetime | None


class PresencePage(msgspec.Struct):
    items: list[PresenceView]
    next: str | None


class InviteCode(msgspec.Struct):
    code: str
    position: int | None


class Joined(msgspec.Struct):
    workspace_id: str
    position: int | None


class RoleCreated(msgspec.Struct):
    name: str
    position: int | None


async def _member_view(cur: AsyncCursor[Any], request: Req, ws: str) -> dict[str, Any]:
    workspace = await run_async(cur, views.get_workspace(ws, request.user))
    if workspace is None or not workspace["is_member"]:
        raise NotAMember("unknown workspace")
    return workspace


class WorkspaceController(Controller):
    path = "/api/workspaces"
    tags = ["workspaces"]

    @post("/", operation_id="CreateWorkspace", responses=WRITE_ERRORS)
    async def create(self, request: Req, data: JSONBody[CreateWorkspaceBody]) -> Response[Created]:
        """Creates a workspace; its creator is its owner."""
        cmd = CreateWorkspace(name=data.name, visibility=data.visibility, password=data.password)
        return reply(await execute(request, cmd, request.user), Created)

    @get("/", operation_id="ListMyWorkspaces", responses=READ_ERRORS)
    async def list_mine(
        self, request: Req, min_position: FromQuery[int | None] = None
    ) -> WorkspaceList:
        """The workspaces I belong to."""
        async with read_cursor_async(request, min_position) as cur:
            rows = await run_async(cur, views.list_my_workspaces(request.user))
            counts = await run_async(cur, read_state.workspace_counts(request.user))
        return WorkspaceList(
            items=[msgspec.convert({**r, **counts.get(r["id"], {})}, ListedWorkspace) for r in rows]
        )

    @get("/{ws:str}", operation_id="GetWorkspace", responses=READ_ERRORS)
    async def show(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> WorkspaceView:
        """A workspace I belong to, or any public one."""
        async with read_cursor_async(request, min_position) as cur:
            row = await run_async(cur, views.get_workspace(_uuid(ws), request.user))
        if row is None:
            raise NotAMember("unknown workspace")
        return msgspec.convert(row, WorkspaceView)

    @post(
        "/{ws:str}/join",
        operation_id="JoinWorkspace",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def join(
        self, request: Req, ws: FromPath[str], data: JSONBody[JoinBody | None] = None
    ) -> Response[Joined]:
        """Joins a public workspace (with its password, if it has one)."""
        cmd = JoinWorkspace(workspace_id=ws, password=data.password if data else None)
        return reply(await execute(request, cmd, request.user), Joined)

    @post(
        "/{ws:str}/leave",
        operation_id="LeaveWorkspace",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def leave(self, request: Req, ws: FromPath[str]) -> Response[Written]:
        """Leaves a workspace (the last owner cannot)."""
        return reply(await execute(request, LeaveWorkspace(workspace_id=ws), request.user), Written)

    @get("/{ws:str}/members", operation_id="ListMembers", responses=READ_ERRORS)
    async def members(
        self,
        request: Req,
        ws: FromPath[str],
        limit: FromQuery[int] = DEFAULT_LIMIT,
        after: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> MemberPage:
        """Members in join order with their roles; pass ``next`` back as ``after``."""
        check_limit(limit)
        async with read_cursor_async(request, min_position) as cur:
            await _member_view(cur, request, _uuid(ws))
            rows = await run_async(
                cur, views.list_members(_uuid(ws), limit=limit + 1, after=_uuid_or_none(after))
            )
        items, next_cursor = paged(rows, limit, "user_id")
        return MemberPage([msgspec.convert(r, MemberView) for r in items], next_cursor)

    @get("/{ws:str}/presence", operation_id="ListPresence", responses=READ_ERRORS)
    async def presence(
        self,
        request: Req,
        ws: FromPath[str],
        limit: FromQuery[int] = DEFAULT_LIMIT,
        after: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> PresencePage:
        """Who of the members is online (a WebSocket open on any instance)."""
        check_limit(limit)
        async with read_cursor_async(request, min_position) as cur:
            await _member_view(cur, request, _uuid(ws))
            rows = await run_async(
                cur,
                presence_views.workspace_presence(
                    _uuid(ws), limit=limit + 1, after=_uuid_or_none(after)
                ),
            )
        items, next_cursor = paged(rows, limit, "user_id")
        return PresencePage([msgspec.convert(r, PresenceView) for r in items], next_cursor)

    @get("/{ws:str}/roles", operation_id="ListRoles", responses=READ_ERRORS)
    async def roles(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> RoleList:
        """Built-in and custom roles with their permissions."""
        async with read_cursor_async(request, min_position) as cur:
            await _member_view(cur, request, _uuid(ws))
            rows = await run_async(cur, views.list_roles(_uuid(ws)))
        return RoleList(items=[msgspec.convert(r, RoleView) for r in rows])

    @post(
        "/{ws:str}/invites",
        operation_id="CreateInvite",
        responses=WRITE_ERRORS,
    )
    async def invite(
        self, request: Req, ws: FromPath[str], data: JSONBody[InviteBody | None] = None
    ) -> Response[InviteCode]:
        """Creates an invite code (needs ``invite``)."""
        body = data or InviteBody()
        cmd = CreateInvite(workspace_id=ws, max_uses=body.max_uses, expires_in_s=body.expires_in_s)
        return reply(await execute(request, cmd, request.user), InviteCode)

    @post(
        "/{ws:str}/members/{user:str}/kick",
        operation_id="KickMember",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def kick(self, request: Req, ws: FromPath[str], user: FromPath[str]) -> Response[Written]:
        return reply(
            await execute(request, KickMember(workspace_id=ws, user_id=user), request.user), Written
        )

    @post(
        "/{ws:str}/members/{user:str}/ban",
        operation_id="BanMember",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def ban(self, request: Req, ws: FromPath[str], user: FromPath[str]) -> Response[Written]:
        """Bans a user: removed if a member, and unable to rejoin until unbanned."""
        return reply(
            await execute(request, BanMember(workspace_id=ws, user_id=user), request.user), Written
        )

    @delete(
        "/{ws:str}/bans/{user:str}",
        operation_id="UnbanMember",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def unban(
        self, request: Req, ws: FromPath[str], user: FromPath[str]
    ) -> Response[Written]:
        return reply(
            await execute(request, UnbanMember(workspace_id=ws, user_id=user), request.user),
            Written,
        )

    @post("/{ws:str}/roles", operation_id="CreateRole", responses=WRITE_ERRORS)
    async def create_role(
        self, request: Req, ws: FromPath[str], data: JSONBody[RoleBody]
    ) -> Response[RoleCreated]:
        """Creates a custom role; nobody can create one with permissions they lack."""
        cmd = CreateRole(workspace_id=ws, name=data.name, permissions=data.permissions)
        return reply(await execute(request, cmd, request.user), RoleCreated)

    @put(
        "/{ws:str}/members/{user:str}/roles/{role:str}",
        operation_id="GrantRole",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def grant(
        self, request: Req, ws: FromPath[str], user: FromPath[str], role: FromPath[str]
    ) -> Response[Written]:
        """Grants a role; nobody grants a permission they do not hold, nor roles to themselves."""
        return reply(
            await execute(
                request, GrantRole(workspace_id=ws, user_id=user, role=role), request.user
            ),
            Written,
        )

    @delete(
        "/{ws:str}/members/{user:str}/roles/{role:str}",
        operation_id="RevokeRole",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def revoke(
        self, request: Req, ws: FromPath[str], user: FromPath[str], role: FromPath[str]
    ) -> Response[Written]:
        """Revokes a role; the last owner keeps theirs."""
        return reply(
            await execute(
                request, RevokeRole(workspace_id=ws, user_id=user, role=role), request.user
            ),
            Written,
        )


class WorkspaceLifecycleController(Controller):
    """Issue 20: renaming, visibility, ownership and deletion of a workspace; the roles' own
    life; listing and revoking invites."""

    path = "/api/workspaces"
    tags = ["workspaces"]

    @patch("/{ws:str}", operation_id="RenameWorkspace", responses=WRITE_ERRORS)
    async def rename(
        self, request: Req, ws: FromPath[str], data: JSONBody[RenameWorkspaceBody]
    ) -> Response[Written]:
        """Renames the workspace (needs ``manage_workspace``)."""
        cmd = RenameWorkspace(workspace_id=ws, name=data.name)
        return reply(await execute(request, cmd, request.user), Written)

    @put(
        "/{ws:str}/visibility",
        operation_id="ChangeWorkspaceVisibility",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def visibility(
        self, request: Req, ws: FromPath[str], data: JSONBody[VisibilityBody]
    ) -> Response[Written]:
        """Sets visibility and the join password of a public workspace (needs
        ``manage_workspace``); without ``password`` joining needs none."""
        cmd = ChangeWorkspaceVisibility(
            workspace_id=ws, visibility=data.visibility, password=data.password
        )
        return reply(await execute(request, cmd, request.user), Written)

    @put(
        "/{ws:str}/settings/deleted-means-erased",
        operation_id="SetDeletedMeansErased",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def deleted_means_erased(
        self, request: Req, ws: FromPath[str], data: JSONBody[DeletedMeansErasedBody]
    ) -> Response[Written]:
        """Whether deleting a message erases its text (issue 20; needs
        ``manage_workspace``; on by default): on, a deletion destroys the keys of every text
        the message had, and the text reads as erased on every read path, audits and time
        travel included; off, a deletion only hides it from members."""
        cmd = SetDeletedMeansErased(workspace_id=ws, enabled=data.enabled)
        return reply(await execute(request, cmd, request.user), Written)

    @post(
        "/{ws:str}/transfer",
        operation_id="TransferWorkspace",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def transfer(
        self, request: Req, ws: FromPath[str], data: JSONBody[TransferBody]
    ) -> Response[Written]:
        """Hands the workspace to another member (owners only): they become its owner, the
        giver an admin."""
        cmd = TransferWorkspace(workspace_id=ws, user_id=data.user_id)
        return reply(await execute(request, cmd, request.user), Written)

    @delete("/{ws:str}", operation_id="DeleteWorkspace", status_code=200, responses=WRITE_ERRORS)
    async def delete_workspace(
        self, request: Req, ws: FromPath[str], data: JSONBody[DeleteWorkspaceBody]
    ) -> Response[Written]:
        """Deletes the workspace (owners only, ``confirm_name`` its exact name): every
        member loses access at once; the log keeps what it held."""
        cmd = DeleteWorkspace(workspace_id=ws, confirm_name=data.confirm_name)
        return reply(await execute(request, cmd, request.user), Written)

    @get(
        "/{ws:str}/invites", operation_id="ListInvites", responses=problems(401, 403, 404, 422, 429)
    )
    async def invites(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> InviteList:
        """The invites not revoked, with uses left and expiry (needs ``invite``, which
        creates them)."""
        async with read_cursor_async(request, min_position) as cur:
            await _member_view(cur, request, _uuid(ws))
            perms = await run_async(cur, views.permissions_of(_uuid(ws), request.user))
            if perms is None or "invite" not in perms:
                raise PermissionDenied("missing permission 'invite'")
            rows = await run_async(cur, views.list_invites(_uuid(ws)))
        return InviteList(items=[msgspec.convert(r, InviteView) for r in rows])

    @delete(
        "/{ws:str}/invites/{invite:str}",
        operation_id="RevokeInvite",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def revoke_invite(
        self, request: Req, ws: FromPath[str], invite: FromPath[str]
    ) -> Response[Written]:
        """Revokes an invite (needs ``invite``; another's only below one's own rank): it
        then answers as an unknown code."""
        cmd = RevokeInvite(workspace_id=ws, invite_id=invite)
        return reply(await execute(request, cmd, request.user), Written)

    @patch("/{ws:str}/roles/{role:str}", operation_id="RenameRole", responses=WRITE_ERRORS)
    async def rename_role(
        self, request: Req, ws: FromPath[str], role: FromPath[str], data: JSONBody[RenameRoleBody]
    ) -> Response[RoleRenamed]:
        """Renames a custom role below one's own (needs ``manage_roles``); holders keep it."""
        cmd = RenameRole(workspace_id=ws, role=role, name=data.name)
        return reply(await execute(request, cmd, request.user), RoleRenamed)

    @put(
        "/{ws:str}/roles/{role:str}/permissions",
        operation_id="ChangeRolePermissions",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def role_permissions(
        self,
        request: Req,
        ws: FromPath[str],
        role: FromPath[str],
        data: JSONBody[RolePermissionsBody],
    ) -> Response[Written]:
        """Sets a custom role's permissions (below one's own role; nobody gives or takes away
        a permission they do not hold)."""
        cmd = ChangeRolePermissions(workspace_id=ws, role=role, permissions=data.permissions)
        return reply(await execute(request, cmd, request.user), Written)

    @put(
        "/{ws:str}/roles/order",
        operation_id="ReorderRoles",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def reorder_roles(
        self, request: Req, ws: FromPath[str], data: JSONBody[RoleOrderBody]
    ) -> Response[Written]:
        """Orders the custom roles, highest first: the full list, in which the roles at or
        above one's own keep their places (needs ``manage_roles``)."""
        cmd = ReorderRoles(workspace_id=ws, roles=data.roles)
        return reply(await execute(request, cmd, request.user), Written)

    @delete(
        "/{ws:str}/roles/{role:str}",
        operation_id="DeleteRole",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def delete_role(
        self, request: Req, ws: FromPath[str], role: FromPath[str]
    ) -> Response[Written]:
        """Deletes a custom role below one's own: its holders lose it at once."""
        cmd = DeleteRole(workspace_id=ws, role=role)
        return reply(await execute(request, cmd, request.user), Written)


class InviteController(Controller):
    path = "/api/invites"
    tags = ["workspaces"]

    @post(
        "/{code:str}/accept",
        operation_id="AcceptInvite",
        status_code=200,
        responses=problems(400, 401, 403, 404, 409, 410, 413, 422, 429),
    )
    async def accept(self, request: Req, code: FromPath[str]) -> Response[Joined]:
        """Joins the invite's workspace (refused once expired or used up: 410). Prefer
        ``POST /api/invites/accept`` with the code in the body: a code in a URL travels into
        logs and browser histories (the server's access log redacts it)."""
        return reply(await execute(request, AcceptInvite(code=code), request.user), Joined)

    @post(
        "/accept",
        operation_id="AcceptInviteByBody",
        status_code=200,
        responses=problems(400, 401, 403, 404, 409, 410, 413, 422, 429),
    )
    async def accept_body(self, request: Req, data: JSONBody[AcceptInviteBody]) -> Response[Joined]:
        """Joins the invite's workspace, the code in the body (refused once expired or used
        up: 410)."""
        return reply(await execute(request, AcceptInvite(code=data.code), request.user), Joined)


def _uuid(value: str) -> str:
    return str(as_uuid(value))


def _uuid_or_none(value: str | None) -> str | None:
    return None if value in (None, "") else _uuid(value or "")
