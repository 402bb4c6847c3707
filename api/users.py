"""Users over HTTP: whom the caller blocks; their profile, deactivation, and finding a
user by name among the people one shares a workspace with (issue 20)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response

from api.auth import Password, account_key, claims_of, end_tokens, live_sessions
from api.auth_limits import LoginThrottle
from api.commands import Written, execute, reply, services_of
from api.errors import problems
from api.rate_limits import client_address
from api.reads import read_cursor_async
from application.commands import BlockUser, ChangeProfile, DeactivateAccount, UnblockUser
from domain.errors import DomainError, NotFound, PermissionDenied
from domain.identity import MAX_AVATAR_URL, User
from domain.rules import MAX_DISPLAY_NAME, normalise_username
from projections.queries import run_async
from projections.users import find_acquaintance, list_blocked

Req = Request[str, Any, Any]
WRITE_ERRORS = problems(400, 401, 403, 404, 409, 422, 429)
READ_ERRORS = problems(401, 422, 429)


class BlockedUser(msgspec.Struct):
    user_id: str
    username: str | None
    display_name: str | None
    blocked_at: datetime


class BlockedList(msgspec.Struct):
    items: list[BlockedUser]


class UserController(Controller):
    path = "/api/users/me/blocks"
    tags = ["users"]

    @get("/", operation_id="ListBlockedUsers", responses=READ_ERRORS)
    async def blocked(
        self, request: Req, min_position: FromQuery[int | None] = None
    ) -> BlockedList:
        """Whom I block: they cannot direct-message me, and their mentions do not reach me."""
        async with read_cursor_async(request, min_position) as cur:
            rows = await run_async(cur, list_blocked(request.user))
        return BlockedList(items=[msgspec.convert(r, BlockedUser) for r in rows])

    @put("/{user:str}", operation_id="BlockUser", status_code=200, responses=WRITE_ERRORS)
    async def block(self, request: Req, user: FromPath[str]) -> Response[Written]:
        return reply(await execute(request, BlockUser(user_id=user), request.user), Written)

    @delete("/{user:str}", operation_id="UnblockUser", status_code=200, responses=WRITE_ERRORS)
    async def unblock(self, request: Req, user: FromPath[str]) -> Response[Written]:
        return reply(await execute(request, UnblockUser(user_id=user), request.user), Written)


# -- the profile and the account (issue 20) ----------------------------------------------------


class ProfileBody(msgspec.Struct, forbid_unknown_fields=True):
    """A field left out keeps its value; ``avatar_url: ""`` removes the avatar."""

    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DISPLAY_NAME)] | None = (
        None
    )
    avatar_url: Annotated[str, msgspec.Meta(max_length=MAX_AVATAR_URL)] | None = None
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class DeactivateBody(msgspec.Struct, forbid_unknown_fields=True):
    password: Password


class PublicProfile(msgspec.Struct):
    user_id: str
    username: str
    display_name: str
    avatar_url: str | None


class ProfileController(Controller):
    path = "/api/users"
    tags = ["users"]

    @patch("/me", operation_id="ChangeProfile", status_code=200, responses=WRITE_ERRORS)
    async def change(self, request: Req, data: JSONBody[ProfileBody]) -> Response[Written]:
        """Changes the caller's display name, avatar URL and/or username (one event per
        field that changes; a new username is claimed and the old one freed at once)."""
        command = ChangeProfile(
            display_name=data.display_name, avatar_url=data.avatar_url, username=data.username
        )
        return reply(await execute(request, command, request.user), Written)

    @post(
        "/me/deactivate",
        operation_id="DeactivateAccount",
        status_code=200,
        responses=problems(400, 401, 403, 409, 413, 422, 429),
    )
    async def deactivate(self, request: Req, data: JSONBody[DeactivateBody]) -> Written:
        """Deactivates the caller's account (the password is required: a wrong one counts
        as a failed login). Every session ends; signing in is refused (403) until an
        operator reactivates it (``chorus reactivate-user``). Nothing is erased."""
        services = services_of(request)
        claims = claims_of(request)
        user = await anyio.to_thread.run_sync(services.app.load, User, claims.user_id)
        throttle: LoginThrottle = request.app.state.login_throttle
        account = account_key(user.username)
        throttle.attempt(account, client_address(request.scope))
        stored = await anyio.to_thread.run_sync(services.app.store.find_password_hash, user.id)
        if stored is None or not await services.passwords.verify_async(stored, data.password):
            throttle.failed(account, client_address(request.scope))
            raise PermissionDenied("wrong password")
        throttle.succeeded(account)
        ended = [s.session_id for s in await live_sessions(request, claims.user_id)]
        if claims.session_id is not None and claims.session_id not in ended:
            ended.append(claims.session_id)
        result = await execute(request, DeactivateAccount(ended_session_ids=ended), claims.user_id)
        await end_tokens(request, claims.user_id, ended)
        return Written(result.position)

    @get(
        "/by-username/{username:str}",
        operation_id="FindUserByUsername",
        responses=problems(401, 404, 422, 429),
    )
    async def by_username(
        self, request: Req, username: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> PublicProfile:
        """The public profile of a user the caller shares a workspace with (or the caller).
        Anyone else, an unknown or impossible name and a deactivated account are the same
        404: the answer tells nothing of who exists beyond one's workspaces."""
        try:
            name = normalise_username(username)
        except DomainError:
            raise NotFound("unknown user") from None
        async with read_cursor_async(request, min_position) as cur:
            row = await run_async(cur, find_acquaintance(request.user, name))
        if row is None:
            raise NotFound("unknown user")
        return msgspec.convert(row, PublicProfile)
