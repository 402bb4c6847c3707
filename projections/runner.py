"""Keeps every read model up to date with the event store.

Each batch of a projection runs in one transaction that locks the projection's tracking
row, reads the events after it, applies them and moves the tracking position: exactly once,
resumable after a crash, and safe when several processes run projections at once (the row
lock serialises them; the second sees the moved position and skips what is done).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import psycopg
from psycopg_pool import ConnectionPool

from projections.analytics import create_views
from projections.base import EventProjection, LogEvent, Projection, SetProjection, Span
from projections.channels import ChannelsProjection
from projections.documents import DocumentsProjection
from projections.log import follow_channel, follow_store, next_span, read_span
from projections.presence import PresenceProjection
from projections.streams import StreamsProjection
from projections.timelines import TimelinesProjection
from projections.users import UsersProjection
from projections.workspaces import WorkspacesProjection

log = logging.getLogger(__name__)

# Announces that read models moved, for servers whose projections run in another process
# (CHORUS_PROJECTIONS=external): sent by ``chorus project``'s runner in each step's transaction,
# so it arrives once the step is committed. The payload is the step's tracking positions, as a
# JSON object {read model: position}: a follower needs no query to learn them.
PROJECTED_CHANNEL = "chorus_projected"
_announcement = msgspec.json.Decoder(dict[str, int])

TRACKING_SQL = """
CREATE TABLE IF NOT EXISTS rm_tracking (
    projection text PRIMARY KEY,
    position bigint NOT NULL
);
"""


def create_tables(
    cur: psycopg.Cursor[Any], projections: Sequence[Projection], *, views: bool = True
) -> None:
    """Creates read-model tables and tracking rows that are missing (idempotent), and the
    analytics views over them (dropping a read model's tables drops its views)."""
    cur.execute(TRACKING_SQL)
    for projection in projections:
        cur.execute(projection.create_sql)
        cur.execute(
            "INSERT INTO rm_tracking (projection, position) VALUES (%s, 0)"
            " ON CONFLICT (projection) DO NOTHING",
            (projection.name,),
        )
    if views and {"timelines", "channels", "documents"} <= {p.name for p in projections}:
        create_views(cur)


def apply_batch(
    cur: psycopg.Cursor[Any],
    projections: Sequence[Projection],
    batch_size: int,
    until: int | None = None,
    *,
    announce: bool = False,
) -> tuple[int, dict[str, int]]:
    """In the caller's transaction: locks the projections' tracking rows, takes the span of
    the next ``batch_size`` events after the slowest one's position (up to ``until``),
    applies to each projection what it has not applied yet, and moves the tracking rows
    (``announce``: and NOTIFYs ``PROJECTED_CHANNEL``). Returns the events in the span and the
    new positions."""
    # One lock order for every process, so two runners cannot deadlock.
    cur.execute(
        "SELECT projection, position FROM rm_tracking WHERE projection = ANY(%s)"
        " ORDER BY projection FOR UPDATE",
        ([p.name for p in projections],),
    )
    positions = {row["projection"]: int(row["position"]) for row in cur.fetchall()}
    start = min((positions.get(p.name, 0) for p in projections), default=0)
    span = next_span(cur, after=start, limit=batch_size, until=until)
    if span.count:
        # Only the events some event-at-a-time projection still needs are read into Python.
        behind = [
            p
            for p in projections
            if isinstance(p, EventProjection)
            and positions.get(p.name, 0) < span.upto
            and p.handles & span.types
        ]
        events: list[LogEvent] = []
        if behind:
            after = min(positions.get(p.name, 0) for p in behind)
            events = read_span(cur, span, after, set().union(*(p.handles for p in behind)))
        # Projections only write (nothing is read back), so the batch's statements are
        # pipelined: one round trip per batch instead of one per statement.
        with cur.connection.pipeline():
            if _apply(cur, projections, span, events, positions) and announce:
                payload = msgspec.json.encode(positions).decode()
                cur.execute("SELECT pg_notify(%s, %s)", (PROJECTED_CHANNEL, payload))
    return span.count, positions


def _apply(
    cur: psycopg.Cursor[Any],
    projections: Sequence[Projection],
    span: Span,
    events: Sequence[LogEvent],
    positions: dict[str, int],
) -> bool:
    """True when a tracking row moved."""
    moved: list[str] = []
    for projection in projections:
        done = positions.get(projection.name, 0)
        if done >= span.upto:
            continue
        if isinstance(projection, SetProjection):
            if projection.handles & span.types:
                projection.apply_span(cur, replace(span, after=done))
        elif isinstance(projection, EventProjection):
            for event in events:
                if event.position > done and event.type in projection.handles:
                    projection.apply(cur, event)
        else:  # its position would move past events it never saw
            raise TypeError(f"{projection.name}: neither an EventProjection nor a SetProjection")
        moved.append(projection.name)
    if moved:
        # One statement for every read model the span moved: each statement costs the step a
        # send and PostgreSQL an executor start, as much as a one-event write does.
        cur.execute(
            "INSERT INTO rm_tracking (projection, position) SELECT unnest(%s::text[]), %s"
            " ON CONFLICT (projection) DO UPDATE SET position = excluded.position",
            (moved, span.upto),
        )
        positions.update(dict.fromkeys(moved, span.upto))
    return bool(moved)


def all_projections() -> list[Projection]:
    return [
        UsersProjection(),
        WorkspacesProjection(),
        ChannelsProjection(),
        TimelinesProjection(),
        StreamsProjection(),
        PresenceProjection(),
        DocumentsProjection(),
    ]


@dataclass(eq=False)
class _Waiter:
    """A coroutine waiting on its event loop for the read models to reach ``position``."""

    position: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()

    def wake(self) -> None:
        """From any thread: resolves the future on its own loop (futures are not
        thread-safe)."""
        # A closed loop raises RuntimeError: nobody awaits this future any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():  # not timed out meanwhile
            self.future.set_result(None)


class ProjectionRunner:
    """Runs projections in a background thread, woken by PostgreSQL NOTIFY (``start``); or,
    where another process runs them, follows their positions (``follow``) for the
    read-your-writes waits."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        database_url: str,
        projections: Sequence[Projection] | None = None,
        *,
        batch_size: int = 1000,
        announce: bool = False,
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.projections = list(projections if projections is not None else all_projections())
        self.batch_size = batch_size
        # NOTIFY PROJECTED_CHANNEL with each step (for the servers that ``follow``).
        self.announce = announce
        self._positions: dict[str, int] = {}
        self._changed = threading.Condition()
        self._waiters: set[_Waiter] = set()  # guarded by _changed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()  # following, and the positions read once

    # -- schema ------------------------------------------------------------------------------

    def create_tables(self, cur: psycopg.Cursor[Any]) -> None:
        create_tables(cur, self.projections)

    def drop_tables(self, cur: psycopg.Cursor[Any], names: Sequence[str] | None = None) -> None:
        """Forgets read models so they are rebuilt from position 0."""
        for projection in self.projections:
            if names is not None and projection.name not in names:
                continue
            for table in projection.tables:
                cur.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            cur.execute("DELETE FROM rm_tracking WHERE projection = %s", (projection.name,))

    # -- processing --------------------------------------------------------------------------

    def step(self, projections: Sequence[Projection] | None = None) -> int:
        """Applies one batch of events to the given projections (default: all) in one
        transaction; returns how many events it read."""
        chosen = list(self.projections if projections is None else projections)
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            count, positions = apply_batch(cur, chosen, self.batch_size, announce=self.announce)
        for projection in chosen:
            self._advance(projection.name, positions.get(projection.name, 0))
        return count

    def catch_up(self) -> None:
        """Processes until every projection has read every committed event. A batch shorter
        than the batch size was the end of the log: no need to ask again."""
        while not self._stop.is_set() and self.step() >= self.batch_size:
            pass

    def _advance(self, name: str, position: int) -> None:
        with self._changed:
            self._positions[name] = position
            self._changed.notify_all()
            self._wake_waiters()

    # -- background thread -------------------------------------------------------------------

    def start(self) -> None:
        self._begin(self._run, "projections")

    def follow(self, timeout: float = 30.0) -> None:
        """Projects nothing: keeps the positions current from another process's runner
        (``announce``), as it announces its steps. Returns once it listens and has read where
        the read models are (or after ``timeout``: it keeps trying meanwhile)."""
        self._listening.clear()
        self._begin(self._follow, "projections-follower")
        self._listening.wait(timeout)

    def _begin(self, target: Callable[[], None], name: str) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        follow_store(self.database_url, self._stop, self.catch_up, "projection runner")

    def _follow(self) -> None:
        follow_channel(
            self.database_url, PROJECTED_CHANNEL, self._stop, self._announced, "projection follower"
        )

    def _announced(self, payloads: list[str]) -> None:
        """Takes the positions another process's runner announced; with none (just connected)
        or one it cannot read, reads them all from the database."""
        try:
            announced = [_announcement.decode(p) for p in payloads]
        except msgspec.DecodeError:
            announced = []
        if not announced:
            self.refresh_positions()
            self._listening.set()
            return
        self._merge((name, at) for positions in announced for name, at in positions.items())

    # -- read-your-writes ------------------------------------------------------------------

    def position(self) -> int:
        """The position every read model has reached (the slowest one's)."""
        with self._changed:
            return self._slowest()

    def _slowest(self) -> int:
        """``position()`` for a caller holding ``_changed``."""
        if len(self._positions) < len(self.projections):
            return 0
        return min(self._positions.values())

    def _wake_waiters(self) -> None:
        """Under ``_changed``: wakes every async waiter whose position is reached."""
        if not self._waiters:
            return
        reached = self._slowest()
        for waiter in [w for w in self._waiters if w.position <= reached]:
            self._waiters.discard(waiter)
            waiter.wake()

    def refresh_positions(self) -> None:
        """Reads positions from the database (projections may run in another process)."""
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT projection, position FROM rm_tracking")
            rows = cur.fetchall()
        self._merge((row["projection"], int(row["position"])) for row in rows)

    def _merge(self, positions: Iterable[tuple[str, int]]) -> None:
        """Takes positions read elsewhere (they only ever move forward)."""
        with self._changed:
            for name, position in positions:
                self._positions[name] = max(self._positions.get(name, 0), position)
            self._changed.notify_all()
            self._wake_waiters()

    def wait_for(self, position: int, timeout: float) -> bool:
        """Blocks until every read model has reached ``position``; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.position() >= position:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, 0.05))
            if self._thread is None:
                self.refresh_positions()

    def waiting(self) -> int:
        """How many ``wait_for_async`` calls are waiting for the read models to move."""
        with self._changed:
            return len(self._waiters)

    async def wait_for_async(self, position: int, timeout: float) -> bool:
        """``wait_for`` for the event loop: awaits, without blocking the loop, until every
        read model has reached ``position``; False on timeout. The runner's thread wakes the
        waiter as it moves (no polling)."""
        if self._thread is None:
            # No runner in this process: the read models move only in the database, which
            # the blocking wait polls. Off the loop, then (only benchmarks run this way).
            return await asyncio.to_thread(self.wait_for, position, timeout)
        waiter = _Waiter(position, asyncio.get_running_loop())
        with self._changed:
            if self._slowest() >= position:
                return True
            self._waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.future
            return True
        except TimeoutError:
            return False
        finally:
            with self._changed:
                self._waiters.discard(waiter)
