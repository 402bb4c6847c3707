"""The PostgreSQL event store: eventsourcing's recorder, plus what must commit with events.

Three things are written in the same transaction as a command's events:
- the data keys their personal fields are sealed under (infrastructure/keys.py): an event
  must never be stored without its key (it would be unreadable), nor need a key be kept
  for an event that was not stored; and the keys an event erases (a deleted message's),
  destroyed as it is stored;
- its idempotency record (so a retry finds the first result, even after a crash or when two
  retries race: the primary key lets only one of them commit), and
- credentials (password hashes), which must not exist without their events or vice versa;
  they live beside the log, never in it.
It also chains the events for tamper evidence (``chorus_event_chain``, see
infrastructure/chain.py), after their insert and under the table lock.
The recorder keeps eventsourcing's locking: ``LOCK TABLE ... IN EXCLUSIVE MODE`` makes
commit order equal position order, so a tailing reader never skips a late commit. What it
changes is how the transaction travels: one statement each for the events, their chain links
and the idempotency records, with column arrays sent in binary (eventsourcing sends an array
of a composite type, which psycopg quotes as text: 30 µs of CPU an event), in one pipeline
synced twice (eventsourcing's path synced it five times, seven with idempotency records).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlparse
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.utils import retry
from psycopg import Cursor, Pipeline
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from infrastructure import metrics, tracing
from infrastructure.chain import CHAIN_TABLE, GENESIS, link, record_bytes
from infrastructure.keys import INSERT_KEYS, erase_statement, key_rows
from infrastructure.reaction_tracking import ADVANCE, MarkMoved, Move, advance_params
from infrastructure.serialisation import erasures_of, keys_of

APPLICATION_NAME = "Chorus"
EVENTS_TABLE = "chorus_events"
SNAPSHOTS_TABLE = "chorus_snapshots"  # the name eventsourcing gives them for "Chorus"
NOTIFY_CHANNEL = EVENTS_TABLE
_CHAIN_HEAD = f"SELECT hash FROM {CHAIN_TABLE} ORDER BY notification_id DESC LIMIT 1"
_INSERT_LINKS = (
    f"INSERT INTO {CHAIN_TABLE} (notification_id, hash)"
    " SELECT * FROM unnest(%b::int8[], %b::bytea[])"
)
_INSERT_COMMANDS = (
    "INSERT INTO chorus_commands (scope, key, fingerprint, status, result, position)"
    " SELECT s, k, f, st, r::jsonb, p"
    " FROM unnest(%b::text[], %b::text[], %b::text[], %b::int2[], %b::text[], %b::int8[])"
    " AS t(s, k, f, st, r, p)"
)

# Each event's W3C traceparent when it was written under a trace (infrastructure/tracing.py):
# beside the log, not in it, so the hash chain (topic and state) means what it did, events
# written before (or untraced) simply have no row, and nothing is written with tracing off.
TRACES_TABLE = "chorus_event_traces"
_INSERT_TRACES = (
    f"INSERT INTO {TRACES_TABLE} (notification_id, traceparent)"
    " SELECT * FROM unnest(%b::int8[], %b::text[])"
)

SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS {TRACES_TABLE} (
    notification_id bigint PRIMARY KEY,
    traceparent text NOT NULL
);
CREATE TABLE IF NOT EXISTS chorus_commands (
    scope text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    status smallint NOT NULL,
    result jsonb NOT NULL,
    position bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS chorus_credentials (
    subject_id uuid PRIMARY KEY,
    password_hash text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- A group commit decided on aggregates it remembered from earlier batches: each must still be
-- at the version it was read at. Run under the events table's lock, in the insert's
-- transaction; a stale one fails the transaction as a constraint would (SQLSTATE 23000).
CREATE OR REPLACE FUNCTION chorus_expect_versions(ids uuid[], versions bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stale uuid;
BEGIN
    SELECT e.id INTO stale
    FROM unnest(ids, versions) AS e(id, version)
    WHERE e.version IS DISTINCT FROM (
        SELECT max(c.originator_version) FROM chorus_events c WHERE c.originator_id = e.id
    )
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'aggregate % changed since it was read', stale
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
END
$$;
"""
_EXPECT_VERSIONS = "SELECT chorus_expect_versions(%b::uuid[], %b::int8[])"
_UPSERT_CREDENTIAL = (
    "INSERT INTO chorus_credentials (subject_id, password_hash) VALUES (%s, %s)"
    " ON CONFLICT (subject_id) DO UPDATE"
    " SET password_hash = excluded.password_hash, updated_at = now()"
)


