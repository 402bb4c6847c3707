"""Tracing in the HTTP app: Litestar's OpenTelemetry plugin, when tracing is on.

``setup`` turns tracing on for ``CHORUS_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``
(infrastructure/tracing.py holds the rest: psycopg's statements, the command, commit,
projection and delivery spans). Off, the app has no tracing middleware at all.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.plugins import InitPlugin

from infrastructure import tracing
from infrastructure.settings import Settings

# Probes and scrapes would be most of the traces and say nothing.
UNTRACED = [r"^/metrics$", r"^/health$", r"^/ready$"]


def setup(settings: Settings) -> list[InitPlugin]:
    """The plugins to add to the app: the OpenTelemetry one when tracing is on (configured
    here from the settings, or earlier by the caller: tests' in-memory exporter)."""
    if settings.otlp_endpoint is not None:
        tracing.configure(endpoint=settings.otlp_endpoint)
    provider = tracing.provider()
    if provider is None:
        return []
    # Imported only then: it imports OpenTelemetry's ASGI instrumentation.
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    return [
        OpenTelemetryPlugin(
            OpenTelemetryConfig(
                tracer_provider=provider,
                # HTTP only: a /ws connection would be one span as long as the socket; its
                # deliveries have spans of their own, in the traces of the writes.
                scopes={ScopeType.HTTP},
                # ASGI's per-message send/receive spans: noise around every request.
                exclude_spans=["receive", "send"],
                exclude=UNTRACED,
            )
        )
    ]
