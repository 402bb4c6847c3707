"""Per-workspace retention (issue 20): reading and setting how long messages are kept."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response

from api.commands import Written, execute, reply
from api.errors import problems
from api.reads import read_cursor_async
from application.commands import SetRetention
from domain.base import as_uuid
from domain.errors import NotAMember
from domain.retention import MAX_DAYS, MIN_DAYS
from projections import workspaces as views
from projections.queries import run_async
from projections.retention import retention_of

Req = Request[str, Any, Any]


class RetentionBody(msgspec.Struct, forbid_unknown_fields=True):
    # null: messages are kept for ever.
    days: Annotated[int, msgspec.Meta(ge=MIN_DAYS, le=MAX_DAYS)] | None


class RetentionView(msgspec.Struct):
    days: int | None
    # The cut-off of the last run: every message sent before it is erased (null: none yet).
    retained_before: datetime | None


class RetentionController(Controller):
    path = "/api/workspaces"
    tags = ["workspaces"]

    @get(
        "/{ws:str}/retention",
        operation_id="GetRetention",
        responses=problems(401, 404, 422, 429),
    )
    async def show(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> RetentionView:
        """How long the workspace keeps its messages (members: everyone should know)."""
        workspace_id = str(as_uuid(ws))
        async with read_cursor_async(request, min_position) as cur:
            workspace = await run_async(cur, views.get_workspace(workspace_id, request.user))
            if workspace is None or not workspace["is_member"]:
                raise NotAMember("unknown workspace")
            row = await run_async(cur, retention_of(workspace_id))
        if row is None:
            return RetentionView(days=None, retained_before=None)
        return RetentionView(days=row["days"], retained_before=row["retained_before"])

    @put(
        "/{ws:str}/retention",
        operation_id="SetRetention",
        status_code=200,
        responses=problems(400, 401, 403, 404, 409, 413, 422, 429),
    )
    async def set(
        self, request: Req, ws: FromPath[str], data: JSONBody[RetentionBody]
    ) -> Response[Written]:
        """Sets how many days messages are kept (1..3650, null: for ever;
        needs ``manage_workspace``). Older messages are then erased by crypto-shredding,
        a ``RetentionApplied`` event recording each run (cut-off and count)."""
        cmd = SetRetention(workspace_id=ws, days=data.days)
        return reply(await execute(request, cmd, request.user), Written)
