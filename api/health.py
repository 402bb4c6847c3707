"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response

from api.commands import services_of
from api.loop_lag import LoopLagCounts, LoopLagProbe
from projections.log import max_position


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
    sync_to_thread=True,
    operation_id="Ready",
    tags=["health"],
    responses={
        503: ResponseSpec(data_container=Readiness, description="The database is not answering")
    },
)
def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """The database answers; ``projection_lag`` is how many positions the slowest read model
    is behind the store."""
    services = services_of(request)
    probe: LoopLagProbe = request.app.state.loop_lag
    lag = probe.snapshot()
    try:
        with services.read_pool.connection(timeout=2) as conn, conn.cursor() as cur:
            last = max_position(cur)
        services.runner.refresh_positions()
        projected = services.runner.position()
    except Exception as exc:
        return Response(
            Readiness("unavailable", False, None, None, None, lag, detail=type(exc).__name__),
            status_code=503,
        )
    return Response(Readiness("ok", True, last, projected, max(0, last - projected), lag))
