"""The toy context's routes."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.params import FromPath, JSONBody
from litestar.response import Response

from api.commands import Created, execute, reply
from api.errors import problems
from tests.toy.application import CreateBoard


class CreateBoardBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class BoardController(Controller):
    path = "/api"
    tags = ["boards"]

    @post(
        "/workspaces/{ws:str}/boards",
        operation_id="CreateBoard",
        responses=problems(400, 401, 403, 404, 409, 422, 429),
    )
    async def create(
        self, request: Request[str, Any, Any], ws: FromPath[str], data: JSONBody[CreateBoardBody]
    ) -> Response[Created]:
        """Creates a board (any member)."""
        cmd = CreateBoard(workspace_id=ws, name=data.name)
        return reply(await execute(request, cmd, request.user), Created)
