"""Keeps every read model up to date with the event store.

Each batch of a projection runs in one transaction that locks the projection's tracking
row, reads the events after it, applies them and moves the tracking position: exactly once,
resumable after a crash, and safe when several processes run projections at once (the row
lock serialises them; the second sees the moved position and skips what is done).

A stored event that one read model cannot apply stops that read model only. The batch is
tried once, every model in one pipelined transaction (the common case costs nothing more);
if it fails, it is applied again with each model in a savepoint of its own, and a model that
still fails is walked event by event to the one it cannot take: it stays at the event before
(``stuck_position``, ``error`` and ``since`` in its tracking row) while the others move on.
It is tried again with backoff (a fixed release applies the event), and an operator may pass
over that one event with ``chorus projections skip``, itself an event of the log
(``ProjectionEventSkipped``) that the runner honours wherever it meets that event again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from eventsourcing.utils import get_topic
from psycopg_pool import ConnectionPool

from domain.operations import ReadModelSkip
from infrastructure import tracing
from infrastructure.eventstore import EVENTS_TABLE, read_traces
from infrastructure.stop_signal import StopSignal
from projections.analytics import create_views
from projections.base import EventProjection, LogEvent, Projection, SetProjection, Span
from projections.log import follow_channel, follow_store, next_span, read_span, span_events

log = logging.getLogger(__name__)

# Announces that read models moved, for servers whose projections run in another process
# (CHORUS_PROJECTIONS=external): sent by ``chorus project``'s runner in each step's transaction,
# so it arrives once the step is committed. Only a wake-up: any database login can NOTIFY, so
# a follower reads the positions from the tracking table, never from a payload.
PROJECTED_CHANNEL = "chorus_projected"

# A stuck model is tried again after RETRY_S, then twice as long each time, up to RETRY_MAX_S.
RETRY_S = 1.0
RETRY_MAX_S = 60.0
# Errors that say nothing about the event: the database is away or the step was cancelled.
# The step is simply tried again, no read model is marked stuck.
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)
ERROR_CHARS = 500
SKIP_TOPIC = get_topic(getattr(ReadModelSkip, "ProjectionEventSkipped"))  # noqa: B009

TRACKING_SQL = """
CREATE TABLE IF NOT EXISTS rm_tracking (
    projection text PRIMARY KEY,
    position bigint NOT NULL
);
-- A read model that cannot apply the event at stuck_position (its position is the one
-- before): the error and since when. Set only while stuck_position > position.
ALTER TABLE rm_tracking ADD COLUMN IF NOT EXISTS stuck_position bigint,
    ADD COLUMN IF NOT EXISTS error text,
    ADD COLUMN IF NOT EXISTS since timestamptz;
