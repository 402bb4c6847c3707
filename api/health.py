"""Liveness and readiness."""

from __future__ import annotations

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


class Readiness(msgspec.Struct):
    status: str
    database: bool
    last_position: int | None
    projected_position: int | None
    projection_lag: int | None
    # How late the event loop ran its timers, counted since start (api/loop_lag.py).
    loop_lag: LoopLagCounts | None = None
    detail: str | None = None


@get("/health", operation_id="Health", tags=["health"])
async def health() -> Health:
    """The process is up."""
    return Health("ok")


@get(
    "/ready",
    operation_id="Ready",
    tags=["health"],
    responses={
        503: ResponseSpec(data_container=Readiness, description="The database is not answering")
    },
)
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """The database answers, through both read pools (the event loop's, which HTTP reads
    use, and the worker threads'); ``projection_lag`` is how many positions the slowest read
    model is behind the store."""
    services = services_of(request)
    probe: LoopLagProbe = request.app.state.loop_lag
    lag = probe.snapshot()
    try:
        async with services.async_read_pool.connection(timeout=2) as conn, conn.cursor() as cur:
            last = await run_async(cur, log_end())
        projected = await anyio.to_thread.run_sync(_projected, services)
    except Exception as exc:
        return Response(
            Readiness("unavailable", False, None, None, None, lag, detail=type(exc).__name__),
            status_code=503,
        )
    return Response(Readiness("ok", True, last, projected, max(0, last - projected), lag))


def _projected(services: Services) -> int:
    """Where the read models are, read through the worker threads' pool."""
    with services.read_pool.connection(timeout=2) as conn:
        conn.execute("SELECT 1")
    services.runner.refresh_positions()
    return services.runner.position()
