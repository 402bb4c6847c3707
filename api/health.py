"""Liveness and readiness."""

from __future__ import annotations

import hmac
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response

from api.bootstrap import Services
from api.commands import services_of
from api.loop_lag import LoopLagCounts, LoopLagProbe
from projections.log import log_end
from projections.queries import run_async


class Health(msgspec.Struct):
    status: str


class Build(msgspec.Struct):
    """What runs, and since when: for operators only (a version tells an attacker which
    published bugs to try)."""

    version: str
    python: str
    started_at: datetime
    uptime_s: float
    pid: int


@dataclass(frozen=True)
class Started:
    at: datetime
    monotonic: float

    @classmethod
    def now(cls) -> Started:
        return cls(datetime.now(UTC), time.monotonic())

    def build(self) -> Build:
        return Build(
            version("chorus"),
            platform.python_version(),
            self.at,
            round(time.monotonic() - self.monotonic, 3),
            os.getpid(),
        )


class ReadModelState(msgspec.Struct):
    position: int
    # The event it cannot apply (it stays at the one before), since when, and why.
    stuck_position: int | None = None
    error: str | None = None
    since: datetime | None = None


class ReactionState(msgspec.Struct):
    position: int
    # Positions of the log after it (the events it has yet to read).
    lag: int
    # The event it cannot handle (it is held there), since when, and why.
    stuck_position: int | None = None
    error: str | None = None
    since: datetime | None = None


class Readiness(msgspec.Struct):
    status: str
    database: bool
    # Positions, lag and errors: only for the instance's operators (``CHORUS_OPS_TOKEN``).
    last_position: int | None
    projected_position: int | None
    projection_lag: int | None
    # How late the event loop ran its timers, counted since start (api/loop_lag.py).
    loop_lag: LoopLagCounts | None = None
    # How late the event loop ran at this request, in seconds (``CHORUS_READY_MAX_LOOP_LAG_S``).
    loop_late_s: float | None = None
    detail: str | None = None
    # The read models stuck on an event they cannot apply (names only).
    stuck: list[str] | None = None
    read_models: dict[str, ReadModelState] | None = None
    # The reactions (application/reaction_runner.py) stuck on an event (names only) and,
    # for operators, each one's state and the slowest one's lag.
    stuck_reactions: list[str] | None = None
    reactions: dict[str, ReactionState] | None = None
    reaction_lag: int | None = None
    build: Build | None = None


@get("/health", operation_id="Health", tags=["health"])
async def health() -> Health:
    """The process is up."""
    return Health("ok")


@get(
    "/ready",
    operation_id="Ready",
    tags=["health"],
    responses={
        503: ResponseSpec(
            data_container=Readiness,
            description="The database is not answering (unavailable), or a read model is"
            " stuck or too far behind, or a reaction is stuck, or the event loop runs more"
            " than CHORUS_READY_MAX_LOOP_LAG_S late (degraded)",
        )
    },
)
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """The database answers, through both read pools (the event loop's, which HTTP reads
    use, and the worker threads'), no read model is stuck on an event it cannot apply, the
    slowest one is at most ``CHORUS_READY_MAX_LAG`` positions behind the store
    (``projection_lag``), no reaction is stuck on an event it cannot handle, and the event
    loop runs its timers at most ``CHORUS_READY_MAX_LOOP_LAG_S`` late. Positions,
    lags and errors are shown only to a request carrying the operators' bearer secret
    (``CHORUS_OPS_TOKEN``)."""
    services = services_of(request)
    probe: LoopLagProbe = request.app.state.loop_lag
    lag = probe.snapshot()
    # Read before this handler awaits anything: its awaits let the probe's overdue wake-up
    # run, which would then report only the few milliseconds since.
    late_s = round(probe.late_now_s(), 3)
    try:
        async with services.async_read_pool.connection(timeout=2) as conn, conn.cursor() as cur:
            last = await run_async(cur, log_end())
        projected = await anyio.to_thread.run_sync(_projected, services)
        reactions = (
            {}
            if services.reactions is None
            else await anyio.to_thread.run_sync(services.reactions.status)
        )
    except Exception as exc:
        return Response(
            Readiness(
                "unavailable", False, None, None, None, lag, late_s, detail=type(exc).__name__
            ),
            status_code=503,
        )
    runner = services.runner
    stuck = runner.stuck()
    behind = max(0, last - projected)
    limit = services.settings.ready_max_lag
    max_late_s = services.settings.ready_max_loop_lag_s
    detail = None
    stuck_reactions = sorted(name for name, r in reactions.items() if r.stuck is not None)
    if stuck:
        detail = f"read models stuck on an event they cannot apply: {', '.join(sorted(stuck))}"
    elif limit and behind > limit:
        detail = f"read models more than {limit} positions behind the log"
    elif stuck_reactions:
        detail = f"reactions stuck on an event they cannot handle: {', '.join(stuck_reactions)}"
    elif max_late_s and late_s > max_late_s:
        detail = f"event loop saturated: running {late_s} s late (more than {max_late_s} s)"
    answer = Readiness(
        "degraded" if detail else "ok",
        True,
        None,
        None,
        None,
        lag,
        late_s,
        detail=detail,
        stuck=sorted(stuck),
        stuck_reactions=stuck_reactions,
    )
    if is_operator(request, services.settings.ops_token):
        answer.last_position, answer.projected_position = last, projected
        answer.projection_lag = behind
        answer.read_models = {
            name: ReadModelState(position)
            if name not in stuck
            else ReadModelState(
                position, stuck[name].position, stuck[name].error, stuck[name].since
            )
            for name, position in sorted(runner.positions().items())
        }
        answer.reactions = {
            name: ReactionState(r.position, r.lag)
            if r.stuck is None
            else ReactionState(r.position, r.lag, r.stuck.position, r.stuck.error, r.stuck.since)
            for name, r in sorted(reactions.items())
        }
        answer.reaction_lag = max((r.lag for r in reactions.values()), default=0)
        answer.build = request.app.state.started.build()
    return Response(answer, status_code=503 if detail else 200)


def is_operator(request: Request[Any, Any, Any], token: str | None) -> bool:
    """The request carries the operators' bearer secret (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _projected(services: Services) -> int:
    """Where the read models are, read through the worker threads' pool."""
    with services.read_pool.connection(timeout=2) as conn:
        conn.execute("SELECT 1")
    services.runner.refresh_positions()
    return services.runner.position()
