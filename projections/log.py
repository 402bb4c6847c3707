"""Reading the event store's table in position order, as ``LogEvent``s."""

from __future__ import annotations

import logging
import re
import select
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg import Cursor

from domain.scopes import StreamKinds, StreamScope
from infrastructure.eventstore import EVENTS_TABLE, NOTIFY_CHANNEL
from infrastructure.keys import open_states
from infrastructure.serialisation import event_type_name
from infrastructure.stop_signal import StopSignal
from projections.base import LogEvent, Span
from projections.queries import Query, Statement, run

log = logging.getLogger(__name__)

# Fields of the stored state that the envelope shows on its own, not inside ``data``.
_ENVELOPE_FIELDS = ("timestamp", "actor_id", "command_id", "originator_topic")

SELECT_EVENTS = (
    "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state"
    f" FROM {EVENTS_TABLE} e"
)


# The key in an event's ``data`` listing the personal fields whose key was erased (issue 20).
# No event has a field of that name (tests/e2e/test_erasure.py checks every event class).
ERASED = "erased"


def to_log_event(row: dict[str, Any]) -> LogEvent:
    """A stored row as a reader gets it: sealed personal fields opened, or null and named
    under ``ERASED`` once their key is gone (infrastructure/keys.py)."""
    return to_log_events([row])[0]


def to_log_events(rows: Iterable[dict[str, Any]]) -> list[LogEvent]:
    """``to_log_event`` for many rows, their keys fetched at once."""
    rows = list(rows)
    states: list[dict[str, Any]] = [msgspec.json.decode(bytes(row["state"])) for row in rows]
    erased = open_states(states)
    return [_log_event(r, s, e) for r, s, e in zip(rows, states, erased, strict=True)]


def _log_event(row: dict[str, Any], state: dict[str, Any], erased: list[str]) -> LogEvent:
    if erased:
        state[ERASED] = erased
    at = state.pop("timestamp")
    actor = state.pop("actor_id", None)
    command_id = state.pop("command_id", None)
    state.pop("originator_topic", None)
    return LogEvent(
        position=row["notification_id"],
        stream=row["originator_id"],
        version=row["originator_version"],
        type=event_type_name(row["topic"]),
        at=datetime.fromisoformat(at),
        actor=actor,
        command_id=command_id,
        data=state,
    )


def read_events(cur: Cursor[Any], *, after: int, limit: int) -> list[LogEvent]:
    cur.execute(
        f"{SELECT_EVENTS} WHERE e.notification_id > %s ORDER BY e.notification_id LIMIT %s",
        (after, limit),
    )
    return to_log_events(cur.fetchall())


def next_span(cur: Cursor[Any], *, after: int, limit: int, until: int | None = None) -> Span:
    """The span of the next ``limit`` events after ``after`` (none past ``until``). Positions
    are taken in commit order under the store's table lock, so every position up to the
    span's end is committed (or never will be): later statements see the same span."""
    cur.execute(
        "SELECT max(notification_id) AS upto, count(*) AS n, array_agg(DISTINCT topic) AS topics"
        f" FROM (SELECT notification_id, topic FROM {EVENTS_TABLE} WHERE notification_id > %s"
        "  AND (%s::bigint IS NULL OR notification_id <= %s::bigint)"
        "  ORDER BY notification_id LIMIT %s) s",
        (after, until, until, limit),
    )
    row = cur.fetchone()
    if row is None or row["upto"] is None:
        return Span(after, after, frozenset(), 0)
    return Span(after, int(row["upto"]), frozenset(row["topics"]), int(row["n"]))


def _topic_filter(span: Span, types: Iterable[str]) -> str:
    """SQL matching ``e.topic`` to the span's topics of these types. The topics are inlined
    (they are the store's own class paths, checked here): a list of constants lets the
    planner test each row cheaply."""
    topics = span.topics_of(types)
    if not all(_TOPIC.fullmatch(t) for t in topics):
        raise ValueError(f"unexpected stored topic among {topics!r}")
    return f"e.topic IN ({', '.join(repr(t) for t in topics)})" if topics else "false"


_TOPIC = re.compile(r"[A-Za-z0-9_.:]+")


