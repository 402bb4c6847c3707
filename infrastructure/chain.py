"""Tamper evidence: every stored event is chained to its predecessor by SHA-256.

``chorus_event_chain`` holds one row per stored event, written by the recorder in the same
transaction as the events, after their insert and under the events table's lock:

    hash(n) = SHA-256(hash(previous chain row) || record(n))

where the previous chain row is the one with the greatest position below ``n`` (positions may
have natural gaps: the chain, not contiguity, is the proof), the first event chains to 32 zero
bytes, and ``record(n)`` is the canonical encoding of the row *as stored*:

    int8 position | 16-byte originator id | int8 version
    | int4 length | topic (UTF-8) | int4 length | state bytes        (integers big-endian)

The recorder computes the hashes in Python from the rows it has just inserted, with the head
read under the table lock in the same transaction, and writes all of a transaction's links
in one statement (infrastructure/eventstore.py); :func:`verify` recomputes them from the
rows as stored, with the same :func:`record_bytes`.

Changing a stored event, deleting one, inserting one or reordering them breaks the chain at
the first position concerned. Deleting events at the *end* of the log together with their
chain rows leaves a shorter valid chain: publish the head hash (``chorus verify`` prints
it) and check it later with ``--expect POSITION:HASH``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import Connection
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

CHAIN_TABLE = "chorus_event_chain"
GENESIS = bytes(32)

CHECKPOINT_TABLE = "chorus_chain_checkpoint"

CHAIN_SQL = f"""
CREATE TABLE IF NOT EXISTS {CHAIN_TABLE} (
    notification_id bigint PRIMARY KEY,
    hash bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position bigint NOT NULL,
    hash bytea NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now()
);
"""


def record_bytes(
    position: int, originator_id: UUID, version: int, topic: str | None, state: bytes | None
) -> bytes:
    """The canonical encoding of one stored event (the same as the recorder's SQL)."""
    topic_bytes = (topic or "").encode("utf-8")
    state_bytes = bytes(state or b"")
    return b"".join(
        (
            struct.pack(">q", position),
            originator_id.bytes,
            struct.pack(">q", version),
            struct.pack(">i", len(topic_bytes)),
            topic_bytes,
            struct.pack(">i", len(state_bytes)),
            state_bytes,
        )
    )


def link(previous: bytes, record: bytes) -> bytes:
    return hashlib.sha256(previous + record).digest()


@dataclass(frozen=True)
class ChainReport:
    """The outcome of :func:`verify`: ``ok`` with the count and head, or the first bad
    position and what is wrong there."""

    ok: bool
    count: int
    head_position: int
    head_hash: bytes
    bad_position: int | None = None
    problem: str | None = None


def _verify_select(events_table: str) -> str:
    # A merge full join of two position-ordered indexes: streams, and shows a chain row
    # without its event (event deleted) as well as an event without its chain row.
    return (
        "SELECT e.notification_id AS position, e.originator_id, e.originator_version,"
        " e.topic, e.state, c.notification_id AS chain_position, c.hash"
        f" FROM {events_table} e FULL JOIN {CHAIN_TABLE} c"
        " ON c.notification_id = e.notification_id"
        " WHERE coalesce(e.notification_id, c.notification_id) > %s"
        " ORDER BY coalesce(e.notification_id, c.notification_id)"
    )


def verify(
    conn: Connection[Any],
    events_table: str,
    *,
    expect: tuple[int, bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 2000,
) -> ChainReport:
    """Recomputes the whole chain, streaming the log in position order through a
    server-side cursor (memory bounded by ``batch`` rows), in one consistent snapshot.

    ``expect`` is a previously published ``(position, head hash)``: the chain must still
    pass through that position with that hash. ``progress`` is called with each position
    checked. ``conn`` may be in autocommit mode or not; if it is already in a transaction,
    that transaction's snapshot is used.
    """
    fresh = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction():
        if fresh:  # one snapshot for the whole walk (the transaction's first statement)
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        with conn.cursor(name="chorus_verify", row_factory=tuple_row) as cur:
            cur.itersize = batch
            cur.execute(_verify_select(events_table), (0,))
            return walk(cur, expect=expect, progress=progress)


@dataclass(frozen=True)
class IncrementalReport:
    """:func:`verify_since_checkpoint`: the report, and where this check started."""

    report: ChainReport
    from_position: int


def verify_since_checkpoint(
    conn: Connection[Any], events_table: str, *, expect: tuple[int, bytes] | None = None
) -> IncrementalReport:
    """Recomputes the chain only after the last head a check found good (the checkpoint),
    so repeated checks cost the events appended since, not the whole log; moves the
    checkpoint when the chain holds. The stored hash at the checkpoint must still be the
    one verified: rewriting the log before it (and re-chaining) breaks that. An event
    altered in place before the checkpoint, its chain row left alone, is found only by a
    full :func:`verify` (``chorus verify``).
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(f"SELECT position, hash FROM {CHECKPOINT_TABLE}")
            row = cur.fetchone()
            start = (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))
            if start[0] and (expect is None or expect[0] > start[0]):
                cur.execute(
                    f"SELECT hash FROM {CHAIN_TABLE} WHERE notification_id = %s", (start[0],)
                )
                found = cur.fetchone()
                if found is None or bytes(found[0]) != start[1]:
                    problem = (
                        f"the chain at position {start[0]} is not the one verified there"
                        " before: the log up to that position was rewritten"
                    )
                    bad = ChainReport(False, 0, 0, GENESIS, start[0], problem)
                    return IncrementalReport(bad, start[0])
            else:
                start = (0, GENESIS)  # a published head at or before it: check it all
        with conn.cursor(name="chorus_verify_since", row_factory=tuple_row) as named:
            named.itersize = 2000
            named.execute(_verify_select(events_table), (start[0],))
            report = walk(named, expect=expect, start=start)
        if report.ok and report.head_position > start[0]:
            conn.execute(
                f"INSERT INTO {CHECKPOINT_TABLE} (position, hash) VALUES (%s, %s)"
                " ON CONFLICT (only_row) DO UPDATE SET position = excluded.position,"
                " hash = excluded.hash, verified_at = now()"
                f" WHERE {CHECKPOINT_TABLE}.position < excluded.position",
                (report.head_position, report.head_hash),
            )
    return IncrementalReport(report, start[0])


def verify_after(conn: Connection[Any], events_table: str, start: tuple[int, bytes]) -> ChainReport:
    """Recomputes the chain after ``start`` (a position a check just found good, and its
    hash) in the caller's transaction and snapshot: the events appended since a check,
    seen exactly as the caller's other reads see them."""
    with conn.cursor(name="chorus_verify_after", row_factory=tuple_row) as named:
        named.itersize = 2000
        named.execute(_verify_select(events_table), (start[0],))
        return walk(named, start=start)


def walk(
    rows: Iterable[Sequence[Any]],
    *,
    expect: tuple[int, bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    start: tuple[int, bytes] = (0, GENESIS),
) -> ChainReport:
    """Checks rows of ``(position, originator_id, version, topic, state, chain_position,
    hash)`` in position order (either position is None where its row is missing), after
    ``start``: a position already known good and its hash."""
    last_good, previous = start
    count = 0
    # The published position must be met: one that no event has (0, or a gap) proves nothing.
    expect_met = False

    def fail(position: int, problem: str) -> ChainReport:
        return ChainReport(False, count, last_good, previous, position, problem)

    for row in rows:
        position, chain_position, stored_hash = row[0], row[5], row[6]
        here = position if position is not None else chain_position
        if expect is not None and here > expect[0] and last_good < expect[0]:
            return fail(expect[0], f"no event at the published head position {expect[0]}")
        if position is None:
            return fail(
                chain_position,
                f"the event at position {chain_position} is missing (deleted);"
                " its chain row remains",
            )
        if chain_position is None:
            return fail(
                position,
                f"the event at position {position} has no chain row (inserted after the"
                " fact, or its chain row was deleted)",
            )
        computed = link(previous, record_bytes(position, row[1], row[2], row[3], row[4]))
        if computed != bytes(stored_hash):
            return fail(
                position,
                f"the chain breaks at position {position}: the event stored there was"
                f" altered, or events after position {last_good} were deleted, inserted"
                " or reordered",
            )
        if expect is not None and position == expect[0] and computed != expect[1]:
            return fail(
                position,
                f"the hash at position {position} differs from the published head:"
                " the log up to there was rewritten",
            )
        if expect is not None and position == expect[0]:
            expect_met = True
        previous, last_good = computed, position
        count += 1
        if progress is not None:
            progress(position)
    if expect is not None and last_good < expect[0]:
        return fail(
            expect[0],
            f"the log ends at position {last_good}, before the published head at position"
            f" {expect[0]}: events were deleted from its end",
        )
    if expect is not None and not expect_met:
        return fail(expect[0], f"no event at the published head position {expect[0]}")
    return ChainReport(True, count, last_good, previous)
