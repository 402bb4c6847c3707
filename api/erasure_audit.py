"""``GET /api/audit/erasures`` (issue 20): the erasure audit trail, for the instance's
auditors: who erased what kind of data, when, at which position; never the data."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery, Parameter

from api.errors import problems
from api.reads import read_cursor_async
from domain.errors import PermissionDenied
from domain.instance import AUDITOR
from projections.erasure_audit import erasures
from projections.queries import run_async
from projections.users import holds_instance_role

MAX_LIMIT = 500

# Who did it: a user (by id), a user erased since (no id: "erased user"), an operator at the
# console (``chorus erase-user``), or the server's retention worker.
USER, ERASED_USER, OPERATOR, RETENTION_WORKER = "user", "erased user", "operator", "retention"


class ErasureActor(msgspec.Struct):
    kind: str
    id: str | None = None


class ErasureRecord(msgspec.Struct):
    position: int
    at: datetime
    # The event: UserErased (a user's erasure) or RetentionApplied (a workspace's retention).
    type: str
    actor: ErasureActor
    # The kinds of data erased ("profile", "messages").
    kinds: list[str]
    # A retention run's workspace, cut-off (messages sent before it) and message count.
    workspace_id: str | None = None
    cutoff: datetime | None = None
    count: int | None = None


class ErasureTrail(msgspec.Struct):
    items: list[ErasureRecord]
    # The ``after`` of the next page; null: none yet.
    next: int | None


def _actor(row: dict[str, Any]) -> ErasureActor:
    if row["actor_id"] is None:
        return ErasureActor(RETENTION_WORKER if row["type"] == "RetentionApplied" else OPERATOR)
    if row["actor_erased"]:
        return ErasureActor(ERASED_USER)
    return ErasureActor(USER, str(row["actor_id"]))


class ErasureAuditController(Controller):
    path = "/api/audit"
    tags = ["audit"]

    @get("/erasures", operation_id="ListErasures", responses=problems(401, 403, 422, 429))
    async def erasures(
        self,
        request: Request[str, Any, Any],
        after: Annotated[int, Parameter(ge=0)] = 0,
        limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 100,
        min_position: FromQuery[int | None] = None,
    ) -> ErasureTrail:
        """Every erasure after position ``after``, oldest first: users' erasures (by
        themselves or an operator) and retention runs. Needs the instance ``auditor`` role."""
        async with read_cursor_async(request, min_position) as cur:
            if not await run_async(cur, holds_instance_role(request.user, AUDITOR)):
                raise PermissionDenied("the erasure trail needs the instance auditor role")
            rows = await run_async(cur, erasures(after, limit))
        items = [
            ErasureRecord(
                position=r["position"],
                at=r["at"],
                type=r["type"],
                actor=_actor(r),
                kinds=list(r["kinds"]),
                workspace_id=None if r["workspace_id"] is None else str(r["workspace_id"]),
                cutoff=r["cutoff"],
                count=r["count"],
            )
            for r in rows
        ]
        return ErasureTrail(items, items[-1].position if len(items) == limit else None)