class CommandRecord(Protocol):
    """What a retry of the command with the same key gets back (see
    application/command_path.py)."""

    @property
    def scope(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def result(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StoredCommand:
    fingerprint: str
    status: int
    result: dict[str, Any]


class ChorusRecorder(PostgresApplicationRecorder):
    """Records events, and with them the command's idempotency record and side writes."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self._insert_rows = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::{id_type}[], %b::int8[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(
            schema=Identifier(datastore.schema),
            table=Identifier(events_table_name),
            id_type=Identifier(datastore.originator_id_type),
        )

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        command: CommandRecord | None = None,
        commands: Sequence[tuple[CommandRecord, int, int]] = (),
        credentials: Mapping[UUID, str] | None = None,
        expect: Mapping[UUID, int] | None = None,
        reaction: Move | None = None,
        traces: Sequence[str | None] | None = None,
        **_: Any,
    ) -> Sequence[int] | None:
        """``_insert_events``; ``traces``: each event's traceparent (the group commit's,
        one commit span per command). Without them, a write under a trace (a command run
        in its caller's thread) gets a commit span of its own, and its events its id."""
        ids: Sequence[int] | None
        if traces is None and stored_events and tracing.traceparent() is not None:
            with tracing.span("chorus.commit", attributes={"chorus.events": len(stored_events)}):
                traces = [tracing.traceparent()] * len(stored_events)
                ids = self._insert_events(
                    stored_events, command, commands, credentials, expect, reaction, traces
                )
            return ids
        ids = self._insert_events(
            stored_events, command, commands, credentials, expect, reaction, traces
        )
        return ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        command: CommandRecord | None,
        commands: Sequence[tuple[CommandRecord, int, int]],
        credentials: Mapping[UUID, str] | None,
        expect: Mapping[UUID, int] | None,
        reaction: Move | None,
        traces: Sequence[str | None] | None,
    ) -> Sequence[int] | None:
        """One transaction in two round trips. The first takes the table lock, checks
        ``expect``, reads the chain head and inserts the events (their positions, or a
        conflict, come back); the second inserts the chain links and the idempotency records
        and commits. (eventsourcing's insert path synced its pipeline five times, seven with
        idempotency records: each round trip waits for PostgreSQL and then for this thread
        to be scheduled again, which a busy machine makes slow.)

        ``reaction``: a reaction policy's mark moves from where its runner read it, or
        nothing is stored (MarkMoved); first, so a runner that waits for the mark's row
        waits before it holds the table lock."""
        with self.datastore.get_connection() as conn:
            ids: list[int] = []
            failure: Exception | None = None
            # The pool's connections are in autocommit mode. BEGIN and COMMIT are sent as
            # statements, so that the COMMIT goes out with the pipeline's last sync
            # (``conn.transaction()`` syncs once more for each of them).
            try:
                with (
                    conn.pipeline() as pipeline,
                    conn.cursor() as curs,
                    conn.cursor() as head,
                    conn.cursor() as mark,
                ):
                    try:
                        curs.execute("BEGIN")
                        if reaction is not None:
                            mark.execute(ADVANCE, advance_params(reaction), prepare=True)
                        for subject_id, password_hash in (credentials or {}).items():
                            curs.execute(_UPSERT_CREDENTIAL, (subject_id, password_hash))
                        if stored_events:
                            ids = self._insert_rows_and_links(
                                pipeline, curs, head, stored_events, command, commands, expect
                            )
                            if traces is not None:
                                _insert_traces(curs, ids, traces)
                        if reaction is not None and mark.fetchone() is None:
                            raise MarkMoved(reaction.policy)
                        curs.execute("COMMIT")
                    except Exception as exc:  # raised once the pipeline is closed
                        failure = exc
            except Exception as exc:  # the last sync's: the links, records or COMMIT
                failure = failure or exc
            finally:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    # A broken connection fails here too: the pool drops it, and the
                    # failure above is the one raised.
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
            if failure is not None:
                raise failure  # translated by get_connection
        if stored_events:
            metrics.EVENTS_APPENDED.inc(len(stored_events))
        return ids if stored_events else None

    def _insert_rows_and_links(
        self,
        pipeline: Pipeline,
        curs: Cursor[DictRow],
        head: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        command: CommandRecord | None,
        commands: Sequence[tuple[CommandRecord, int, int]],
        expect: Mapping[UUID, int] | None,
    ) -> list[int]:
        self._lock_table(curs)
        self._notify_channel(curs)
        if expect:
            curs.execute(_EXPECT_VERSIONS, (list(expect), list(expect.values())), prepare=True)
        # Under the lock, so no other writer moves the head before this transaction ends.
        head.execute(_CHAIN_HEAD, prepare=True)
        curs.execute(
            self._insert_rows,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
        )
        # The data keys of the events' sealed fields (infrastructure/keys.py), in the
        # events' own transaction: both are stored, or neither. One statement a batch.
        made = keys_of(stored_events)
        if made:
            # A cursor of its own: ``curs`` is read for the positions below.
            curs.connection.execute(INSERT_KEYS, key_rows(made), prepare=True)
        # After them: a batch may hold a message's text and the deletion erasing it.
        erased = erasures_of(stored_events)
        if erased:
            curs.connection.execute(*erase_statement(erased, []))
        pipeline.sync()  # the positions come back (or the conflict is raised) here
        ids = [int(row["notification_id"]) for row in curs.fetchall()]
        if len(ids) != len(stored_events):
            raise ProgrammingError(f"{len(ids)} positions for {len(stored_events)} events")
        head_row = head.fetchone()
        _append_links(curs, ids, stored_events, GENESIS if head_row is None else head_row["hash"])
        rows = []
        if command is not None:
            rows.append(_command_row(command, max(ids)))
        # A group commit (application/group_commit.py): each command's record points at the
        # last of its own events, ``stored_events[start:stop]``.
        rows.extend(_command_row(r, max(ids[start:stop])) for r, start, stop in commands)
        if rows:
            curs.execute(_INSERT_COMMANDS, [list(column) for column in zip(*rows, strict=True)])
        return ids

    def insert_batch(
        self,
        stored_events: Sequence[StoredEvent],
        commands: Sequence[tuple[CommandRecord, int, int]],
        credentials: Mapping[UUID, str],
        expect: Mapping[UUID, int] | None = None,
        traces: Sequence[str | None] | None = None,
    ) -> Sequence[int]:
        """Several commands' events, idempotency records and credentials in one transaction
        (same table lock and chain links as a single command's). ``commands`` holds each
        record with the slice ``[start:stop]`` of ``stored_events`` that are its events.
        ``expect``: aggregates that must still be at these versions, or nothing is stored
        (IntegrityError). The positions returned are in the order of ``stored_events``."""
        ids = self.insert_events(
            stored_events, commands=commands, credentials=credentials, expect=expect, traces=traces
        )
        return list(ids or ())

    def current_versions(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        """The latest version of each aggregate in ``ids`` that has events."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                f"SELECT originator_id, max(originator_version) AS version"
                f" FROM {self.events_table_name} WHERE originator_id = ANY(%b::uuid[])"
                " GROUP BY originator_id",
                (list(ids),),
            )
            return {row["originator_id"]: int(row["version"]) for row in curs.fetchall()}

    def find_command(self, scope: str, key: str) -> StoredCommand | None:
        """The recorded outcome of an earlier command with this idempotency key."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT fingerprint, status, result FROM chorus_commands"
                " WHERE scope = %s AND key = %s",
                (scope, key),
            )
            row = curs.fetchone()
        if row is None:
            return None
        return StoredCommand(row["fingerprint"], row["status"], row["result"])

    def find_commands(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredCommand]:
        """``find_command`` for many (scope, key) pairs in one query: those recorded."""
        if not keys:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT c.scope, c.key, c.fingerprint, c.status, c.result FROM chorus_commands c"
                " JOIN unnest(%s::text[], %s::text[]) AS k(scope, key)"
                " ON c.scope = k.scope AND c.key = k.key",
                ([s for s, _ in keys], [k for _, k in keys]),
            )
            return {
                (row["scope"], row["key"]): StoredCommand(
                    row["fingerprint"], row["status"], row["result"]
                )
                for row in curs.fetchall()
            }

    def find_recorded(self, stored_events: Sequence[StoredEvent]) -> int | None:
        """The position of the last of ``stored_events`` if each of them is in the store
        exactly as given, else None. An append whose commit answer was lost (the connection
        dropped at COMMIT) may have committed: eventsourcing then retries the insert, which
        fails on the events already there; this tells that case from a concurrent write."""
        if not stored_events:
            return None
        positions = []
        with self.datastore.transaction(commit=False) as curs:
            for event in stored_events:
                curs.execute(
                    f"SELECT notification_id, topic, state FROM {self.events_table_name}"
                    " WHERE originator_id = %s AND originator_version = %s",
                    (event.originator_id, event.originator_version),
                )
                row = curs.fetchone()
                if (
                    row is None
                    or row["topic"] != event.topic
                    or bytes(row["state"]) != bytes(event.state)
                ):
                    return None
                positions.append(int(row["notification_id"]))
        return max(positions)

    def find_password_hash(self, subject_id: UUID) -> str | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                "SELECT password_hash FROM chorus_credentials WHERE subject_id = %s",
                (subject_id,),
            )
            row = curs.fetchone()
        return None if row is None else str(row["password_hash"])


