"""The read models checked against the log: rebuilt into a shadow schema, never swapped in,
and compared with the live tables row by row (``chorus verify --read-models``,
``POST /api/audit/verify-read-models``).

The hash chain proves the log; what users read are the read models. A row edited in place
(a deleted message given text, a membership added, a document snapshot replaced) leaves the
log and its chain intact. So the read models are rebuilt from the log into the schema
``chorus_verify`` (the bulk pass of ``projections/replay.py``, beside the live models) and
compared with the live ones.

One position per read model, without pausing anything: the comparison runs in one
REPEATABLE READ transaction that first reads the live tracking rows. A runner moves a model's
tracking row in the same transaction as its rows, so that snapshot shows each live model
exactly as of its tracked position; the same transaction then brings the shadow model to that
very position (its own writes are visible to it) and compares. A model that is behind (or
stuck) is compared at the position it is at; the live runners go on meanwhile.

Every column is compared: each one is derived from the log (timestamps are the events'
``at``, never the projector's clock). ``IGNORED`` is where a column that legitimately
depends on the instance would be listed, table by table; it is empty. Document snapshots are
compared by the document state they encode (decoded and encoded again), not by their bytes.

One check at a time per database (a PostgreSQL advisory lock: across instances and the CLI).
The shadow schema is dropped afterwards, also on error, Ctrl-C or SIGTERM; a check killed
outright leaves it behind and the next check drops it first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pycrdt import Doc

from infrastructure.chain import ChainReport, verify_after
from infrastructure.eventstore import EVENTS_TABLE
from projections.base import Projection
from projections.replay import build
from projections.runner import TRANSIENT, run_batch

SHADOW = "chorus_verify"
# pg_advisory_lock key of the check (any fixed bigint; "chorus verify" in ASCII, truncated).
LOCK_KEY = 0x63686F7275737672
APPLICATION_NAME = "chorus verify read models"
SAMPLE = 20  # differing rows shown per table; the counts are always complete
VALUE_CHARS = 120

# Columns left out of the comparison, per table, because they may legitimately differ
# between the live tables and a rebuild of the same log. None today: every column is derived
# from the events (times are the events' own ``at``). A column listed here must say why.
IGNORED: Mapping[str, frozenset[str]] = {}


class Busy(Exception):
    """Another check of the read models holds the lock (on this instance or another)."""


@dataclass
class Divergence:
    """One row that differs: ``missing`` (the log implies it, the live table lacks it),
    ``extra`` (in the live table only) or ``changed`` (these columns differ)."""

    kind: str
    key: dict[str, str]
    columns: list[str] = field(default_factory=list)
    live: dict[str, str] = field(default_factory=dict)
    rebuilt: dict[str, str] = field(default_factory=dict)


@dataclass
class TableReport:
    table: str
    projection: str
    missing: int = 0
    extra: int = 0
    changed: int = 0
    live_rows: int = 0
    rebuilt_rows: int = 0
    rows: list[Divergence] = field(default_factory=list)  # the first SAMPLE of them

    @property
    def diverged(self) -> bool:
        return bool(
            self.missing or self.extra or self.changed or self.live_rows != self.rebuilt_rows
        )


@dataclass
class ReadModelReport:
    """``ok`` when every compared table matches its rebuild. ``positions``: where each read
    model was compared; ``problems``: what kept a model from being compared, or the chain
    after the verified head breaking."""

    ok: bool
    positions: dict[str, int]
    tables: list[TableReport]
    problems: list[str]


def verify_read_models(
    database_url: str,
    projections: Sequence[Projection],
    *,
    verified: tuple[int, bytes],
    sample: int = SAMPLE,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> ReadModelReport:
    """Rebuilds ``projections`` into the shadow schema from the log and compares them with
    the live tables. ``verified``: the head (position, hash) of a chain check that just
    passed; events past it that the rebuild reads are chained from it in the comparison's
    snapshot. ``progress``: as ``chorus replay``'s, the events each batch of the rebuild
    read. Raises ``Busy`` if another check is running."""
    if not projections:
        raise ValueError("no read model to verify")
    with psycopg.connect(
        database_url, autocommit=True, row_factory=dict_row, application_name=APPLICATION_NAME
    ) as lock:
        # Session-level: held while this connection lives, released if the process dies.
        row = lock.execute("SELECT pg_try_advisory_lock(%s) AS got", (LOCK_KEY,)).fetchone()
        if row is None or not row["got"]:
            raise Busy("a check of the read models is running")
        try:
            live = _live_positions(lock, projections)
            # Each model up to where the live one is now (it can only move on from there).
            build(
                database_url,
                projections,
                schema=SHADOW,
                until=live,
                batch_size=batch_size,
                progress=progress,
                isolate_failures=True,
            )
            return _compare(database_url, projections, verified, sample, batch_size)
        finally:
            try:
                lock.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")
            finally:
                # Explicitly: a closed connection's backend lets go of its locks only as it
                # exits, a moment later, and the next check would find the lock still held.
                lock.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _live_positions(
    conn: psycopg.Connection[Any], projections: Sequence[Projection]
) -> dict[str, int]:
    rows = conn.execute(
        "SELECT projection, position FROM public.rm_tracking WHERE projection = ANY(%s)",
        ([p.name for p in projections],),
    ).fetchall()
    found = {row["projection"]: int(row["position"]) for row in rows}
    return {p.name: found.get(p.name, 0) for p in projections}


def _compare(
    database_url: str,
    projections: Sequence[Projection],
    verified: tuple[int, bytes],
    sample: int,
    batch_size: int,
) -> ReadModelReport:
    with (
        psycopg.connect(
            database_url,
            row_factory=dict_row,
            application_name=APPLICATION_NAME,
            options=f"-c search_path={SHADOW},public",
        ) as conn,
        conn.transaction(),
    ):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        positions = _live_positions(conn, projections)  # the snapshot's first read
        problems: list[str] = []
        furthest = max(positions.values(), default=0)
        if furthest > verified[0]:
            chain = verify_after(conn, EVENTS_TABLE, verified)
            if not chain.ok or chain.head_position < furthest:
                problems.append(_chain_problem(chain, furthest))
                return ReadModelReport(False, positions, [], problems)
        with conn.cursor() as cur:
            reached = _catch_up(conn, cur, projections, positions, batch_size)
        tables: list[TableReport] = []
        for projection in projections:
            if reached[projection.name] != positions[projection.name]:
                problems.append(_position_problem(conn, projection.name, positions, reached))
                continue
            for table in projection.tables:
                tables.append(_compare_table(conn, projection.name, table, sample))
        ok = not problems and not any(t.diverged for t in tables)
        return ReadModelReport(ok, positions, tables, problems)


def _chain_problem(chain: ChainReport, needed: int) -> str:
    if not chain.ok:
        return f"the log changed during the check: {chain.problem}"
    return f"the chain ends at position {chain.head_position}, before {needed}"


def _catch_up(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    projections: Sequence[Projection],
    positions: Mapping[str, int],
    batch_size: int,
) -> dict[str, int]:
    """Brings each shadow model to its live position, in the comparison's transaction (a
    model that fails is retried in savepoints, as the runner does); returns where each
    shadow model is."""
    for projection in projections:
        until = positions[projection.name]
        while True:
            try:
                with conn.transaction():
                    count = run_batch(cur, [projection], batch_size, until).count
            except TRANSIENT:
                raise
            except Exception:
                count = run_batch(cur, [projection], batch_size, until, isolated=True).count
            if count < batch_size:
                break
    cur.execute(
        f"SELECT projection, position FROM {SHADOW}.rm_tracking WHERE projection = ANY(%s)",
        ([p.name for p in projections],),
    )
    return {row["projection"]: int(row["position"]) for row in cur.fetchall()}


def _position_problem(
    conn: psycopg.Connection[Any], name: str, live: Mapping[str, int], reached: Mapping[str, int]
) -> str:
    row = conn.execute(
        f"SELECT stuck_position, error FROM {SHADOW}.rm_tracking WHERE projection = %s", (name,)
    ).fetchone()
    if reached[name] < live[name] and row is not None and row["stuck_position"] is not None:
        return (
            f"{name}: the rebuild cannot apply the event at position {row['stuck_position']}"
            f" ({row['error']}) but the live read model is at position {live[name]}"
        )
    return (
        f"{name}: the rebuild reached position {reached[name]}, the live read model is at"
        f" {live[name]} (it moved back during the check, e.g. a replay with --until:"
        " check again)"
    )


# -- one table ---------------------------------------------------------------------------------


def _columns(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        (f"{schema}.{table}",),
    ).fetchall()
    return [row["attname"] for row in rows]


def _primary_key(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (f"{schema}.{table}",),
    ).fetchall()
    return [row["attname"] for row in rows]


def _compare_table(
    conn: psycopg.Connection[Any], projection: str, table: str, sample: int
) -> TableReport:
    """Live ``public.table`` against the shadow's, joined on the shadow's primary key (the
    live table's constraints may have been altered too), in the server: only differing rows
    come back, streamed."""
    report = TableReport(table, projection)
    key = _primary_key(conn, SHADOW, table)
    if not key:  # every read-model table has one: rows are compared by it
        raise ValueError(f"{table} has no primary key")
    ignored = IGNORED.get(table, frozenset())
    columns = [c for c in _columns(conn, SHADOW, table) if c not in key and c not in ignored]
    live_columns = set(_columns(conn, "public", table))
    absent = [c for c in [*key, *columns] if c not in live_columns]
    for name in absent:  # a dropped column: every row of the table differs
        report.rows.append(Divergence("changed", {}, [name], {name: "(no such column)"}))
    if absent:
        report.changed = 1
        return report
    counts = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM public.{t}) AS live, (SELECT count(*) FROM {s}.{t})"
            " AS rebuilt"
        ).format(t=sql.Identifier(table), s=sql.Identifier(SHADOW))
    ).fetchone()
    assert counts is not None
    report.live_rows, report.rebuilt_rows = int(counts["live"]), int(counts["rebuilt"])
    semantic = SEMANTIC.get(table, {})
    ident = sql.Identifier
    selected = [
        sql.SQL("l.ctid IS NULL AS only_rebuilt, r.ctid IS NULL AS only_live"),
        *(
            sql.SQL("coalesce(l.{c}, r.{c})::text AS {a}").format(c=ident(c), a=ident(f"k_{i}"))
            for i, c in enumerate(key)
        ),
        *(
            sql.SQL("l.{c} IS DISTINCT FROM r.{c} AS {d}, l.{c} AS {a}, r.{c} AS {b}").format(
                c=ident(c), d=ident(f"d_{i}"), a=ident(f"l_{i}"), b=ident(f"r_{i}")
            )
            for i, c in enumerate(columns)
        ),
    ]
    differs = [
        sql.SQL("l.ctid IS NULL OR r.ctid IS NULL"),
        *(sql.SQL("l.{c} IS DISTINCT FROM r.{c}").format(c=ident(c)) for c in columns),
    ]
    query = sql.SQL(
        "SELECT {selected} FROM public.{t} l FULL JOIN {s}.{t} r ON {on} WHERE {differs}"
    ).format(
        selected=sql.SQL(", ").join(selected),
        t=ident(table),
        s=ident(SHADOW),
        on=sql.SQL(" AND ").join(sql.SQL("l.{c} = r.{c}").format(c=ident(c)) for c in key),
        differs=sql.SQL(" OR ").join(differs),
    )
    with conn.cursor(name=f"chorus_compare_{table}", row_factory=dict_row) as rows:
        rows.itersize = 200
        rows.execute(query)
        for row in rows:
            divergence = _divergence(row, key, columns, semantic)
            if divergence is None:
                continue
            if divergence.kind == "missing":
                report.missing += 1
            elif divergence.kind == "extra":
                report.extra += 1
            else:
                report.changed += 1
            if len(report.rows) < sample:
                report.rows.append(divergence)
    return report


def _divergence(
    row: dict[str, Any],
    key: list[str],
    columns: list[str],
    semantic: Mapping[str, Callable[[Any, Any], bool]],
) -> Divergence | None:
    keys = {c: row[f"k_{i}"] for i, c in enumerate(key)}
    if row["only_rebuilt"]:
        return Divergence(
            "missing", keys, rebuilt={c: _shown(row[f"r_{i}"]) for i, c in enumerate(columns)}
        )
    if row["only_live"]:
        return Divergence(
            "extra", keys, live={c: _shown(row[f"l_{i}"]) for i, c in enumerate(columns)}
        )
    differing = [
        (i, c)
        for i, c in enumerate(columns)
        if row[f"d_{i}"] and not (c in semantic and semantic[c](row[f"l_{i}"], row[f"r_{i}"]))
    ]
    if not differing:
        return None
    return Divergence(
        "changed",
        keys,
        [c for _, c in differing],
        {c: _shown(row[f"l_{i}"]) for i, c in differing},
        {c: _shown(row[f"r_{i}"]) for i, c in differing},
    )


def _shown(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return f"<{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}>"
    text = "null" if value is None else str(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


# -- document snapshots: the state they encode ----------------------------------------------------


def _canonical_state(state: bytes) -> bytes | None:
    """The CRDT state an encoded Yjs update holds, encoded again from a fresh document (the
    same state encodes to the same bytes, whichever updates built it); None if it does not
    decode."""
    doc: Doc[Any] = Doc()
    try:
        doc.apply_update(state)
    except Exception:
        return None
    encoded: bytes = doc.get_update()
    return encoded


def _same_document_state(live: Any, rebuilt: Any) -> bool:
    if live is None or rebuilt is None:
        return live is rebuilt
    canonical = _canonical_state(bytes(live))
    return canonical is not None and canonical == _canonical_state(bytes(rebuilt))


def _state_vector(encoded: bytes) -> dict[int, int] | None:
    """A Yjs state vector (varuint count, then varuint client and clock pairs) as a map."""
    numbers: list[int] = []
    value = shift = 0
    for byte in encoded:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            numbers.append(value)
            value = shift = 0
    if shift or not numbers or len(numbers) != 1 + 2 * numbers[0]:
        return None
    pairs = numbers[1:]
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def _same_state_vector(live: Any, rebuilt: Any) -> bool:
    if live is None or rebuilt is None:
        return live is rebuilt
    vector = _state_vector(bytes(live))
    return vector is not None and vector == _state_vector(bytes(rebuilt))


SEMANTIC: Mapping[str, Mapping[str, Callable[[Any, Any], bool]]] = {
    "rm_document_snapshots": {"state": _same_document_state, "state_vector": _same_state_vector},
}