def span_events(span: Span, types: Iterable[str], fields: dict[str, str] | None = None) -> str:
    """SQL for the span's events of ``types`` (parameters ``%(after)s`` and ``%(upto)s``):
    ``position, stream, version, type``; with ``fields``, also ``at`` and those fields of the
    state (name -> SQL type, as ``json_to_record`` takes them), each state parsed once, in
    PostgreSQL."""
    columns = (
        "e.notification_id AS position, e.originator_id AS stream,"
        " e.originator_version AS version, substring(e.topic from '[^.]+$') AS type"
    )
    source = f"{EVENTS_TABLE} e"
    if fields is not None:
        record = "".join(f", {name} {kind}" for name, kind in fields.items())
        columns += f', d."timestamp" AS at{"".join(f", d.{name}" for name in fields)}'
        source += (
            " CROSS JOIN LATERAL json_to_record(convert_from(e.state, 'UTF8')::json)"
            f' AS d("timestamp" timestamptz{record})'
        )
    return (
        f"SELECT {columns} FROM {source}"
        " WHERE e.notification_id > %(after)s AND e.notification_id <= %(upto)s"
        f" AND {_topic_filter(span, types)}"
    )


def read_span(cur: Cursor[Any], span: Span, after: int, types: Iterable[str]) -> list[LogEvent]:
    """The events of ``types`` in the span after ``after``, in position order."""
    cur.execute(
        f"{SELECT_EVENTS} WHERE e.notification_id > %s AND e.notification_id <= %s"
        f" AND {_topic_filter(span, types)} ORDER BY e.notification_id",
        (after, span.upto),
    )
    return to_log_events(cur.fetchall())


