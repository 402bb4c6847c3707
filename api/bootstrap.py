"""The one place that builds the concrete parts and wires them together."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api.realtime.hub import EventHub
from api.realtime.presence import PresenceKeeper
from api.realtime.signals import SignalBus
from api.session_ends import SessionEnds
from api.yjs.rooms import Rooms
from application.chorus import Chorus
from application.reaction_runner import ReactionRunner
from application.reactions import Policy
from infrastructure.chain import CHAIN_SQL
from infrastructure.eventstore import SCHEMA_SQL, create_event_store_tables, eventsourcing_env
from infrastructure.instances import INSTANCES_SQL
from infrastructure.passwords import PasswordHasher
from infrastructure.reaction_log import ReactionLog
from infrastructure.reaction_tracking import TRACKING_SQL as REACTIONS_SQL
from infrastructure.refresh_tokens import RefreshTokens
from infrastructure.settings import Settings
from infrastructure.tokens import AccessTokens
from projections.log import follow_store
from projections.runner import ProjectionRunner, all_projections, create_tables
from projections.workspaces import WorkspaceDirectory

MIGRATION_LOCK = 7_140_411  # any constant shared by every Chorus process


def migrate(database_url: str) -> None:
    """Creates every table once. Several processes starting together take turns on an
    advisory lock (concurrent DDL fails with "tuple concurrently updated")."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            create_event_store_tables(database_url)
            with conn.cursor() as cur:
                cur.execute(SCHEMA_SQL)
                cur.execute(CHAIN_SQL)
                cur.execute(RefreshTokens.TABLES_SQL)
                cur.execute(INSTANCES_SQL)
                cur.execute(REACTIONS_SQL)
                create_tables(cur, all_projections())
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


class LastWrites:
    """Each user's last write position in this process, so their next read waits for it
    (read-your-writes without the client having to ask)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._positions: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def record(self, user_id: str, position: int) -> None:
        with self._lock:
            self._positions[user_id] = max(position, self._positions.get(user_id, 0))
            self._positions.move_to_end(user_id)
            while len(self._positions) > self._capacity:
                self._positions.popitem(last=False)

    def get(self, user_id: str) -> int:
        with self._lock:
            return self._positions.get(user_id, 0)


@dataclass
class Services:
    settings: Settings
    database_url: str
    app: Chorus
    # Read models for the threads (projection runner, WebSockets, Yjs rooms, audit tools)...
    read_pool: ConnectionPool[Any]
    # ...and for the HTTP reads on the event loop. An async pool opens only inside a running
    # loop: the app's start-up opens it and its shutdown closes it (api/app.py).
    async_read_pool: AsyncConnectionPool[Any]
    runner: ProjectionRunner
    access_tokens: AccessTokens
    refresh_tokens: RefreshTokens
    passwords: PasswordHasher
    auth_pool: ConnectionPool[Any]
    hub: EventHub
    last_writes: LastWrites = field(default_factory=LastWrites)
    # Reactions (application/reaction_runner.py): running beside the projections.
    reactions: ReactionRunner | None = None
    presence: PresenceKeeper = field(init=False)
    signals: SignalBus = field(init=False)
    rooms: Rooms = field(init=False)
    session_ends: SessionEnds = field(init=False)

    def __post_init__(self) -> None:
        self.session_ends = SessionEnds(self)
        self.presence = PresenceKeeper(
            self, self.settings.presence_heartbeat_s, self.settings.presence_linger_s
        )
        self.signals = SignalBus(self.settings.redis_url, self.presence.instance_id)
        self.rooms = Rooms(
            self, flush_s=self.settings.document_flush_s, idle_s=self.settings.document_idle_s
        )

    def close(self) -> None:
        self.presence.stop()
        self.hub.stop()
        self.runner.stop()
        if self.reactions is not None:
            self.reactions.stop()
        self.app.close()
        self.read_pool.close()
        self.auth_pool.close()
        self.passwords.close()


def build_services(
    settings: Settings,
    database_url: str,
    *,
    run_projections: bool = True,
    policies: Sequence[Policy] | None = None,
) -> Services:
    """``policies``: the reactions to run (default: every one, application.reaction_runner)."""
    migrate(database_url)
    passwords = PasswordHasher(max_queued=settings.password_hash_queue)
    app = Chorus(
        eventsourcing_env(database_url, pool_size=settings.db_pool_size), passwords=passwords
    )
    if settings.group_commit:
        app.enable_group_commit()
    # The read models' pools: the sync one for worker threads and the projection runner, the
    # async one for handlers on the event loop (opened there, at start-up).
    reads: dict[str, Any] = {
        "min_size": 2,
        "max_size": settings.db_pool_size * 2,
        "kwargs": {"autocommit": True, "row_factory": dict_row},
    }
    read_pool: ConnectionPool[Any] = ConnectionPool(
        database_url,
        **reads,
        # A connection PostgreSQL dropped (a restart) is replaced, not handed to a request.
        check=ConnectionPool.check_connection,
        open=True,
        name="chorus-read",
    )
    async_read_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url,
        **reads,
        check=AsyncConnectionPool.check_connection,
        open=False,
        name="chorus-read-async",
    )
    # Refresh tokens read plain tuple rows; the read models' pool hands out dict rows.
    auth_pool: ConnectionPool[Any] = ConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True},
        check=ConnectionPool.check_connection,
        open=True,
        name="chorus-auth",
    )
    # Candidates for "do these two share a workspace" (direct messages), confirmed by the app.
    app.directory = WorkspaceDirectory(read_pool)
    runner = ProjectionRunner(read_pool, database_url)
    if run_projections and settings.projections == "external":
        runner.follow()  # ``chorus project`` runs them
    elif run_projections:
        runner.start()
    reactions = ReactionRunner(
        app,
        ReactionLog(read_pool, database_url),
        policies,
        follow=partial(follow_store, database_url),
    )
    if run_projections:
        reactions.start()
    return Services(
        settings=settings,
        database_url=database_url,
        app=app,
        read_pool=read_pool,
        async_read_pool=async_read_pool,
        runner=runner,
        access_tokens=AccessTokens(
            settings.resolved_jwt_secret(), ttl_s=settings.access_token_ttl_s
        ),
        refresh_tokens=RefreshTokens(auth_pool, ttl_s=settings.refresh_token_ttl_s),
        auth_pool=auth_pool,
        hub=EventHub(read_pool, database_url),
        passwords=passwords,
        reactions=reactions,
    )
