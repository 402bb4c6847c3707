"""The reaction runner's view of the database (application/reaction_runner.py): tracking
rows, the events of a policy's types, and the locks that let one process at a time run a
policy."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from domain.operations import ReactionSkip, ReadModelSkip
from infrastructure.eventstore import EVENTS_TABLE
from infrastructure.reaction_tracking import LOCK_CLASS, MarkMoved, Move, advance_params

_SKIP_TOPIC = get_topic(getattr(ReadModelSkip, "ProjectionEventSkipped"))  # noqa: B009
_REACTION_SKIP_TOPIC = get_topic(getattr(ReactionSkip, "ReactionEventSkipped"))  # noqa: B009
# ``ADVANCE``, also content with a mark already moved there: a command whose commit answer was
# lost is found by its key, and its transaction had moved the mark.
_ADVANCE_ALONE = (
    "UPDATE chorus_reactions SET position = %s, done = %s,"
    " stuck_position = NULL, error = NULL, since = NULL"
    " WHERE policy = %s AND ((position = %s AND done = %s) OR (position = %s AND done = %s))"
    " RETURNING 1"
)


@dataclass(frozen=True)
class PolicyState:
    position: int
    done: int
    stuck_position: int | None
    error: str | None
    since: datetime | None


class ReactionLog:
    """The reaction runner's view of the database: tracking rows, events, locks."""

    def __init__(self, pool: ConnectionPool[Any], database_url: str) -> None:
        self.pool = pool
        self.database_url = database_url
        # Session advisory locks live as long as this connection: a killed process's are
        # released by PostgreSQL when its connection ends.
        self._locks: psycopg.Connection[Any] | None = None
        self._held: set[str] = set()
        self._guard = threading.Lock()

    def ensure(self, policies: Sequence[str]) -> None:
        """Tracking rows for new policies, at the start of the log."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO chorus_reactions (policy) SELECT unnest(%s::text[])"
                " ON CONFLICT (policy) DO NOTHING",
                (list(policies),),
            )

    # -- locks -------------------------------------------------------------------------------

    def lock(self, policy: str) -> bool:
        """Whether this process runs ``policy`` (it takes the lock if it is free)."""
        with self._guard:
            if self._locks is not None and self._locks.closed:
                self._locks, self._held = None, set()
            if policy in self._held:
                return True
            if self._locks is None:
                self._locks = psycopg.connect(self.database_url, autocommit=True)
            row = self._locks.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, policy)
            ).fetchone()
            if row is not None and row[0]:
                self._held.add(policy)
                return True
            return False

    def check_locks(self) -> None:
        """Forgets the locks if their connection is gone (they are released with it)."""
        with self._guard:
            if self._locks is None:
                return
            try:
                self._locks.execute("SELECT 1")
            except psycopg.Error:
                with contextlib.suppress(psycopg.Error):
                    self._locks.close()
                self._locks, self._held = None, set()

    def release(self) -> None:
        with self._guard:
            if self._locks is not None:
                with contextlib.suppress(psycopg.Error):
                    self._locks.close()
            self._locks, self._held = None, set()

    # -- marks -------------------------------------------------------------------------------

    def states(self) -> dict[str, PolicyState]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT policy, position, done, stuck_position, error, since FROM chorus_reactions"
            )
            return {
                row["policy"]: PolicyState(
                    int(row["position"]),
                    int(row["done"]),
                    row["stuck_position"],
                    row["error"],
                    row["since"],
                )
                for row in cur.fetchall()
            }

    def advance(self, move: Move) -> None:
        """Moves a policy's mark when no command's events carry the move."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            params = (*advance_params(move), move.after.position, move.after.done)
            if cur.execute(_ADVANCE_ALONE, params).fetchone() is None:
                raise MarkMoved(move.policy)

    def advance_many(self, moves: Sequence[Move]) -> set[str]:
        """``advance`` for several policies in one statement; the policies whose mark it
        moved (the others' marks were not where their runner read them)."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "UPDATE chorus_reactions r SET position = m.after_position,"
                " done = m.after_done, stuck_position = NULL, error = NULL, since = NULL"
                " FROM unnest(%s::text[], %s::bigint[], %s::int[], %s::bigint[], %s::int[])"
                "  AS m(policy, before_position, before_done, after_position, after_done)"
                " WHERE r.policy = m.policy AND ((r.position = m.before_position"
                "  AND r.done = m.before_done) OR (r.position = m.after_position"
                "  AND r.done = m.after_done)) RETURNING r.policy",
                (
                    [m.policy for m in moves],
                    [m.before.position for m in moves],
                    [m.before.done for m in moves],
                    [m.after.position for m in moves],
                    [m.after.done for m in moves],
                ),
            ).fetchall()
        return {str(r["policy"]) for r in rows}

    def stick(self, policy: str, position: int, error: str) -> datetime:
        """Records that ``policy`` cannot handle the event at ``position``."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "UPDATE chorus_reactions SET stuck_position = %s, error = %s,"
                " since = CASE WHEN stuck_position = %s AND since IS NOT NULL THEN since"
                " ELSE now() END WHERE policy = %s RETURNING since",
                (position, error, position, policy),
            ).fetchone()
        if row is None:
            raise MarkMoved(policy)
        since: datetime = row["since"]
        return since

    # -- the log -----------------------------------------------------------------------------

    def first_of(self, topics: Sequence[str], *, after: int, upto: int) -> int | None:
        """The position of the first event of one of ``topics`` in ``(after, upto]``. A scan
        of that stretch (no index on topics: one would tax every append): the runner asks
        once per stretch."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT min(notification_id) AS first FROM {EVENTS_TABLE}"
                " WHERE notification_id > %s AND notification_id <= %s AND topic = ANY(%s)",
                (after, upto, list(topics)),
            )
            row = cur.fetchone()
        return None if row is None or row["first"] is None else int(row["first"])

    def events(
        self, *, after: int, topics: Sequence[str], limit: int
    ) -> tuple[int, int, list[tuple[int, StoredEvent]]]:
        """How many of the next ``limit`` events after ``after`` there are, the position of
        the last of them (``after`` when none), and those of them with one of ``topics``, in
        log order.
        Positions are taken in commit order under the store's table lock, so every position
        up to the first is committed (or never will be)."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT max(notification_id) AS upto, count(*) AS n FROM (SELECT notification_id"
                f" FROM {EVENTS_TABLE} WHERE notification_id > %s"
                " ORDER BY notification_id LIMIT %s) s",
                (after, limit),
            )
            row = cur.fetchone()
            if row is None or row["upto"] is None:
                return 0, after, []
            count, upto = int(row["n"]), int(row["upto"])
            cur.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state"
                f" FROM {EVENTS_TABLE} WHERE notification_id > %s AND notification_id <= %s"
                " AND topic = ANY(%s) ORDER BY notification_id",
                (after, upto, list(topics)),
            )
            found = [
                (
                    int(r["notification_id"]),
                    StoredEvent(
                        originator_id=_uuid(r["originator_id"]),
                        originator_version=int(r["originator_version"]),
                        topic=r["topic"],
                        state=bytes(r["state"]),
                    ),
                )
                for r in cur.fetchall()
            ]
        return count, upto, found

    def skipped(self, position: int, policy: str | None = None) -> bool:
        """Whether the log holds an operator's skip of the event at ``position`` for a read
        model, or for ``policy`` (necessarily later in the log than the event)."""
        at = msgspec.json.encode({"position": position}).decode()
        mine = msgspec.json.encode({"position": position, "policy": policy}).decode()
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT 1 FROM {EVENTS_TABLE} WHERE notification_id > %s AND ("
                " (topic = %s AND convert_from(state, 'UTF8')::jsonb @> %s::jsonb)"
                " OR (topic = %s AND convert_from(state, 'UTF8')::jsonb @> %s::jsonb)) LIMIT 1",
                (position, _SKIP_TOPIC, at, _REACTION_SKIP_TOPIC, mine),
            )
            return cur.fetchone() is not None

    def log_end(self) -> int:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                f"SELECT coalesce(max(notification_id), 0) AS p FROM {EVENTS_TABLE}"
            ).fetchone()
        return 0 if row is None else int(row["p"])


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
