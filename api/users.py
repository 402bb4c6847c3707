"""Users over HTTP: whom the caller blocks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, put
from litestar.params import FromPath, FromQuery
from litestar.response import Response

from api.commands import Written, execute, reply
from api.errors import problems
from api.reads import read_cursor_async
from application.commands import BlockUser, UnblockUser
from projections.queries import run_async
from projections.users import list_blocked

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
