"""Creating every table, once, however many processes start together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from infrastructure.chain import CHAIN_SQL
from infrastructure.eventstore import SCHEMA_SQL, create_event_store_tables
from infrastructure.instances import INSTANCES_SQL
from infrastructure.keys import SCHEMA_SQL as KEYS_SQL
from infrastructure.reaction_tracking import TRACKING_SQL as REACTIONS_SQL
from infrastructure.refresh_tokens import RefreshTokens

MIGRATION_LOCK = 7_140_411  # any constant shared by every Chorus process


def migrate(database_url: str, create_read_models: Callable[[psycopg.Cursor[Any]], None]) -> None:
    """Creates the event store's tables, then the read models' (``create_read_models``, given
    by the bootstrap: the projections sit above this layer). Several processes starting
    together take turns on an advisory lock (concurrent DDL fails with "tuple concurrently
    updated")."""
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
                cur.execute(KEYS_SQL)
                create_read_models(cur)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
