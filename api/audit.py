"""Audit endpoints for the instance's auditors (``chorus grant auditor USERNAME``)."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.exceptions import TooManyRequestsException
from litestar.params import FromQuery

from api.commands import services_of
from api.errors import problems
from domain.errors import InvalidValue, PermissionDenied
from domain.instance import AUDITOR
from infrastructure.chain import verify, verify_since_checkpoint
from infrastructure.eventstore import EVENTS_TABLE
from projections.queries import run
from projections.users import holds_instance_role


class ChainCheck(msgspec.Struct):
    """The tamper-evidence chain recomputed (see ``chorus verify``): from the last head a
    check found good (``from_position``), or over the whole log with ``full=true``."""

    ok: bool
    count: int
    head_position: int
    head_hash: str
    bad_position: int | None
    problem: str | None
    from_position: int = 0


# One check at a time per process: a full one reads the whole log.
_checking = threading.Lock()


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
        self,
        request: Request[str, Any, Any],
        expect: FromQuery[str | None] = None,
        full: FromQuery[bool] = False,
    ) -> ChainCheck:
        """Recomputes the hash chain of the stored events appended since the last good
        check (``full=true``: of every stored event). Needs the instance ``auditor`` role
        (a workspace role never suffices: the count and head are global). ``expect=
        POSITION:HASH`` checks a head published earlier."""
        services = services_of(request)
        expected = None if expect is None else _expectation(expect)
        with services.read_pool.connection() as conn:
            with conn.cursor() as cur:
                if not run(cur, holds_instance_role(request.user, AUDITOR)):
                    raise PermissionDenied("verifying the log needs the instance auditor role")
            if not _checking.acquire(blocking=False):
                raise TooManyRequestsException(
                    "a check of the log is running; retry shortly", headers={"Retry-After": "1"}
                )
            try:
                if full:
                    report, start = verify(conn, EVENTS_TABLE, expect=expected), 0
                else:
                    since = verify_since_checkpoint(conn, EVENTS_TABLE, expect=expected)
                    report, start = since.report, since.from_position
            finally:
                _checking.release()
        return ChainCheck(
            ok=report.ok,
            count=report.count,
            head_position=report.head_position,
            head_hash=report.head_hash.hex(),
            bad_position=report.bad_position,
            problem=report.problem,
            from_position=start,
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