def first_event(cur: Cursor[Any], stream: str) -> tuple[str, dict[str, Any]] | None:
    """The type and state of a stream's first event (which say where the stream lives), or
    None. The state as stored: no field is required of it."""
    cur.execute(
        f"SELECT topic, state FROM {EVENTS_TABLE}"
        " WHERE originator_id = %s AND originator_version = 1",
        (stream,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    state: dict[str, Any] = msgspec.json.decode(bytes(row["state"]))
    return event_type_name(row["topic"]), state


def log_end() -> Query[int]:
    """The position of the last event (0 for an empty log)."""
    rows = yield Statement(f"SELECT coalesce(max(notification_id), 0) AS p FROM {EVENTS_TABLE}")
    return int(rows[0]["p"]) if rows else 0


def max_position(cur: Cursor[Any]) -> int:
    """``log_end`` for the threads that tail the store with a sync cursor."""
    return run(cur, log_end())


def count_events(cur: Cursor[Any]) -> int:
    cur.execute(f"SELECT count(*) AS n FROM {EVENTS_TABLE}")
    row = cur.fetchone()
    return int(row["n"]) if row else 0


def visibility_position() -> Query[int]:
    """The position every visibility model has reached (0 while one has no tracking row, as
    while it is rebuilt): up to it, the streams read model knows every stream's scope."""
    rows = yield Statement(
        "SELECT CASE WHEN count(*) = %(n)s THEN min(position) ELSE 0 END AS p FROM rm_tracking"
        " WHERE projection = ANY(%(models)s)",
        {"n": len(VISIBILITY_MODELS), "models": list(VISIBILITY_MODELS)},
    )
    return int(rows[0]["p"]) if rows and rows[0]["p"] is not None else 0


def visibility_bound(cur: Cursor[Any]) -> int:
    """``visibility_position`` for the threads that read with a sync cursor."""
    return run(cur, visibility_position())


@dataclass(frozen=True)
class ScopedEvent:
    """An event with its stream's scope, as the streams read model has it."""

    event: LogEvent
    kind: str
    workspace_id: str | None
    channel_id: str | None
    owner_id: str | None = None


def scoped_events(
    cur: Cursor[Any], scope: StreamScope, *, after: int, upto: int, limit: int
) -> list[ScopedEvent]:
    """The events of ``scope`` in (``after``, ``upto``], in position order, at most
    ``limit``. Only the rows in scope leave PostgreSQL and are decoded here; ``upto`` must
    not pass ``visibility_bound`` (later streams may not be in the read model yet)."""
    cur.execute(
        "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,"
        "  s.kind, s.workspace_id, s.channel_id, s.owner_id"
        f" FROM {EVENTS_TABLE} e JOIN rm_streams s ON s.stream_id = e.originator_id"
        " WHERE e.notification_id > %(after)s AND e.notification_id <= %(upto)s"
        " AND (s.stream_id = ANY(%(streams)s::uuid[])"
        "   OR s.workspace_id = ANY(%(workspaces)s::uuid[])"
        "   OR s.channel_id = ANY(%(channels)s::uuid[])"
        "   OR (s.owner_id = %(owner)s::uuid AND s.kind = ANY(%(owned)s::text[]))"
        "   OR (s.workspace_id IS NULL AND s.channel_id IN (SELECT channel_id"
        "       FROM rm_channel_members WHERE user_id = %(member)s::uuid)))"
        " ORDER BY e.notification_id LIMIT %(limit)s",
        {
            "after": after,
            "upto": upto,
            "streams": sorted(scope.streams),
            "workspaces": sorted(scope.workspaces),
            "channels": sorted(scope.channels),
            "member": scope.direct_member,
            "owner": scope.owner,
            "owned": sorted(scope.owned_kinds),
            "limit": limit,
        },
    )
    rows = cur.fetchall()
    return [
        ScopedEvent(
            event,
            row["kind"],
            None if row["workspace_id"] is None else str(row["workspace_id"]),
            None if row["channel_id"] is None else str(row["channel_id"]),
            None if row["owner_id"] is None else str(row["owner_id"]),
        )
        for row, event in zip(rows, to_log_events(rows), strict=True)
    ]


# The read models the visibility filter below depends on: events are shown only up to the
# position all of them have reached, so a reader paging with ``after`` never skips an event
# whose stream was not yet known when it read past it.
VISIBILITY_MODELS = ("streams", "channels", "workspaces")


def visible_events(
    user_id: str,
    kinds: StreamKinds,
    *,
    after: int,
    limit: int,
    stream: str | None,
    type_name: str | None,
    upto: int | None = None,
) -> Query[list[LogEvent]]:
    """Events of the streams the user may view (as each stream kind's readers rule says), in
    position order, none past ``upto``. ``view_audit`` in a workspace shows every stream of
    that workspace."""
    rows = yield Statement(
        "WITH my_ws AS (SELECT workspace_id, roles FROM rm_workspace_members"
        "   WHERE user_id = %(u)s),"
        " perms AS (SELECT m.workspace_id, array_agg(DISTINCT p) AS perms FROM my_ws m"
        "   JOIN rm_workspace_roles r ON r.workspace_id = m.workspace_id AND r.name = ANY(m.roles)"
        "   CROSS JOIN LATERAL unnest(r.permissions) AS p GROUP BY m.workspace_id),"
        " vis_channels AS ("
        "   SELECT c.channel_id FROM rm_channels c"
        "   JOIN rm_channel_members cm ON cm.channel_id = c.channel_id AND cm.user_id = %(u)s"
        "   WHERE c.kind = 'direct'"
        "   UNION SELECT c.channel_id FROM rm_channels c"
        "   JOIN perms ON perms.workspace_id = c.workspace_id"
        "   WHERE 'view_channels' = ANY(perms.perms) AND (NOT c.private OR EXISTS (SELECT 1"
        "     FROM rm_channel_members cm WHERE cm.channel_id = c.channel_id"
        "     AND cm.user_id = %(u)s))),"
        " bound AS (SELECT min(position) AS p FROM rm_tracking"
        "   WHERE projection = ANY(%(models)s))"
        f" {SELECT_EVENTS} JOIN rm_streams s ON s.stream_id = e.originator_id"
        " WHERE e.notification_id > %(after)s AND e.notification_id <= (SELECT p FROM bound)"
        " AND (%(upto)s::bigint IS NULL OR e.notification_id <= %(upto)s::bigint)"
        " AND (%(stream)s::uuid IS NULL OR e.originator_id = %(stream)s::uuid)"
        " AND (%(type)s::text IS NULL OR right(e.topic, length(%(type)s) + 1) = '.' || %(type)s)"
        # Which streams each kind's readers rule lets the user see (domain/scopes.py).
        " AND (s.workspace_id IN (SELECT workspace_id FROM perms"
        "        WHERE 'view_audit' = ANY(perms.perms))"
        "   OR (s.kind = ANY(%(members)s) AND s.workspace_id IN (SELECT workspace_id FROM my_ws))"
        "   OR (s.kind = ANY(%(channel_readers)s)"
        "       AND s.channel_id IN (SELECT channel_id FROM vis_channels))"
        "   OR (s.kind = ANY(%(owned)s) AND s.owner_id = %(u)s::uuid)"
        "   OR EXISTS (SELECT 1 FROM unnest(%(held_kinds)s::text[], %(held_by)s::text[])"
        "       AS h(kind, permission) JOIN perms ON perms.workspace_id = s.workspace_id"
        "       WHERE h.kind = s.kind AND h.permission = ANY(perms.perms)))"
        " ORDER BY e.notification_id LIMIT %(limit)s",
        {
            "u": user_id,
            **kinds.visibility_params,
            "models": list(VISIBILITY_MODELS),
            "after": after,
            "stream": stream,
            "type": type_name,
            "upto": upto,
            "limit": limit,
        },
    )
    return to_log_events(rows)


# A NOTIFY is only a wake-up, and any database login can send one: however many arrive, the
# work they cause is bounded. A listener acts on at most WAKE_BURST runs of them at once and
# WAKE_RATE a second after that; what arrives meanwhile is taken together as one run.
WAKE_RATE = 200.0
WAKE_BURST = 20
# How long a follower with ``when_quiet`` waits without a NOTIFY before it is called anyway.
QUIET_S = 1.0
# Notifications drained at once (so a flood cannot hold the listener in one drain).
_DRAIN = 10_000


def follow_channel(
    database_url: str,
    channel: str,
    stop: StopSignal,
    on_notify: Callable[[int], None],
    what: str,
    *,
    when_quiet: bool = False,
    rate: float = WAKE_RATE,
    burst: int = WAKE_BURST,
    quiet_s: float = QUIET_S,
) -> None:
    """Calls ``on_notify`` with the number of NOTIFYs of each run on ``channel`` (those
    already waiting are taken together), with 0 once connected (what was sent before, or
    during an outage, is lost: read the state anew) and, with ``when_quiet``, after each
    ``quiet_s`` without one, until ``stop`` is set (which wakes the wait at once); never more
    than ``burst`` calls at once and ``rate`` a second after that. Payloads are not kept: a
    NOTIFY is only a wake-up. A dedicated connection LISTENs; database outages are waited out
    (reconnecting), not raised."""
    tokens, refilled = float(burst), time.monotonic()
    with stop.waker() as woken:
        while not stop.is_set():
            try:
                with psycopg.connect(database_url, autocommit=True) as listener:
                    listener.execute(f"LISTEN {channel}")
                    on_notify(0)
                    while not stop.is_set():
                        got = _take(listener, 1)
                        if not got:
                            select.select([listener.fileno(), woken], [], [], quiet_s)
                            if stop.is_set():
                                return
                            got = _take(listener, 1)
                        if not got and not when_quiet:
                            continue
                        now = time.monotonic()
                        tokens = min(float(burst), tokens + (now - refilled) * rate)
                        refilled = now
                        if tokens < 1.0:
                            # Over the rate: what arrives while we wait joins this run.
                            stop.wait((1.0 - tokens) / rate)
                            now = time.monotonic()
                            tokens, refilled = tokens + (now - refilled) * rate, now
                        tokens -= 1.0
                        if got:
                            got += _take(listener, _DRAIN)
                        on_notify(got)
            except Exception as exc:
                log.warning("%s: %s; retrying", what, exc)
                stop.wait(0.5)


def _take(listener: psycopg.Connection[Any], most: int) -> int:
    """How many NOTIFYs (at most ``most``) have arrived, without waiting."""
    return sum(1 for _ in listener.notifies(timeout=0.0, stop_after=most))


def follow_store(
    database_url: str, stop: StopSignal, on_commit: Callable[[], None], what: str
) -> None:
    """Calls ``on_commit`` now and after every commit to the store, from any process (and
    once a second when none comes), until ``stop`` is set: a dedicated connection LISTENs to
    the store's NOTIFY. A flood of NOTIFYs costs at most ``WAKE_RATE`` calls a second.
    Database outages are waited out (reconnecting), not raised."""
    follow_channel(database_url, NOTIFY_CHANNEL, stop, lambda _: on_commit(), what, when_quiet=True)