def _insert_traces(curs: Cursor[DictRow], ids: Sequence[int], traces: Sequence[str | None]) -> None:
    traced = [(i, t) for i, t in zip(ids, traces, strict=True) if t is not None]
    if traced:
        curs.execute(_INSERT_TRACES, ([i for i, _ in traced], [t for _, t in traced]))


def read_traces(cur: Cursor[Any], after: int, upto: int) -> dict[int, str]:
    """The traceparents stored with the events in ``(after, upto]`` (tracing on only)."""
    cur.execute(
        f"SELECT notification_id, traceparent FROM {TRACES_TABLE}"
        " WHERE notification_id > %s AND notification_id <= %s",
        (after, upto),
    )
    rows = cur.fetchall()
    return {int(_column(r, 0, "notification_id")): _column(r, 1, "traceparent") for r in rows}


def _column(row: Any, index: int, name: str) -> Any:
    return row[name] if isinstance(row, dict) else row[index]


def _append_links(
    curs: Cursor[DictRow], ids: Sequence[int], stored_events: Sequence[StoredEvent], head: bytes
) -> None:
    """Tamper evidence (infrastructure/chain.py): each new event chained onto the previous,
    in position order, from the rows exactly as inserted; under the table lock."""
    positions, hashes = [], []
    previous = bytes(head)
    for position, event in sorted(zip(ids, stored_events, strict=True), key=lambda p: p[0]):
        originator_id = event.originator_id
        uid = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        record = record_bytes(position, uid, event.originator_version, event.topic, event.state)
        previous = link(previous, record)
        positions.append(position)
        hashes.append(previous)
    curs.execute(_INSERT_LINKS, (positions, hashes), prepare=True)


