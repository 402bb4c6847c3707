"""Workspaces, membership, roles and invites over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response

from api.commands import Created, Written, execute, reply
from api.errors import problems
from api.reads import DEFAULT_LIMIT, check_limit, paged, read_cursor
from application.commands import (
    AcceptInvite,
    BanMember,
    CreateInvite,
    CreateRole,
    CreateWorkspace,
    GrantRole,
    JoinWorkspace,
    KickMember,
    LeaveWorkspace,
    RevokeRole,
    UnbanMember,
)
from domain.base import as_uuid
from domain.errors import NotAMember
from domain.rules import MAX_PASSWORD, MAX_WORKSPACE_NAME
from projections import presence as presence_views
from projections import workspaces as views

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


class RoleBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    permissions: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=64)
    ]


class WorkspaceView(msgspec.Struct):
    id: str
    name: str
    visibility: str
    owner_id: str
    member_count: int
    has_password: bool
    created_at: datetime
    is_member: bool


class WorkspaceList(msgspec.Struct):
    items: list[WorkspaceView]
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


def _member_view(cur: Any, request: Req, ws: str) -> dict[str, Any]:
    workspace = views.get_workspace(cur, ws, request.user)
    if workspace is None or not workspace["is_member"]:
        raise NotAMember("unknown workspace")
    return workspace


class WorkspaceController(Controller):
    path = "/api/workspaces"
    tags = ["workspaces"]

    @post("/", sync_to_thread=True, operation_id="CreateWorkspace", responses=WRITE_ERRORS)
    def create(self, request: Req, data: JSONBody[CreateWorkspaceBody]) -> Response[Created]:
        """Creates a workspace; its creator is its owner."""
        cmd = CreateWorkspace(name=data.name, visibility=data.visibility, password=data.password)
        return reply(execute(request, cmd, request.user), Created)

    @get("/", sync_to_thread=True, operation_id="ListMyWorkspaces", responses=READ_ERRORS)
    def list_mine(self, request: Req, min_position: FromQuery[int | None] = None) -> WorkspaceList:
        """The workspaces I belong to."""
        with read_cursor(request, min_position) as cur:
            rows = views.list_my_workspaces(cur, request.user)
        return WorkspaceList(items=[msgspec.convert(r, WorkspaceView) for r in rows])

    @get("/{ws:str}", sync_to_thread=True, operation_id="GetWorkspace", responses=READ_ERRORS)
    def show(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> WorkspaceView:
        """A workspace I belong to, or any public one."""
        with read_cursor(request, min_position) as cur:
            row = views.get_workspace(cur, _uuid(ws), request.user)
        if row is None:
            raise NotAMember("unknown workspace")
        return msgspec.convert(row, WorkspaceView)

    @post(
        "/{ws:str}/join",
        sync_to_thread=True,
        operation_id="JoinWorkspace",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    def join(
        self, request: Req, ws: FromPath[str], data: JSONBody[JoinBody | None] = None
    ) -> Response[Joined]:
        """Joins a public workspace (with its password, if it has one)."""
        cmd = JoinWorkspace(workspace_id=ws, password=data.password if data else None)
        return reply(execute(request, cmd, request.user), Joined)

    @post(
        "/{ws:str}/leave",
        sync_to_thread=True,
        operation_id="LeaveWorkspace",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    def leave(self, request: Req, ws: FromPath[str]) -> Response[Written]:
        """Leaves a workspace (the last owner cannot)."""
        return reply(execute(request, LeaveWorkspace(workspace_id=ws), request.user), Written)

    @get(
        "/{ws:str}/members", sync_to_thread=True, operation_id="ListMembers", responses=READ_ERRORS
    )
    def members(
        self,
        request: Req,
        ws: FromPath[str],
        limit: FromQuery[int] = DEFAULT_LIMIT,
        after: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> MemberPage:
        """Members in join order with their roles; pass ``next`` back as ``after``."""
        check_limit(limit)
        with read_cursor(request, min_position) as cur:
            _member_view(cur, request, _uuid(ws))
            rows = views.list_members(cur, _uuid(ws), limit=limit + 1, after=_uuid_or_none(after))
        items, next_cursor = paged(rows, limit, "user_id")
        return MemberPage([msgspec.convert(r, MemberView) for r in items], next_cursor)

    @get(
        "/{ws:str}/presence",
        sync_to_thread=True,
        operation_id="ListPresence",
        responses=READ_ERRORS,
    )
    def presence(
        self,
        request: Req,
        ws: FromPath[str],
        limit: FromQuery[int] = DEFAULT_LIMIT,
        after: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> PresencePage:
        """Who of the members is online (a WebSocket open on any instance)."""
        check_limit(limit)
        with read_cursor(request, min_position) as cur:
            _member_view(cur, request, _uuid(ws))
            rows = presence_views.workspace_presence(
                cur, _uuid(ws), limit=limit + 1, after=_uuid_or_none(after)
            )
        items, next_cursor = paged(rows, limit, "user_id")
        return PresencePage([msgspec.convert(r, PresenceView) for r in items], next_cursor)

    @get("/{ws:str}/roles", sync_to_thread=True, operation_id="ListRoles", responses=READ_ERRORS)
    def roles(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> RoleList:
        """Built-in and custom roles with their permissions."""
        with read_cursor(request, min_position) as cur:
            _member_view(cur, request, _uuid(ws))
            rows = views.list_roles(cur, _uuid(ws))
        return RoleList(items=[msgspec.convert(r, RoleView) for r in rows])

    @post(
        "/{ws:str}/invites",
        sync_to_thread=True,
        operation_id="CreateInvite",
        responses=WRITE_ERRORS,
    )
    def invite(
        self, request: Req, ws: FromPath[str], data: JSONBody[InviteBody | None] = None
    ) -> Response[InviteCode]:
        """Creates an invite code (needs ``invite``)."""
        body = data or InviteBody()
        cmd = CreateInvite(workspace_id=ws, max_uses=body.max_uses, expires_in_s=body.expires_in_s)
        return reply(execute(request, cmd, request.user), InviteCode)

    @post(
        "/{ws:str}/members/{user:str}/kick",
        sync_to_thread=True,
        operation_id="KickMember",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    def kick(self, request: Req, ws: FromPath[str], user: FromPath[str]) -> Response[Written]:
        return reply(
            execute(request, KickMember(workspace_id=ws, user_id=user), request.user), Written
        )

    @post(
        "/{ws:str}/members/{user:str}/ban",
        sync_to_thread=True,
        operation_id="BanMember",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    def ban(self, request: Req, ws: FromPath[str], user: FromPath[str]) -> Response[Written]:
        """Bans a user: removed if a member, and unable to rejoin until unbanned."""
        return reply(
            execute(request, BanMember(workspace_id=ws, user_id=user), request.user), Written
        )

    @delete(
        "/{ws:str}/bans/{user:str}",
        sync_to_thread=True,
        operation_id="UnbanMember",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    def unban(self, request: Req, ws: FromPath[str], user: FromPath[str]) -> Response[Written]:
        return reply(
            execute(request, UnbanMember(workspace_id=ws, user_id=user), request.user), Written
        )

    @post("/{ws:str}/roles", sync_to_thread=True, operation_id="CreateRole", responses=WRITE_ERRORS)
    def create_role(
        self, request: Req, ws: FromPath[str], data: JSONBody[RoleBody]
    ) -> Response[RoleCreated]:
        """Creates a custom role; nobody can create one with permissions they lack."""
        cmd = CreateRole(workspace_id=ws, name=data.name, permissions=data.permissions)
        return reply(execute(request, cmd, request.user), RoleCreated)

    @put(
        "/{ws:str}/members/{user:str}/roles/{role:str}",
        sync_to_thread=True,
        operation_id="GrantRole",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    def grant(
        self, request: Req, ws: FromPath[str], user: FromPath[str], role: FromPath[str]
    ) -> Response[Written]:
        """Grants a role; nobody grants a permission they do not hold, nor roles to themselves."""
        return reply(
            execute(request, GrantRole(workspace_id=ws, user_id=user, role=role), request.user),
            Written,
        )

    @delete(
        "/{ws:str}/members/{user:str}/roles/{role:str}",
        sync_to_thread=True,
        operation_id="RevokeRole",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    def revoke(
        self, request: Req, ws: FromPath[str], user: FromPath[str], role: FromPath[str]
    ) -> Response[Written]:
        """Revokes a role; the last owner keeps theirs."""
        return reply(
            execute(request, RevokeRole(workspace_id=ws, user_id=user, role=role), request.user),
            Written,
        )


class InviteController(Controller):
    path = "/api/invites"
    tags = ["workspaces"]

    @post(
        "/{code:str}/accept",
        sync_to_thread=True,
        operation_id="AcceptInvite",
        status_code=200,
        responses=problems(400, 401, 403, 404, 409, 410, 413, 422, 429),
    )
    def accept(self, request: Req, code: FromPath[str]) -> Response[Joined]:
        """Joins the invite's workspace (refused once expired or used up: 410)."""
        return reply(execute(request, AcceptInvite(code=code), request.user), Joined)


def _uuid(value: str) -> str:
    return str(as_uuid(value))


def _uuid_or_none(value: str | None) -> str | None:
    return None if value in (None, "") else _uuid(value or "")
