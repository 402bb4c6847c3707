"""OpenTelemetry tracing, off unless configured (``CHORUS_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT``; api/tracing.py wires it into the app).

One trace follows a write from the HTTP request through its command, the commit, the
projection step that applies its events and their ``/ws`` delivery. The commit, the
projection runner and the event hub run in other threads (the runner possibly in another
process), so the context cannot travel in a context variable past the commit: each event's
W3C ``traceparent`` (the commit span's) is stored beside it, in ``chorus_event_traces``
(infrastructure/eventstore.py), and the runner and the hub continue the trace from there.

Off (the default) every function here returns at its first test of ``ENABLED``: no
provider, no exporter, no span objects, no context switches, nothing stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # OpenTelemetry is imported only once tracing is on (every command of the CLI imports
    # this module; its import alone took ~0.1 s).
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

# Read on every hot path: a plain module global, set once by ``configure``.
ENABLED = False
_provider: TracerProvider | None = None
_tracer: Tracer | None = None

SERVICE = "chorus"


def configure(
    exporter: SpanExporter | None = None,
    *,
    endpoint: str | None = None,
    processor: SpanProcessor | None = None,
) -> TracerProvider:
    """Turns tracing on in this process (once: later calls return the same provider).
    ``endpoint``: an OTLP/HTTP collector's base URL; ``exporter``/``processor``: tests' own."""
    global ENABLED, _provider, _tracer
    if _provider is None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased

        provider = TracerProvider(
            # Attributes given here win over OTEL_SERVICE_NAME: it is read explicitly.
            resource=Resource.create(
                {"service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE}
            ),
            sampler=ParentBased(root=_no_orphan_statements()),
        )
        if processor is not None:
            provider.add_span_processor(processor)
        if exporter is None and endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        _provider, _tracer = provider, provider.get_tracer("chorus")
    # Connections opened from now on trace their statements (pools open theirs later).
    _psycopg().instrument(tracer_provider=_provider, skip_dep_check=True)
    ENABLED = True
    return _provider


def _no_orphan_statements() -> Any:
    """Background threads (the hub's, the runner's, presence) poll the database all the
    time: a statement with no span around it would be a trace of one span each. Statements
    are kept only inside a trace (ParentBased samples children as their parent)."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class NoOrphanStatements(Sampler):
        def should_sample(
            self,
            parent_context: Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind == SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

        def get_description(self) -> str:
            return "NoOrphanStatements"

    return NoOrphanStatements()


def disable() -> None:
    """Stops making spans (tests: the rest of the process runs untraced)."""
    global ENABLED
    ENABLED = False
    _psycopg().uninstrument()


def _psycopg() -> Any:
    # Imported only when tracing is used: it patches psycopg's connect.
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    return PsycopgInstrumentor()


def provider() -> TracerProvider | None:
    return _provider if ENABLED else None


def traceparent() -> str | None:
    """The current span's W3C ``traceparent``, or None (off, or no span)."""
    if not ENABLED:
        return None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    """The current trace's id as 32 hex digits (what a log line carries), or None."""
    if not ENABLED:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def set_attribute(name: str, value: str) -> None:
    if ENABLED:
        from opentelemetry import trace

        trace.get_current_span().set_attribute(name, value)


@cache
def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def _context_of(parent: str | None) -> Context | None:
    if parent is None:
        return None
    context: Context = _propagator().extract({"traceparent": parent})
    return context


@contextmanager
def span(
    name: str, *, parent: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span | None]:
    """A span around the block, child of the current one, or of ``parent`` (a stored
    ``traceparent``) when given; yields None when tracing is off."""
    if not ENABLED or _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(
        name, context=_context_of(parent), attributes=dict(attributes or {})
    ) as current:
        yield current


def start(name: str, *, parent: str | None, attributes: Mapping[str, Any] | None = None) -> Span:
    """A span the caller ends (one per trace of a batch: the group commit's), not made
    current; only called when ``ENABLED``."""
    assert _tracer is not None
    return _tracer.start_span(name, context=_context_of(parent), attributes=dict(attributes or {}))


@contextmanager
def current(span_: Span | None) -> Iterator[None]:
    """``span_`` (if any) as the current span in the block, not ended by it: the database
    statements run meanwhile (psycopg's instrumentation) are its children."""
    if span_ is None:
        yield
        return
    from opentelemetry import trace

    with trace.use_span(span_, end_on_exit=False):
        yield


def traceparent_of(current: Span) -> str:
    ctx = current.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def record_span(
    name: str,
    parents: Iterable[str],
    started_ns: int,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """One span from ``started_ns`` to now under each of ``parents`` (stored traceparents):
    a step that worked on the events of several traces at once (the projection runner's)
    shows in each of them."""
    if not ENABLED or _tracer is None:
        return
    ended = time.time_ns()
    for parent in parents:
        done = _tracer.start_span(
            name,
            context=_context_of(parent),
            start_time=started_ns,
            attributes=dict(attributes or {}),
        )
        done.end(end_time=ended)