"""


@dataclass(frozen=True)
class Stuck:
    """A read model held at the event before ``position``, which it cannot apply."""

    position: int
    error: str
    since: datetime


@dataclass
class Batch:
    """What one step did: events in its span, positions and stuck models afterwards, and the
    stored topics the span held."""

    count: int
    positions: dict[str, int]
    stuck: dict[str, Stuck]
    topics: frozenset[str]
    # Tracing on: the traceparents stored with the span's events (each gets a projection
    # span once the step commits), and the span itself.
    traces: frozenset[str] = frozenset()
    upto: int = 0


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
    """``run_batch`` for callers that need only the count and the positions."""
    batch = run_batch(cur, projections, batch_size, until, announce=announce)
    return batch.count, batch.positions


def run_batch(
    cur: psycopg.Cursor[Any],
    projections: Sequence[Projection],
    batch_size: int,
    until: int | None = None,
    *,
    announce: bool = False,
    isolated: bool = False,
    retry: bool = False,
) -> Batch:
    """In the caller's transaction: locks the projections' tracking rows, takes the span of
    the next ``batch_size`` events after the slowest one's position (up to ``until``),
    applies to each projection what it has not applied yet, and moves the tracking rows
    (``announce``: and NOTIFYs ``PROJECTED_CHANNEL``).

    Stuck projections are left out (``retry``: they are tried too). ``isolated``: each
    projection in a savepoint of its own, so one that fails is marked stuck at the event it
    cannot take and the others move; otherwise all of them in one pipelined round trip, and
    a failure fails the transaction (the caller then tries ``isolated``)."""
    # One lock order for every process, so two runners cannot deadlock.
    names = [p.name for p in projections]
    cur.execute(
        "SELECT projection, position, stuck_position > position AS stuck FROM rm_tracking"
        " WHERE projection = ANY(%s) ORDER BY projection FOR UPDATE",
        (names,),
    )
    rows = cur.fetchall()
    positions = {row["projection"]: int(row["position"]) for row in rows}
    stuck: dict[str, Stuck] = {}
    if any(row["stuck"] for row in rows):  # rare: the details only then
        cur.execute(
            "SELECT projection, position, stuck_position, error, since FROM rm_tracking"
            " WHERE projection = ANY(%s)",
            (names,),
        )
        _, stuck = _tracking(cur.fetchall())
    live = [p for p in projections if retry or p.name not in stuck]
    if not live:
        return Batch(0, positions, stuck, frozenset())
    start = min(positions.get(p.name, 0) for p in live)
    span = next_span(cur, after=start, limit=batch_size, until=until)
    if span.count:
        if isolated:
            if _apply_isolated(cur, live, span, positions, stuck) and announce:
                cur.execute("SELECT pg_notify(%s, '')", (PROJECTED_CHANNEL,))
        else:
            events = _events_for(cur, live, span, positions)
            # Projections only write (nothing is read back), so the batch's statements are
            # pipelined: one round trip per batch instead of one per statement.
            with cur.connection.pipeline():
                if _apply(cur, live, span, events, positions) and announce:
                    cur.execute("SELECT pg_notify(%s, '')", (PROJECTED_CHANNEL,))
    traces = (
        frozenset(read_traces(cur, span.after, span.upto).values())
        if span.count and tracing.ENABLED
        else frozenset()
    )
    return Batch(span.count, positions, stuck, span.topics, traces, span.upto)


def _events_for(
    cur: psycopg.Cursor[Any],
    projections: Sequence[Projection],
    span: Span,
    positions: dict[str, int],
) -> list[LogEvent]:
    """Only the events some event-at-a-time projection still needs are read into Python."""
    behind = [
        p
        for p in projections
        if isinstance(p, EventProjection)
        and positions.get(p.name, 0) < span.upto
        and p.handles & span.types
    ]
    if not behind:
        return []
    after = min(positions.get(p.name, 0) for p in behind)
    return read_span(cur, span, after, set().union(*(p.handles for p in behind)))


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
        _apply_one(cur, projection, span, done, events)
        moved.append(projection.name)
    if moved:
        # One statement for every read model the span moved: each statement costs the step a
        # send and PostgreSQL an executor start, as much as a one-event write does.
        cur.execute(
            "INSERT INTO rm_tracking (projection, position) SELECT unnest(%s::text[]), %s"
            " ON CONFLICT (projection) DO UPDATE SET position = excluded.position,"
            " stuck_position = NULL, error = NULL, since = NULL",
            (moved, span.upto),
        )
        positions.update(dict.fromkeys(moved, span.upto))
    return bool(moved)


def _apply_one(
    cur: psycopg.Cursor[Any],
    projection: Projection,
    span: Span,
    done: int,
    events: Sequence[LogEvent],
) -> None:
    """Applies the span after ``done`` to one projection; ``events`` hold at least the
    span's events of its types."""
    if isinstance(projection, SetProjection):
        if projection.handles & span.types:
            projection.apply_span(cur, replace(span, after=done))
    elif isinstance(projection, EventProjection):
        for event in events:
            if event.position > done and event.type in projection.handles:
                projection.apply(cur, event)
    else:  # its position would move past events it never saw
        raise TypeError(f"{projection.name}: neither an EventProjection nor a SetProjection")


def _apply_isolated(
    cur: psycopg.Cursor[Any],
    projections: Sequence[Projection],
    span: Span,
    positions: dict[str, int],
    stuck: dict[str, Stuck],
) -> bool:
    """``_apply`` with each projection in a savepoint: one that fails is walked event by event
    to the event it cannot take, and held at the one before. True when a row moved."""
    moved = False
    for projection in projections:
        done = positions.get(projection.name, 0)
        if done >= span.upto:
            continue
        reached, failure = _walk(cur, projection, replace(span, after=done))
        if failure is None:
            cur.execute(
                "UPDATE rm_tracking SET position = %s, stuck_position = NULL, error = NULL,"
                " since = NULL WHERE projection = %s",
                (reached, projection.name),
            )
            stuck.pop(projection.name, None)
        else:
            at, error = failure
            cur.execute(
                "UPDATE rm_tracking SET position = %s, stuck_position = %s, error = %s,"
                " since = CASE WHEN stuck_position = %s AND since IS NOT NULL THEN since"
                " ELSE now() END WHERE projection = %s RETURNING since",
                (reached, at, error, at, projection.name),
            )
            row = cur.fetchone()
            assert row is not None
            stuck[projection.name] = Stuck(at, error, row["since"])
        moved = moved or reached > done
        positions[projection.name] = reached
    return moved


