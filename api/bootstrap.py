"""The one place that builds the concrete parts and wires them together."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api.catalogue import Catalogue
from api.envelopes import envelope
from api.realtime.hub import EventHub
from api.realtime.signals import SignalBus
from api.session_ends import SessionEnds
from application.chorus import Chorus
from application.live_documents.budget import EditBudget
from application.live_documents.rooms import Rooms
from application.presence_upkeep import PresenceKeeper
from application.reaction_runner import ReactionRunner
from application.reactions import Policy
from application.retention import RetentionWorker
from application.webhook_delivery import DeliveryWorker, Schedule
from infrastructure import migrations
from infrastructure.eventstore import eventsourcing_env
from infrastructure.instances import Instances
from infrastructure.passwords import PasswordHasher
from infrastructure.reaction_log import ReactionLog
from infrastructure.refresh_tokens import RefreshTokens
from infrastructure.serialisation import close_key_ring
from infrastructure.settings import Settings
from infrastructure.ssrf import OutboundPolicy
from infrastructure.tokens import AccessTokens
from infrastructure.webhook_delivery import SenderLock, WebhookSender
from projections.base import Projection
from projections.log import follow_store
from projections.readers import sessions_on, stored_document
from projections.retention import RetentionReadsSql
from projections.runner import ProjectionRunner, create_tables
from projections.webhooks import DeliveryReads
from projections.workspaces import WorkspaceDirectory


def migrate(database_url: str, read_models: Sequence[Projection]) -> None:
    """Creates every table once: the store's, then the read models'."""
    migrations.migrate(database_url, lambda cur: create_tables(cur, read_models))


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
    # The contexts, and what is derived from them (api/contexts.py).
    catalogue: Catalogue
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
    presence: PresenceKeeper
    signals: SignalBus
    rooms: Rooms
    session_ends: SessionEnds
    last_writes: LastWrites = field(default_factory=LastWrites)
    # Reactions (application/reaction_runner.py): running beside the projections.
    reactions: ReactionRunner | None = None
    # Outgoing webhooks' delivery worker (application/webhook_delivery.py), beside the reactions.
    webhooks: DeliveryWorker | None = None
    # Per-workspace retention's worker (application/retention.py).
    retention: RetentionWorker | None = None

    def close(self) -> None:
        self.presence.stop()
        self.hub.stop()
        self.runner.stop()
        if self.reactions is not None:
            self.reactions.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        if self.retention is not None:
            self.retention.stop()
        self.app.close()
        close_key_ring(self.app.mapper)
        self.read_pool.close()
        self.auth_pool.close()
        self.passwords.close()


def build_services(
    settings: Settings,
    database_url: str,
    *,
    catalogue: Catalogue,
    run_projections: bool = True,
    policies: Sequence[Policy] | None = None,
) -> Services:
    """``policies``: the reactions to run (default: every context's)."""
    migrate(database_url, catalogue.read_models())
    passwords = PasswordHasher(max_queued=settings.password_hash_queue)
    app = Chorus(
        eventsourcing_env(
            database_url,
            pool_size=settings.db_pool_size,
            master_key=settings.resolved_master_key(),
        ),
        passwords=passwords,
        handlers=catalogue.handlers,
        snapshotting=catalogue.snapshotting,
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
    runner = ProjectionRunner(read_pool, database_url, catalogue.read_models())
    if run_projections and settings.projections == "external":
        runner.follow()  # ``chorus project`` runs them
    elif run_projections:
        runner.start()
    access_tokens = AccessTokens(settings.resolved_jwt_secret(), ttl_s=settings.access_token_ttl_s)
    refresh_tokens = RefreshTokens(auth_pool, ttl_s=settings.refresh_token_ttl_s)
    hub = EventHub(read_pool, database_url, catalogue.kinds)
    instance_id = uuid.uuid4().hex
    presence = PresenceKeeper(
        app,
        Instances(auth_pool, instance_id),
        partial(sessions_on, read_pool),
        settings.presence_heartbeat_s,
        settings.presence_linger_s,
    )
    signals = SignalBus(settings.redis_url, instance_id)
    rooms = Rooms(
        app,
        hub,
        signals,
        partial(stored_document, read_pool),
        EditBudget(
            settings.document_bytes_per_user,
            settings.document_updates_per_user,
            settings.document_budget_window_s,
        ),
        catalogue.kinds.access_events,
        flush_s=settings.document_flush_s,
        idle_s=settings.document_idle_s,
    )
    reactions = ReactionRunner(
        app,
        ReactionLog(read_pool, database_url),
        catalogue.policies if policies is None else policies,
        follow=partial(follow_store, database_url),
    )
    webhooks = build_webhooks(settings, database_url, app, read_pool, runner)
    retention = RetentionWorker(
        RetentionReadsSql(read_pool),
        record=lambda command, cause: app.execute_now(command, cause).position,
        wait_for=lambda position: runner.wait_for(position, settings.read_wait_timeout_s),
        poll_s=settings.retention_poll_s,
    )
    if run_projections:
        reactions.start()
        webhooks.start()
        retention.start()
    return Services(
        settings=settings,
        database_url=database_url,
        catalogue=catalogue,
        app=app,
        read_pool=read_pool,
        async_read_pool=async_read_pool,
        runner=runner,
        access_tokens=access_tokens,
        refresh_tokens=refresh_tokens,
        auth_pool=auth_pool,
        hub=hub,
        passwords=passwords,
        presence=presence,
        signals=signals,
        rooms=rooms,
        session_ends=SessionEnds(hub, access_tokens, refresh_tokens),
        reactions=reactions,
        webhooks=webhooks,
        retention=retention,
    )


def build_webhooks(
    settings: Settings,
    database_url: str,
    app: Chorus,
    read_pool: ConnectionPool[Any],
    runner: ProjectionRunner,
) -> DeliveryWorker:
    """The webhook delivery worker: deliveries from the read model, each event as the
    public envelope, sent where the operator's policy allows, recorded through ``app``."""
    return DeliveryWorker(
        DeliveryReads(read_pool, lambda event: msgspec.json.encode(envelope(event))),
        WebhookSender(
            OutboundPolicy(settings.webhook_allow_private, settings.webhook_allow_http),
            timeout_s=settings.webhook_timeout_s,
            max_response_bytes=settings.webhook_max_response_bytes,
            ca_file=settings.webhook_ca_file,
        ),
        SenderLock(database_url),
        record=lambda command, cause: app.execute_now(command, cause).position,
        wait_for=lambda position: runner.wait_for(position, settings.read_wait_timeout_s),
        secret=lambda webhook_id: app.store.find_password_hash(uuid.UUID(webhook_id)),
        schedule=Schedule(
            settings.webhook_attempts, settings.webhook_retry_base_s, settings.webhook_retry_max_s
        ),
        disable_after=settings.webhook_disable_after,
        max_payload_bytes=settings.webhook_max_payload_bytes,
    )
