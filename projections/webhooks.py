"""Read model of the workspaces' webhooks and their deliveries (each attempt of each), and
what the delivery worker reads: the deliveries due, and the event a delivery carries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg import Cursor
from psycopg_pool import ConnectionPool

from domain.webhooks import Due
from projections.base import EventProjection, LogEvent
from projections.log import SELECT_EVENTS, to_log_event
from projections.queries import Query, Statement, run
from projections.redaction import redacted


class WebhooksProjection(EventProjection):
    name = "webhooks"
    tables = (
        "rm_webhook_registries",
        "rm_webhooks",
        "rm_webhook_deliveries",
        "rm_webhook_attempts",
    )
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_webhook_registries (
        stream_id uuid PRIMARY KEY,
        workspace_id uuid NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rm_webhooks (
        webhook_id uuid PRIMARY KEY,
        workspace_id uuid NOT NULL,
        url text NOT NULL,
        event_types text[] NOT NULL,
        enabled boolean NOT NULL,
        disabled_reason text,
        consecutive_failures integer NOT NULL,
        registered_by uuid NOT NULL,
        secret_hint text NOT NULL,
        deleted boolean NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rm_webhooks_workspace ON rm_webhooks (workspace_id, created_at);
    CREATE TABLE IF NOT EXISTS rm_webhook_deliveries (
        delivery_id uuid PRIMARY KEY,
        webhook_id uuid NOT NULL,
        workspace_id uuid NOT NULL,
        position bigint NOT NULL,
        event_type text NOT NULL,
        state text NOT NULL,
        attempts integer NOT NULL,
        next_attempt_at timestamptz,
        last_status integer,
        last_error text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rm_webhook_deliveries_log
        ON rm_webhook_deliveries (webhook_id, position DESC);
    CREATE INDEX IF NOT EXISTS rm_webhook_deliveries_due
        ON rm_webhook_deliveries (next_attempt_at) WHERE state = 'pending';
    CREATE TABLE IF NOT EXISTS rm_webhook_attempts (
        delivery_id uuid NOT NULL,
        attempt integer NOT NULL,
        at timestamptz NOT NULL,
        status_code integer,
        error text,
        succeeded boolean NOT NULL,
        retry_at timestamptz,
        PRIMARY KEY (delivery_id, attempt)
    );
    """
    handles = frozenset(
        {
            "WebhooksOpened",
            "WebhookRegistered",
            "WebhookChanged",
            "WebhookSecretRotated",
            "WebhookDisabled",
            "WebhookEnabled",
            "WebhookDeleted",
            "WebhookAttemptFailed",
            "WebhookRecovered",
            "DeliveryQueued",
            "DeliveryAttempted",
        }
    )

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d = event.data
        hook = d.get("webhook_id")
        set_hook = "UPDATE rm_webhooks SET updated_at = %s, "
        match event.type:
            case "WebhooksOpened":
                cur.execute(
                    "INSERT INTO rm_webhook_registries (stream_id, workspace_id) VALUES (%s, %s)",
                    (event.stream, d["workspace_id"]),
                )
            case "WebhookRegistered":
                cur.execute(
                    "INSERT INTO rm_webhooks (webhook_id, workspace_id, url, event_types,"
                    " enabled, disabled_reason, consecutive_failures, registered_by,"
                    " secret_hint, deleted, created_at, updated_at)"
                    " SELECT %s, r.workspace_id, %s, %s, true, NULL, 0, %s, %s, false, %s, %s"
                    " FROM rm_webhook_registries r WHERE r.stream_id = %s",
                    (
                        hook,
                        d["url"],
                        d["event_types"],
                        d["registered_by"],
                        d["secret_hint"],
                        event.at,
                        event.at,
                        event.stream,
                    ),
                )
            case "WebhookChanged":
                cur.execute(
                    set_hook + "url = %s, event_types = %s WHERE webhook_id = %s",
                    (event.at, d["url"], d["event_types"], hook),
                )
            case "WebhookSecretRotated":
                cur.execute(
                    set_hook + "secret_hint = %s WHERE webhook_id = %s",
                    (event.at, d["secret_hint"], hook),
                )
            case "WebhookDisabled":
                cur.execute(
                    set_hook + "enabled = false, disabled_reason = %s WHERE webhook_id = %s",
                    (event.at, d["reason"], hook),
                )
            case "WebhookEnabled":
                cur.execute(
                    set_hook + "enabled = true, disabled_reason = NULL,"
                    " consecutive_failures = 0 WHERE webhook_id = %s",
                    (event.at, hook),
                )
            case "WebhookDeleted":
                cur.execute(set_hook + "deleted = true WHERE webhook_id = %s", (event.at, hook))
            case "WebhookAttemptFailed":
                cur.execute(
                    set_hook + "consecutive_failures = %s WHERE webhook_id = %s",
                    (event.at, d["consecutive"], hook),
                )
            case "WebhookRecovered":
                cur.execute(
                    set_hook + "consecutive_failures = 0 WHERE webhook_id = %s", (event.at, hook)
                )
            case "DeliveryQueued":
                cur.execute(
                    "INSERT INTO rm_webhook_deliveries (delivery_id, webhook_id, workspace_id,"
                    " position, event_type, state, attempts, next_attempt_at, last_status,"
                    " last_error, created_at, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s, 'pending', 0, %s, NULL, NULL, %s, %s)",
                    (
                        event.stream,
                        d["webhook_id"],
                        d["workspace_id"],
                        d["position"],
                        d["event_type"],
                        event.at,
                        event.at,
                        event.at,
                    ),
                )
            case "DeliveryAttempted":
                state = (
                    "delivered"
                    if d["succeeded"]
                    else ("pending" if d["retry_at"] is not None else "failed")
                )
                cur.execute(
                    "UPDATE rm_webhook_deliveries SET state = %s, attempts = %s,"
                    " next_attempt_at = %s, last_status = %s, last_error = %s, updated_at = %s"
                    " WHERE delivery_id = %s",
                    (
                        state,
                        d["attempt"],
                        d["retry_at"] if state == "pending" else None,
                        d["status_code"],
                        d["error"],
                        event.at,
                        event.stream,
                    ),
                )
                cur.execute(
                    "INSERT INTO rm_webhook_attempts (delivery_id, attempt, at, status_code,"
                    " error, succeeded, retry_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        event.stream,
                        d["attempt"],
                        event.at,
                        d["status_code"],
                        d["error"],
                        d["succeeded"],
                        d["retry_at"],
                    ),
                )