def _walk(
    cur: psycopg.Cursor[Any], projection: Projection, span: Span
) -> tuple[int, tuple[int, str] | None]:
    """Applies the span to ``projection`` in a savepoint; if that fails, one event at a time,
    passing over the events an operator skipped for it. Returns the position reached and,
    if it stopped, the event it cannot take and why."""
    if _attempt(cur, projection, span) is None:
        return span.upto, None
    cur.execute(
        f"SELECT position FROM ({span_events(span, projection.handles)}) e ORDER BY position",
        span.params(),
    )
    after = span.after
    for (position,) in [(row["position"],) for row in cur.fetchall()]:
        error = _attempt(cur, projection, replace(span, after=after, upto=position, count=1))
        if error is not None and not _skipped(cur, projection.name, position):
            return position - 1, (position, error)
        after = position
    return span.upto, None


def _attempt(cur: psycopg.Cursor[Any], projection: Projection, span: Span) -> str | None:
    """Applies the span to one projection in a savepoint: None, or why it failed."""
    try:
        with cur.connection.transaction():
            events: list[LogEvent] = []
            if isinstance(projection, EventProjection) and projection.handles & span.types:
                events = read_span(cur, span, span.after, projection.handles)
            _apply_one(cur, projection, span, span.after, events)
    except TRANSIENT:
        raise
    except Exception as exc:
        return _describe(exc)
    return None


def _describe(exc: Exception) -> str:
    """The error as one line of printable text (it is stored in a text column and logged)."""
    text = f"{type(exc).__name__}: {exc}"
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text[:ERROR_CHARS]


def _skipped(cur: psycopg.Cursor[Any], name: str, position: int) -> bool:
    """Whether the log holds an operator's skip of the event at ``position`` for ``name``
    (necessarily later in the log than the event)."""
    wanted = msgspec.json.encode({"projection": name, "position": position}).decode()
    cur.execute(
        f"SELECT 1 FROM {EVENTS_TABLE} WHERE notification_id > %s AND topic = %s"
        " AND convert_from(state, 'UTF8')::jsonb @> %s::jsonb LIMIT 1",
        (position, SKIP_TOPIC, wanted),
    )
    return cur.fetchone() is not None


def read_tracking(cur: psycopg.Cursor[Any]) -> tuple[dict[str, int], dict[str, Stuck]]:
    """Every read model's position, and the stuck ones."""
    cur.execute("SELECT projection, position, stuck_position, error, since FROM rm_tracking")
    return _tracking(cur.fetchall())


