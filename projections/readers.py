"""Read-model reads the application's long-lived services are given, each on the read pool
(wired in api/bootstrap: the services take plain callables, so the application does not
import the projections)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from projections.documents import StoredDocument, fetch_document
from projections.presence import sessions_on_instance


def stored_document(pool: ConnectionPool[Any], document_id: str) -> StoredDocument:
    """The document as stored (a snapshot and the log after it); blocking."""
    with pool.connection() as conn, conn.cursor() as cur:
        return fetch_document(cur, document_id)


def sessions_on(pool: ConnectionPool[Any], instance_id: str) -> list[str]:
    """The ids of the presence sessions open on an instance."""
    with pool.connection() as conn, conn.cursor() as cur:
        return [str(row["session_id"]) for row in sessions_on_instance(cur, instance_id)]
