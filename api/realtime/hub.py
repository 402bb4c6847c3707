"""One subscription to the event store per process, fanned out in memory.

A thread tails ``chorus_events`` by position (woken by the store's NOTIFY), works out which
workspace and channel each event belongs to, encodes its envelope once, and hands the batch
to the event loop, where every interested listener gets it. Readers never see position N+1
before N: the store's insert path commits in position order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Protocol

import msgspec
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.envelopes import envelope
from domain.scopes import UNKNOWN, Scope, StreamKinds
from infrastructure import tracing
from infrastructure.eventstore import read_traces
from infrastructure.stop_signal import StopSignal
from projections.base import LogEvent
from projections.log import ScopedEvent, first_event, follow_store, max_position, read_events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    event: LogEvent
    scope: Scope
    # The event's JSON, encoded once for every subscriber (as text: what a text frame
    # carries, so no subscriber decodes it again).
    envelope: str
    # The traceparent stored with the event (tracing on, live deliveries): each send
    # continues the trace of the request that wrote it.
    trace: str | None = None


class Listener(Protocol):
    def deliver(self, batch: list[Delivery]) -> None: ...


class Scopes:
    """Stream id → Scope, learnt from creation events and looked up in the store on a miss
    (the first event of a stream says where it lives)."""

    def __init__(
        self, pool: ConnectionPool[Any], kinds: StreamKinds, capacity: int = 200_000
    ) -> None:
        self._pool = pool
        self._kinds = kinds
        self._cache: OrderedDict[str, Scope] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def of(self, event: LogEvent) -> Scope:
        stream = str(event.stream)
        if event.version == 1:
            scope = self._kinds.scope_of_created(event.type, stream, event.data)
        else:
            with self._lock:
                cached = self._cache.get(stream)
            scope = cached if cached is not None else self._lookup(stream)
        with self._lock:
            self._cache[stream] = scope
            self._cache.move_to_end(stream)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return scope

    def _lookup(self, stream: str) -> Scope:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            first = first_event(cur, stream)
        if first is None:
            return UNKNOWN
        return self._kinds.scope_of_created(first[0], stream, first[1])


def deliveries(events: list[LogEvent], scopes: Scopes) -> list[Delivery]:
    return [Delivery(e, scopes.of(e), msgspec.json.encode(envelope(e)).decode()) for e in events]


def scoped_deliveries(events: list[ScopedEvent]) -> list[Delivery]:
    """Deliveries of events read with their scope (the streams read model's), as
    ``deliveries`` would make them: no look-up."""
    return [
        Delivery(
            s.event,
            Scope(s.kind, s.workspace_id, s.channel_id, s.owner_id),
            msgspec.json.encode(envelope(s.event)).decode(),
        )
        for s in events
    ]


class EventHub:
    """Tails the store once for this process and fans each batch out to listeners."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        database_url: str,
        kinds: StreamKinds,
        *,
        batch_size: int = 500,
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.batch_size = batch_size
        self.kinds = kinds
        self.scopes = Scopes(pool, kinds)
        self.position = 0
        # The last position handed to the listeners (on the event loop; ``position`` runs
        # ahead of it in the tailing thread).
        self.delivered = 0
        # Events read and decoded for catch-ups in this process (tests and the bench read it:
        # the cost of a catch-up is this count, not its time).
        self.catch_up_decoded = 0
        self._listeners: set[Listener] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = StopSignal()
        self._thread: threading.Thread | None = None

    # -- listeners (event loop side) ---------------------------------------------------------

    def add(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def _fan_out(self, batch: list[Delivery]) -> None:
        if batch:
            self.delivered = batch[-1].event.position
        for listener in list(self._listeners):
            listener.deliver(batch)

    # -- tailing thread ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            self.position = max_position(cur)
        self.delivered = self.position
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="event-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        follow_store(self.database_url, self._stop, self._pull, "event hub")

    def _pull(self) -> None:
        while not self._stop.is_set():
            with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                events = read_events(cur, after=self.position, limit=self.batch_size)
                traces = (
                    read_traces(cur, self.position, events[-1].position)
                    if events and tracing.ENABLED
                    else None
                )
            if not events:
                return
            batch = deliveries(events, self.scopes)
            if traces:
                batch = [replace(d, trace=traces.get(d.event.position)) for d in batch]
            self.position = events[-1].position
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._fan_out, batch)
            if len(events) < self.batch_size:
                return