def _tracking(rows: Iterable[dict[str, Any]]) -> tuple[dict[str, int], dict[str, Stuck]]:
    positions: dict[str, int] = {}
    stuck: dict[str, Stuck] = {}
    for row in rows:
        positions[row["projection"]] = int(row["position"])
        # A marker left behind a model that has since moved past it (a rebuild) is no longer.
        if row["stuck_position"] is not None and row["stuck_position"] > row["position"]:
            stuck[row["projection"]] = Stuck(row["stuck_position"], row["error"], row["since"])
    return positions, stuck


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
    read-your-writes waits.

    The waits are for the read models that are not stuck: a read after one's own write
    does not hang on a model an operator has yet to resolve. Reads of a stuck model show it
    as of the event before the one it cannot take; ``/ready`` says so (degraded)."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        database_url: str,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        announce: bool = False,
        retry_s: float = RETRY_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.projections = list(projections)
        self.batch_size = batch_size
        # NOTIFY PROJECTED_CHANNEL with each step (for the servers that ``follow``).
        self.announce = announce
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self._positions: dict[str, int] = {}
        self._stuck: dict[str, Stuck] = {}  # guarded by _changed
        self._retry_at: dict[str, tuple[float, float]] = {}  # name -> (when, next delay)
        self._first_retry = True
        self._changed = threading.Condition()
        self._waiters: set[_Waiter] = set()  # guarded by _changed
        self._stop = StopSignal()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()  # following, and the positions read once
        # How many times the tracking rows were read (a NOTIFY flood must not multiply it).
        self.refreshes = 0

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
        """Applies one batch of events to the given projections (default: all that are not
        stuck) in one transaction; if one of them fails, again with each in a savepoint of
        its own (it is marked stuck, the others move). Returns how many events it read."""
        chosen = list(self.projections if projections is None else projections)
        started_ns = time.time_ns()
        try:
            batch = self._batch(chosen)
        except TRANSIENT:
            raise
        except Exception:
            # The pipelined transaction failed as a whole: which model failed, on which
            # event, is found out with a savepoint each.
            batch = self._batch(chosen, isolated=True)
        if batch.traces:
            tracing.record_span(
                "chorus.projection",
                batch.traces,
                started_ns,
                {
                    "chorus.events": batch.count,
                    "chorus.position": batch.upto,
                    "chorus.read_models": [p.name for p in chosen],
                },
            )
        self._took(batch, chosen)
        return batch.count

    def _batch(
        self, chosen: Sequence[Projection], *, isolated: bool = False, retry: bool = False
    ) -> Batch:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            return run_batch(
                cur,
                chosen,
                self.batch_size,
                announce=self.announce,
                isolated=isolated,
                retry=retry,
            )

    def catch_up(self) -> None:
        """Processes until every projection that is not stuck has read every committed
        event (a batch shorter than the batch size was the end of the log), then tries the
        stuck ones whose time has come."""
        while not self._stop.is_set() and self.step() >= self.batch_size:
            pass
        self._retry_due()

    def _retry_due(self) -> None:
        """Tries each stuck model again once its backoff has passed (a fixed release, or an
        operator's skip, lets it move): at once in a process that has just started (a new
        release), then ``retry_s`` after it stuck, twice as long each time."""
        now = time.monotonic()
        due: list[str] = []
        first = now if self._first_retry else now + self.retry_s
        self._first_retry = False
        with self._changed:
            for name in self._stuck:
                when, delay = self._retry_at.setdefault(name, (first, self.retry_s))
                if when <= now:
                    due.append(name)
                    delay = min(delay * 2, self.retry_max_s)
                    self._retry_at[name] = (now + delay, delay)
        for projection in [p for p in self.projections if p.name in due]:
            if self._stop.is_set():
                return
            # Its own transaction, and each step of it in a savepoint: it is known to fail.
            batch = self._batch([projection], isolated=True, retry=True)
            self._took(batch, [projection])

    def _took(self, batch: Batch, chosen: Sequence[Projection]) -> None:
        """Takes a step's outcome: positions, and the models found stuck or moving again."""
        with self._changed:
            for projection in chosen:
                self._positions[projection.name] = batch.positions.get(projection.name, 0)
                self._note(projection.name, batch.stuck.get(projection.name))
            if SKIP_TOPIC in batch.topics:
                # An operator's skip was just appended: try the stuck models now.
                self._retry_at = {name: (0.0, self.retry_s) for name in self._stuck}
            self._changed.notify_all()
            self._wake_waiters()

    def _note(self, name: str, stuck: Stuck | None) -> None:
        """Under ``_changed``: whether ``name`` is stuck now. Each change is logged once, not
        at every retry (nor by every reader of the tracking table)."""
        before = self._stuck.get(name)
        if stuck is None:
            if before is not None:
                log.warning("read model %s moved past position %d", name, before.position)
                del self._stuck[name]
                self._retry_at.pop(name, None)
            return
        if before is None or before.position != stuck.position:
            log.error(
                "read model %s cannot apply the event at position %d and stays at %d; the"
                " other read models go on (see chorus projections status): %s",
                name,
                stuck.position,
                stuck.position - 1,
                stuck.error,
            )
        self._stuck[name] = stuck

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

    def _announced(self, _: int) -> None:
        """Another process's runner moved (or we just connected, or anyone sent a NOTIFY):
        the positions are read from the tracking table, never taken from a payload. The
        listener coalesces a flood of wake-ups into a bounded rate of these reads."""
        self.refresh_positions()
        self._listening.set()

    # -- read-your-writes ------------------------------------------------------------------

    def position(self) -> int:
        """The position every read model that is not stuck has reached (the slowest one's)."""
        with self._changed:
            return self._slowest()

    def positions(self) -> dict[str, int]:
        with self._changed:
            return dict(self._positions)

    def stuck(self) -> dict[str, Stuck]:
        """The read models held at the event before one they cannot apply."""
        with self._changed:
            return dict(self._stuck)

    def _slowest(self) -> int:
        """``position()`` for a caller holding ``_changed``."""
        if len(self._positions) < len(self.projections):
            return 0
        moving = [at for name, at in self._positions.items() if name not in self._stuck]
        return min(moving or self._positions.values())

    def _wake_waiters(self) -> None:
        """Under ``_changed``: wakes every async waiter whose position is reached."""
        if not self._waiters:
            return
        reached = self._slowest()
        for waiter in [w for w in self._waiters if w.position <= reached]:
            self._waiters.discard(waiter)
            waiter.wake()

    def refresh_positions(self) -> None:
        """Reads positions and stuck models from the database (projections may run in
        another process)."""
        with self.pool.connection() as conn, conn.cursor() as cur:
            positions, stuck = read_tracking(cur)
        self.refreshes += 1
        with self._changed:
            for name, position in positions.items():
                self._positions[name] = max(self._positions.get(name, 0), position)
                self._note(name, stuck.get(name))
            self._changed.notify_all()
            self._wake_waiters()

    def wait_for(self, position: int, timeout: float) -> bool:
        """Blocks until every read model that is not stuck has reached ``position``; False
        on timeout."""
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
        read model that is not stuck has reached ``position``; False on timeout. The
        runner's thread wakes the waiter as it moves (no polling)."""
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
