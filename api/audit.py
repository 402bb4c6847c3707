"""Audit endpoints for the instance's auditors (``chorus grant auditor USERNAME``)."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import TooManyRequestsException
from litestar.params import FromQuery

from api.commands import services_of
from api.contexts import all_projections
from api.errors import problems
from domain.errors import InvalidValue, PermissionDenied
from domain.instance import AUDITOR
from infrastructure.chain import verify, verify_since_checkpoint
from infrastructure.eventstore import EVENTS_TABLE
from projections.queries import run
from projections.replay import by_names
from projections.shadow_verify import Busy, ReadModelReport, verify_read_models
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


class RowDivergence(msgspec.Struct):
    """A row of a live table that is not what the log builds: ``missing`` (the log has it,
    the table does not), ``extra`` (only in the table) or ``changed`` (``columns`` differ;
    ``live`` and ``rebuilt`` show their values, long ones cut, bytes as length and hash)."""

    kind: str
    key: dict[str, str]
    columns: list[str]
    live: dict[str, str]
    rebuilt: dict[str, str]


class TableCheck(msgspec.Struct):
    table: str
    projection: str
    missing: int
    extra: int
    changed: int
    live_rows: int
    rebuilt_rows: int
    rows: list[RowDivergence]


class ReadModelCheck(msgspec.Struct):
    """The log's chain checked (from the last good head), then every read model rebuilt from
    it into a shadow schema and compared with the live tables at the position each is at
    (``positions``). ``ok`` only if the chain holds and every table matches; ``tables`` lists
    those that differ; ``problems``: what kept a read model from being compared."""

    ok: bool
    chain: ChainCheck
    positions: dict[str, int]
    tables: list[TableCheck]
    problems: list[str]


# One check at a time per process: a full one reads the whole log.
_checking = threading.Lock()
# One check of the read models at a time per process (and per database: an advisory lock).
_checking_read_models = threading.Lock()


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
        return _chain_check(report, start)

    @post(
        "/verify-read-models",
        sync_to_thread=True,
        status_code=200,
        operation_id="VerifyReadModels",
        responses=problems(401, 403, 422, 429),
    )
    def verify_read_models(
        self,
        request: Request[str, Any, Any],
        projection: FromQuery[list[str] | None] = None,
    ) -> ReadModelCheck:
        """Checks the log's chain (as ``GET /verify``, from the last good head), then
        rebuilds the read models (or the ``projection``s named) from it into a shadow schema
        and reports every row of the live tables that differs, document snapshots included
        (``chorus verify --read-models``). Answers when done: it costs about what a
        ``chorus replay`` does. Needs the instance ``auditor`` role; one check at a time
        (429 with ``Retry-After`` while one runs on any instance)."""
        services = services_of(request)
        with services.read_pool.connection() as conn, conn.cursor() as cur:
            if not run(cur, holds_instance_role(request.user, AUDITOR)):
                raise PermissionDenied("verifying read models needs the instance auditor role")
        try:
            chosen = by_names(all_projections(), projection)
        except ValueError as exc:
            raise InvalidValue(str(exc)) from None
        if not _checking_read_models.acquire(blocking=False):
            raise _busy()
        try:
            with services.read_pool.connection() as conn:
                since = verify_since_checkpoint(conn, EVENTS_TABLE)
            chain = _chain_check(since.report, since.from_position)
            if not since.report.ok:
                return ReadModelCheck(False, chain, {}, [], ["the log's chain is broken"])
            verified = (since.report.head_position, since.report.head_hash)
            try:
                report = verify_read_models(services.database_url, chosen, verified=verified)
            except Busy:
                raise _busy() from None
        finally:
            _checking_read_models.release()
        return _read_model_check(chain, report)


def _busy() -> TooManyRequestsException:
    return TooManyRequestsException(
        "a check of the read models is running; retry when it ends", headers={"Retry-After": "5"}
    )


def _chain_check(report: Any, start: int) -> ChainCheck:
    return ChainCheck(
        ok=report.ok,
        count=report.count,
        head_position=report.head_position,
        head_hash=report.head_hash.hex(),
        bad_position=report.bad_position,
        problem=report.problem,
        from_position=start,
    )


def _read_model_check(chain: ChainCheck, report: ReadModelReport) -> ReadModelCheck:
    tables = [
        TableCheck(
            t.table,
            t.projection,
            t.missing,
            t.extra,
            t.changed,
            t.live_rows,
            t.rebuilt_rows,
            [RowDivergence(r.kind, r.key, r.columns, r.live, r.rebuilt) for r in t.rows],
        )
        for t in report.tables
        if t.diverged
    ]
    return ReadModelCheck(report.ok, chain, report.positions, tables, report.problems)


def _expectation(value: str) -> tuple[int, bytes]:
    position, _, digest = value.partition(":")
    try:
        parsed = (int(position), bytes.fromhex(digest))
    except ValueError:
        raise InvalidValue("expect must be POSITION:HEXHASH") from None
    if len(parsed[1]) != 32 or parsed[0] < 0:
        raise InvalidValue("expect must be POSITION:HEXHASH with a SHA-256 hash")
    return parsed
