"""Audit endpoints for holders of ``view_audit``."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromQuery

from api.commands import services_of
from api.errors import problems
from domain.errors import InvalidValue, PermissionDenied
from infrastructure.chain import verify
from infrastructure.eventstore import EVENTS_TABLE
from projections.queries import run
from projections.workspaces import holds_anywhere


class ChainCheck(msgspec.Struct):
    """The tamper-evidence chain recomputed over the whole log (see ``chorus verify``)."""

    ok: bool
    count: int
    head_position: int
    head_hash: str
    bad_position: int | None
    problem: str | None


class AuditController(Controller):
    path = "/api/audit"
    tags = ["audit"]

    @get(
        "/verify",
        sync_to_thread=True,
        operation_id="VerifyLog",
        responses=problems(401, 403, 422, 429),
    )
    def verify_log(
        self, request: Request[str, Any, Any], expect: FromQuery[str | None] = None
    ) -> ChainCheck:
        """Recomputes the hash chain of every stored event. Needs ``view_audit`` in some
        workspace. ``expect=POSITION:HASH`` checks a head published earlier."""
        services = services_of(request)
        expected = None if expect is None else _expectation(expect)
        with services.read_pool.connection() as conn:
            with conn.cursor() as cur:
                if not run(cur, holds_anywhere(request.user, "view_audit")):
                    raise PermissionDenied("verifying the log needs view_audit")
            report = verify(conn, EVENTS_TABLE, expect=expected)
        return ChainCheck(
            ok=report.ok,
            count=report.count,
            head_position=report.head_position,
            head_hash=report.head_hash.hex(),
            bad_position=report.bad_position,
            problem=report.problem,
        )


def _expectation(value: str) -> tuple[int, bytes]:
    position, _, digest = value.partition(":")
    try:
        parsed = (int(position), bytes.fromhex(digest))
    except ValueError:
        raise InvalidValue("expect must be POSITION:HEXHASH") from None
    if len(parsed[1]) != 32 or parsed[0] < 0:
        raise InvalidValue("expect must be POSITION:HEXHASH with a SHA-256 hash")
    return parsed
