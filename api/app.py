"""``create_app``: the one place the HTTP application is assembled."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import anyio
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.logging.config import LoggingConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig

from api.audit import AuditController
from api.auth import (
    AUTH_LIMIT_HANDLERS,
    PUBLIC_PATHS,
    AuthController,
    BearerAuthMiddleware,
    auth_limits,
)
from api.bodies import JsonRequest
from api.bootstrap import Services, build_services
from api.catalogue import Catalogue
from api.contexts import CONTEXTS
from api.errors import EXCEPTION_HANDLERS
from api.events import EventController
from api.health import Started, health, ready
from api.log_redaction import keep_secrets_out_of_logs
from api.logs import RequestIds, echo_request_id
from api.loop_lag import LoopLagProbe
from api.metrics import metrics_page
from api.openapi import StrictStructSchemaPlugin
from api.rate_limits import RateLimiter, RateLimitMiddleware
from api.realtime.socket import UserConnections, ws_endpoint
from api.security_headers import add_security_headers
from api.streams import StreamController
from api.tracing import setup as setup_tracing
from api.yjs.endpoint import yjs_endpoint
from infrastructure.settings import Settings

log = logging.getLogger("chorus")

BEARER: list[dict[str, list[str]]] = [{"BearerToken": []}]


def create_app(
    settings: Settings,
    database_url: str,
    services: Services | None = None,
    *,
    catalogue: Catalogue = CONTEXTS,
) -> Litestar:
    """The HTTP application on ``database_url`` with the contexts of ``catalogue`` (every
    context of Chorus unless given). Services are built at start-up (schema migrated,
    projections running) unless given."""
    limiter = (
        RateLimiter(settings.rate_limit_per_second, settings.redis_url)
        if settings.rate_limit_per_second
        else None
    )
    state = State(
        {
            "services": services,
            "ws_connections": UserConnections(settings.ws_connections_per_user),
            "loop_lag": LoopLagProbe(),
            "started": Started.now(),
            **auth_limits(settings),
        }
    )

    async def start(app: Litestar) -> None:
        app.state.loop_lag.start()
        if app.state.services is None:
            app.state.services = await anyio.to_thread.run_sync(
                functools.partial(build_services, settings, database_url, catalogue=catalogue)
            )
        await app.state.services.async_read_pool.open()
        app.state.services.hub.start(asyncio.get_running_loop())
        await app.state.services.session_ends.start()
        app.state.services.presence.start()
        app.state.services.rooms.start()
        await app.state.services.signals.start()

    async def stop(app: Litestar) -> None:
        await app.state.loop_lag.stop()
        if limiter is not None:
            await limiter.close()
        if app.state.services is not None:
            # Editors' last updates are saved before the store closes.
            await app.state.services.rooms.stop()
            await app.state.services.signals.stop()
            await app.state.services.async_read_pool.close()
            await anyio.to_thread.run_sync(app.state.services.close)
            app.state.services = None

    # uvicorn would log the ?token= of every WebSocket and invite codes in accept paths.
    keep_secrets_out_of_logs()
    middleware: list[Any] = [
        # Outermost: every line the request's handling writes carries its id.
        DefineMiddleware(RequestIds, slow_s=settings.slow_request_s),
        DefineMiddleware(BearerAuthMiddleware, exclude=PUBLIC_PATHS),
    ]
    if settings.metrics != "off":
        # Latency and count per route template and status (never per id: bounded labels);
        # with metrics off nothing would read them (the bench's baseline, issue 22).
        prometheus = PrometheusConfig(
            app_name="chorus",
            prefix="chorus_http",
            group_path=True,
            scopes={ScopeType.HTTP},
            exclude=[r"^/metrics$"],
        )
        middleware.insert(1, prometheus.middleware)
    if limiter is not None:
        # Before authentication: floods of unauthenticated requests are limited too.
        middleware.insert(0, RateLimitMiddleware(limiter))
    return Litestar(
        route_handlers=[
            # Sign-up, login, refresh and logout take no access token (GET /api/auth/me
            # declares its own), nor do the probes: only the rest declare the bearer
            # requirement, so the OpenAPI document says which routes need one.
            AuthController,
            health,
            ready,
            metrics_page,
            Router(
                path="/",
                security=BEARER,
                route_handlers=[
                    *catalogue.routes,
                    EventController,
                    AuditController,
                    StreamController,
                ],
            ),
            ws_endpoint,
            yjs_endpoint,
        ],
        on_startup=[start],
        on_shutdown=[stop],
        state=state,
        plugins=[StrictStructSchemaPlugin(), *setup_tracing(settings)],
        # Litestar's lines go to the one handler api/logs.py sets up, in its format.
        logging_config=LoggingConfig(
            configure_root_logger=False,
            handlers={},
            formatters={},
            loggers={"litestar": {"level": "INFO", "propagate": True}},
        ),
        middleware=middleware,
        exception_handlers={**EXCEPTION_HANDLERS, **AUTH_LIMIT_HANDLERS},
        request_class=JsonRequest,
        before_send=[add_security_headers, echo_request_id],
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins))
        if settings.cors_origins
        else None,
        openapi_config=OpenAPIConfig(
            title="Chorus",
            version="1.0.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                }
            ),
        ),
        debug=False,
    )
