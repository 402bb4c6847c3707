"""Who may read the analytics schema, and reading it out: a login role that reads the
analytics views and nothing else, the statistics views taken from PUBLIC, a view streamed as
CSV or NDJSON (the ``chorus analytics-role`` and ``chorus export`` commands)."""

from __future__ import annotations

from typing import IO

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

# Every login can read, in each database, the statistics of every table in it (row counts,
# inserts, scans: how many users, tokens, credentials...), through these views of
# pg_catalog, granted to PUBLIC, and the functions behind them. PostgreSQL has no way to
# deny one role what PUBLIC holds, so they are taken from PUBLIC (in this database) and
# given to those whose job is monitoring (pg_read_all_stats, which pg_monitor holds) and to
# the role that runs this (the servers' own). Superusers are not affected.
STATISTICS_VIEWS = (
    tuple(
        f"pg_stat{io}_{scope}_{kind}"
        for io in ("", "io")
        for kind in ("tables", "indexes")
        for scope in ("all", "user", "sys")
    )
    + tuple(f"pg_stat{io}_{scope}_sequences" for io in ("io",) for scope in ("all", "user", "sys"))
    + (
        "pg_stat_xact_all_tables",
        "pg_stat_xact_user_tables",
        "pg_stat_xact_sys_tables",
        "pg_stat_user_functions",
        "pg_stat_xact_user_functions",
    )
)
# The per-relation (and per-function) statistics functions: one oid argument.
_STATISTICS_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS f FROM pg_proc p
WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname LIKE 'pg\\_stat\\_get\\_%%'
  AND p.pronargs = 1 AND p.proargtypes[0] = 'oid'::regtype
  AND p.proname NOT LIKE 'pg\\_stat\\_get\\_db\\_%%'
  AND p.proname NOT LIKE 'pg\\_stat\\_get\\_subscription%%'
ORDER BY 1
"""


def grant_reader(url: str, name: str, password: str, connection_limit: int) -> None:
    """Creates (or updates the password of) login role ``name``, which may read the analytics
    schema (views recreated later included) and hold at most ``connection_limit``
    connections. ``name`` must already be a valid role name."""
    role, secret = sql.Identifier(name), sql.Literal(password)
    limit = sql.Literal(connection_limit)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        verb = (
            "ALTER ROLE {} WITH LOGIN PASSWORD {} CONNECTION LIMIT {}"
            if exists
            else "CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {}"
        )
        conn.execute(sql.SQL(verb).format(role, secret, limit))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA analytics TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {}").format(role))
        # Views recreated after a read-model rebuild keep the grant.
        conn.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO {}"
            ).format(role)
        )


def hide_statistics(url: str) -> bool:
    """Takes the per-table statistics from PUBLIC in this database (see STATISTICS_VIEWS);
    False when this role may not (it owns neither pg_catalog's views nor its functions)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            functions = [row[0] for row in conn.execute(_STATISTICS_FUNCTIONS).fetchall()]
            views = sql.SQL(", ").join(sql.Identifier("pg_catalog", v) for v in STATISTICS_VIEWS)
            keepers = sql.SQL("pg_read_all_stats, CURRENT_USER")
            conn.execute(sql.SQL("REVOKE SELECT ON {} FROM PUBLIC").format(views))
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(views, keepers))
            # regprocedure's text is a qualified, quoted signature: safe as SQL.
            signatures = sql.SQL(", ").join(sql.SQL(f) for f in functions)
            conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(signatures))
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(signatures, keepers))
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


def export_view(url: str, name: str, format: str, out: IO[bytes]) -> None:
    """Writes analytics view ``name`` (one of ``VIEWS``) to ``out``: CSV with a header, or
    one JSON object per line (``format`` "ndjson")."""
    table = sql.SQL("analytics.{}").format(sql.Identifier(name))
    with psycopg.connect(url) as conn:
        if format == "csv":
            query = sql.SQL("COPY (SELECT * FROM {}) TO STDOUT WITH (FORMAT csv, HEADER)")
            with conn.cursor().copy(query.format(table)) as copy:
                for chunk in copy:
                    out.write(chunk)
        else:
            encoder = msgspec.json.Encoder()
            with conn.cursor(name="chorus_export", row_factory=dict_row) as cur:
                cur.itersize = 2000
                cur.execute(sql.SQL("SELECT * FROM {}").format(table))
                for row in cur:
                    out.write(encoder.encode(row) + b"\n")
    out.flush()
