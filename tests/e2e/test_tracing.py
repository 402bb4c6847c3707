"""Tracing (issue 22, point 3): one trace from the HTTP request that writes a message through
its command, the commit, the projection step that applies the event and its ``/ws``
delivery, exported here to an in-memory exporter by a real server on a real database; the
request's id is a span attribute and its log line names the trace."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from api.logs import log_handler
from infrastructure import tracing
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import SHORT_LINGER, Running, running_chorus
from tests.fixtures.websocket import send, socket, until

pytestmark = pytest.mark.slow

TIMEOUT = 15.0


class Finished(SimpleSpanProcessor):
    """Exports each span as it ends, and wakes whoever waits for one."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        super().__init__(exporter)
        self.exporter = exporter
        self.ended = threading.Condition()

    def on_end(self, span: ReadableSpan) -> None:
        super().on_end(span)
        with self.ended:
            self.ended.notify_all()

    def wait_for(self, what: str, found: Callable[[list[ReadableSpan]], Any]) -> Any:
        """``found(finished spans)`` once it is truthy: woken by each span's end."""
        with self.ended:
            value = self.ended.wait_for(
                lambda: found(list(self.exporter.get_finished_spans())), timeout=TIMEOUT
            )
        names = {s.name for s in self.exporter.get_finished_spans() if s.name.startswith("chorus")}
        assert value, f"no {what} among {names}"
        return value


@pytest.fixture(scope="module")
def spans() -> Iterator[Finished]:
    processor = Finished(InMemorySpanExporter())
    tracing.configure(processor=processor)
    try:
        yield processor
    finally:
        tracing.disable()


@pytest.fixture(scope="module")
def traced(
    spans: Finished, postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    # Every request is "slow": each writes a line of its own, the one an operator would find.
    settings: dict[str, Any] = {**SHORT_LINGER, "slow_request_s": 0.000001}
    with running_chorus(postgres_server, tmp_path_factory.mktemp("traced"), **settings) as c:
        yield c


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The server's JSON lines, with its own handler (the one ``chorus serve`` sets up)."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line]
    finally:
        root.removeHandler(handler)


def stored_trace(running: Running, position: int) -> str | None:
    with psycopg.connect(running.database_url) as conn:
        row = conn.execute(
            "SELECT traceparent FROM chorus_event_traces WHERE notification_id = %s", (position,)
        ).fetchone()
    return None if row is None else str(row[0])


def _one(spans: list[ReadableSpan], name: str, trace_id: int) -> ReadableSpan | None:
    found = [s for s in spans if s.name == name and s.context.trace_id == trace_id]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_one_trace_from_the_request_to_the_ws_delivery(
    traced: Running,
    spans: Finished,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    api = traced.api
    owner, reader = api.signup("tracer"), api.signup("watcher")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Traced", "visibility": "public"}), 201)
    api.ok(api.post(f"/api/workspaces/{ws['id']}/join", reader))
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "t"}), 201)["id"]
    with socket(traced, reader.access_token) as sock:
        send(sock, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}]})
        until(sock, "subscribed")
        r = api.post(
            f"/api/channels/{ch}/messages",
            owner,
            {"text": "follow me"},
            headers={"X-Request-ID": "traced-post-1"},
        )
        assert r.status_code == 201, r.text
        position = r.json()["position"]
        frame = until(sock, "event")
        assert frame["event"]["position"] == position

    def request_span(found: list[ReadableSpan]) -> ReadableSpan | None:
        mine = [
            s
            for s in found
            if s.kind == SpanKind.SERVER
            and (s.attributes or {}).get("chorus.request_id") == "traced-post-1"
        ]
        return mine[0] if mine else None

    request = spans.wait_for("request span", request_span)
    trace_id = request.context.trace_id
    command = spans.wait_for(
        "command span", lambda f: _one(f, "chorus.command SendMessage", trace_id)
    )
    commit = spans.wait_for("commit span", lambda f: _one(f, "chorus.commit", trace_id))
    projection = spans.wait_for("projection span", lambda f: _one(f, "chorus.projection", trace_id))
    delivery = spans.wait_for("delivery span", lambda f: _one(f, "chorus.ws.deliver", trace_id))

    # The parent links: request -> command -> commit -> projection, commit -> delivery.
    assert command.parent is not None and command.parent.span_id == request.context.span_id
    assert commit.parent is not None and commit.parent.span_id == command.context.span_id
    assert projection.parent is not None and projection.parent.span_id == commit.context.span_id
    assert delivery.parent is not None and delivery.parent.span_id == commit.context.span_id
    assert (delivery.attributes or {}).get("chorus.position") == position
    assert (delivery.attributes or {}).get("chorus.user_id") == reader.user_id
    # psycopg's instrumentation: the request's own statements are in the trace too.
    assert any(
        s.context.trace_id == trace_id and (s.attributes or {}).get("db.system") == "postgresql"
        for s in spans.exporter.get_finished_spans()
    )

    # Background threads' polling is not traced: a statement is in a trace or not kept.
    assert not [
        s
        for s in spans.exporter.get_finished_spans()
        if s.kind == SpanKind.CLIENT and s.parent is None
    ]

    # Stored beside the event: the commit span's traceparent.
    assert stored_trace(traced, position) == tracing.traceparent_of(commit)

    # The operator's way in: the request's log line names its trace.
    mine = [line for line in log_lines() if line.get("request_id") == "traced-post-1"]
    assert mine, "no log line of the request"
    assert {line.get("trace_id") for line in mine} == {format(trace_id, "032x")}


def test_events_written_before_tracing_are_delivered_and_projected_as_ever(
    traced: Running, spans: Finished
) -> None:
    """An event with no stored trace (written untraced, or before this release) is read,
    projected and delivered without one."""
    api = traced.api
    owner = api.signup("untraced")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Old", "visibility": "public"}), 201)
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, {"name": "o"}), 201)["id"]
    tracing.disable()
    try:
        with socket(traced, owner.access_token) as sock:
            send(sock, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}]})
            until(sock, "subscribed")
            body = api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": "old"}), 201)
            assert until(sock, "event")["event"]["position"] == body["position"]
    finally:
        tracing.configure()
    page = api.ok(api.get(f"/api/channels/{ch}/messages", owner))
    assert [m["text"] for m in page["items"]] == ["old"]
    assert stored_trace(traced, body["position"]) is None
