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
from infrastructure.eventstore import EVENTS_TABLE
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
    _documents(services)
    up = await services.signals.redis_up()
    if up is not None:
        metrics.REDIS_UP.set(1 if up else 0)
    body = await anyio.to_thread.run_sync(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _read_state(services: Services, last: int) -> None:
    metrics.LAST_POSITION.set(last)
    runner = services.runner
    runner.refresh_positions()
    stuck = runner.stuck()
    models = runner.positions()
    policies = (
        {name: state.position for name, state in services.reactions.status().items()}
        if services.reactions is not None
        else {}
    )
    ages = _ages(services, {*models.values(), *policies.values()}, last)
    for name, position in models.items():
        metrics.READ_MODEL_LAG.labels(name).set(max(0, last - position))
        metrics.READ_MODEL_LAG_SECONDS.labels(name).set(ages.get(position, 0.0))
        metrics.READ_MODEL_STUCK.labels(name).set(1 if name in stuck else 0)
    for name, position in policies.items():
        metrics.REACTION_LAG.labels(name).set(max(0, last - position))
        metrics.REACTION_LAG_SECONDS.labels(name).set(ages.get(position, 0.0))


# For each position, the age of the first event after it: how long the oldest event a reader
# at that position has yet to take has been waiting (one indexed look-up per position).
_AGES = (
    "SELECT p.pos, extract(epoch FROM now() - (SELECT"
    " (convert_from(e.state, 'UTF8')::jsonb ->> 'timestamp')::timestamptz"
    f" FROM {EVENTS_TABLE} e WHERE e.notification_id > p.pos"
    " ORDER BY e.notification_id LIMIT 1)) AS age"
    " FROM unnest(%s::int8[]) AS p(pos)"
)


def _ages(services: Services, positions: set[int], last: int) -> dict[int, float]:
    behind = sorted(p for p in positions if p < last)
    if not behind:
        return {}
    with services.read_pool.connection() as conn, conn.cursor() as cur:
        cur.execute(_AGES, (behind,))
        rows = cur.fetchall()
    ages = {}
    for row in rows:
        pos, age = (row["pos"], row["age"]) if isinstance(row, dict) else row
        ages[int(pos)] = max(0.0, float(age or 0))
    return ages


def _documents(services: Services) -> None:
    live = list(services.rooms.live.values())
    metrics.LIVE_DOCUMENTS.set(len(live))
    metrics.LIVE_DOCUMENT_BYTES.set(sum(d.room.size for d in live))
    metrics.AWARENESS_STATES.set(sum(len(d.awareness) for d in live))


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