# -- queries ---------------------------------------------------------------------------------

_WEBHOOK_COLUMNS = (
    "webhook_id::text AS id, url, event_types, enabled, disabled_reason,"
    " consecutive_failures, registered_by::text, secret_hint, created_at, updated_at"
)


def list_webhooks(workspace_id: str) -> Query[list[dict[str, Any]]]:
    """A workspace's webhooks (at most a few dozen: no paging), oldest first."""
    rows = yield Statement(
        f"SELECT {_WEBHOOK_COLUMNS} FROM rm_webhooks"
        " WHERE workspace_id = %s AND NOT deleted ORDER BY created_at, webhook_id",
        (workspace_id,),
    )
    return rows


def get_webhook(workspace_id: str, webhook_id: str) -> Query[dict[str, Any] | None]:
    """One webhook of the workspace; another workspace's is not found."""
    rows = yield Statement(
        f"SELECT {_WEBHOOK_COLUMNS} FROM rm_webhooks"
        " WHERE workspace_id = %s AND webhook_id = %s AND NOT deleted",
        (workspace_id, webhook_id),
    )
    return rows[0] if rows else None


def list_deliveries(
    webhook_id: str, *, limit: int, before: int | None
) -> Query[list[dict[str, Any]]]:
    """A webhook's deliveries, newest event first, each with its attempts."""
    rows = yield Statement(
        "SELECT d.delivery_id::text AS id, d.position, d.event_type, d.state, d.attempts,"
        " d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.updated_at,"
        " coalesce((SELECT json_agg(json_build_object('attempt', a.attempt, 'at', a.at,"
        "   'status_code', a.status_code, 'error', a.error, 'succeeded', a.succeeded,"
        "   'retry_at', a.retry_at) ORDER BY a.attempt)"
        "  FROM rm_webhook_attempts a WHERE a.delivery_id = d.delivery_id), '[]') AS tries"
        " FROM rm_webhook_deliveries d"
        " WHERE d.webhook_id = %s AND (%s::bigint IS NULL OR d.position < %s)"
        " ORDER BY d.position DESC LIMIT %s",
        (webhook_id, before, before, limit),
    )
    return rows


def due_deliveries(now: datetime, limit: int) -> Query[list[Due]]:
    """Pending deliveries of enabled webhooks whose next attempt is due, earliest first."""
    rows = yield Statement(
        "SELECT d.delivery_id::text, d.webhook_id::text, d.position, d.attempts + 1 AS attempt,"
        " w.url, w.registered_by::text"
        " FROM rm_webhook_deliveries d JOIN rm_webhooks w ON w.webhook_id = d.webhook_id"
        " WHERE d.state = 'pending' AND d.next_attempt_at <= %s"
        " AND w.enabled AND NOT w.deleted"
        " ORDER BY d.next_attempt_at, d.position LIMIT %s",
        (now, limit),
    )
    return [Due(**r) for r in rows]


def delivered_event(position: int, reader: str) -> Query[LogEvent | None]:
    """The event a delivery carries, as its webhook's registering admin may read it now:
    content deleted or replaced since is withheld (projections/redaction.py)."""
    rows = yield Statement(f"{SELECT_EVENTS} WHERE e.notification_id = %s", (position,))
    if not rows:
        return None
    events = yield from redacted(reader, [to_log_event(rows[0])])
    return events[0]


class DeliveryReads:
    """What the delivery worker reads, on the read pool (application/webhook_delivery.py
    takes it through its ``Queue`` port)."""

    def __init__(self, pool: ConnectionPool[Any], encode: Callable[[LogEvent], bytes]) -> None:
        self.pool = pool
        self.encode = encode

    def due(self, now: datetime, limit: int) -> list[Due]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            return run(cur, due_deliveries(now, limit))

    def payload(self, due: Due) -> bytes | None:
        with self.pool.connection() as conn, conn.cursor() as cur:
            event = run(cur, delivered_event(due.position, due.registered_by))
        return None if event is None else self.encode(event)
