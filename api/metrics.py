"""``GET /metrics``: Prometheus' text format (infrastructure/metrics.py says what is counted).

Who may scrape it is ``CHORUS_METRICS``: ``ops`` (the default) asks for the operators'
bearer secret (``CHORUS_OPS_TOKEN``; with none set, nobody), ``public`` asks nothing (for a
scrape from a private network, behind a proxy that does not expose the path), ``off`` has no
route at all. Gauges of state kept elsewhere (read-model and reaction lag, pools, the event
loop) are read at the scrape.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request, get
from litestar.exceptions import NotFoundException
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.bootstrap import Services
from api.commands import services_of
from api.health import is_operator
from api.loop_lag import LoopLagProbe
from infrastructure import metrics
from projections.log import log_end
from projections.queries import run_async


@get("/metrics", operation_id="Metrics", tags=["health"], include_in_schema=False)
async def metrics_page(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    settings = services.settings
    if settings.metrics == "off" or (
        settings.metrics == "ops" and not is_operator(request, settings.ops_token)
    ):
        # As for an unknown path: whether metrics exist is itself for operators.
        raise NotFoundException()
    probe: LoopLagProbe = request.app.state.loop_lag
    metrics.LOOP_LAG.set(probe.snapshot().max_ms / 1000)
    try:
        async with services.async_read_pool.connection(timeout=2) as conn, conn.cursor() as cur:
            last = await run_async(cur, log_end())
        await anyio.to_thread.run_sync(_read_state, services, last)
    except Exception:
        pass
    _pools(services)
    body = await anyio.to_thread.run_sync(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _read_state(services: Services, last: int) -> None:
    metrics.LAST_POSITION.set(last)
    runner = services.runner
    runner.refresh_positions()
    stuck = runner.stuck()
    for name, position in runner.positions().items():
        metrics.READ_MODEL_LAG.labels(name).set(max(0, last - position))
        metrics.READ_MODEL_STUCK.labels(name).set(1 if name in stuck else 0)
    if services.reactions is not None:
        for name, state in services.reactions.status().items():
            metrics.REACTION_LAG.labels(name).set(state.lag)


def _pools(services: Services) -> None:
    for name, pool in (
        ("read", services.read_pool),
        ("async_read", services.async_read_pool),
        ("auth", services.auth_pool),
    ):
        stats = pool.get_stats()
        metrics.POOL.labels(name, "size").set(stats.get("pool_size", 0))
        metrics.POOL.labels(name, "available").set(stats.get("pool_available", 0))
        metrics.POOL.labels(name, "waiting").set(stats.get("requests_waiting", 0))