def _command_row(command: CommandRecord, position: int) -> tuple[Any, ...]:
    result = dict(command.result, position=position)
    return (
        command.scope,
        command.key,
        command.fingerprint,
        command.status,
        msgspec.json.encode(result).decode(),
        position,
    )


def eventsourcing_env(
    database_url: str, *, pool_size: int = 8, master_key: str | None = None
) -> dict[str, str]:
    """The eventsourcing environment for a ``postgresql://`` URL. With ``master_key``, the
    application's cipher is the store's key ring (infrastructure/keys.py): personal fields
    are stored sealed."""
    url = urlparse(database_url)
    if url.scheme not in ("postgresql", "postgres"):
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    keys = (
        {}
        if master_key is None
        else {
            "CIPHER_TOPIC": "infrastructure.keys:KeyRing",
            "CHORUS_KEYS_DATABASE_URL": database_url,
            "CHORUS_MASTER_KEY": master_key,
        }
    )
    return {
        **keys,
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": "infrastructure.eventstore:ChorusRecorder",
        "MAPPER_TOPIC": "infrastructure.serialisation:MsgspecMapper",
        "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_LOCK_TIMEOUT": "10",
        # Tables are made once by ``migrate`` under an advisory lock: several processes
        # creating them at once fail with "tuple concurrently updated".
        "CREATE_TABLE": "false",
        # Never ``POSTGRES_ENABLE_DB_FUNCTIONS``: with it, concurrent writers commit out of
        # position order and tailing readers miss events.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        # Reuse decided aggregates between commands; a newer version in the store (another
        # process wrote) is fetched on the next get.
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }


def _create_once(recorder: PostgresAggregateRecorder) -> None:
    """eventsourcing creates its row type and lets PostgreSQL refuse it when it exists
    (there is no ``CREATE TYPE IF NOT EXISTS``): an ERROR in the server's log on every start,
    which operators learn to ignore. Asked first, the type is created only once."""
    datastore = recorder.datastore
    with datastore.transaction(commit=False) as curs:
        curs.execute(
            "SELECT to_regtype(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL AS found",
            (datastore.schema or "public", recorder.stored_event_type_name),
        )
        row = curs.fetchone()
    if row is not None and row["found"]:
        recorder.sql_create_statements = [
            s for s in recorder.sql_create_statements if "CREATE TYPE" not in s.as_string()
        ]
    recorder.create_table()


def create_event_store_tables(database_url: str) -> None:
    """Creates the events table (and the library's types) if missing."""
    env = eventsourcing_env(database_url, pool_size=1)
    datastore = PostgresDatastore(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
    )
    try:
        _create_once(ChorusRecorder(datastore, events_table_name=EVENTS_TABLE))
        # Aggregate snapshots (documents only, see application/chorus.py): a cache of what
        # the events say, never a source of truth, so not chained.
        _create_once(PostgresAggregateRecorder(datastore, events_table_name=SNAPSHOTS_TABLE))
    finally:
        datastore.close()
