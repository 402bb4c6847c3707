"""``chorus analytics-role`` and ``chorus export``: the analysts' side of the command line."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api.log_cli import require_database_url
from infrastructure.settings import Settings
from projections.analytics import VIEWS

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Connections the analytics role may hold at once: a runaway notebook must not take the
# slots the servers and ``chorus verify`` need (max_connections is shared by every role).
DEFAULT_CONNECTION_LIMIT = 4

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


def analytics_role(args: argparse.Namespace, settings: Settings) -> int:
    """Creates (or updates the password of) a login role that reads the analytics schema
    and nothing else, with few connections, and hides table statistics from it."""
    url = require_database_url(settings, "analytics-role")
    if url is None:
        return 2
    if not _ROLE_NAME.fullmatch(args.name):
        print("the role name must be 1-63 of a-z, 0-9 and _", file=sys.stderr)
        return 2
    if len(args.password) < 12:
        print("the password must be at least 12 characters", file=sys.stderr)
        return 2
    if not 1 <= args.connection_limit <= 1000:
        print("--connection-limit must be 1 to 1000", file=sys.stderr)
        return 2
    role, password = sql.Identifier(args.name), sql.Literal(args.password)
    limit = sql.Literal(args.connection_limit)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (args.name,)).fetchone()
        verb = (
            "ALTER ROLE {} WITH LOGIN PASSWORD {} CONNECTION LIMIT {}"
            if exists
            else "CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT {}"
        )
        conn.execute(sql.SQL(verb).format(role, password, limit))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA analytics TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {}").format(role))
        # Views recreated after a read-model rebuild keep the grant.
        conn.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO {}"
            ).format(role)
        )
    hidden = _hide_statistics(url)
    print(
        f"role {args.name} can read the analytics schema ({', '.join(VIEWS)}), with at most"
        f" {args.connection_limit} connections"
    )
    if not hidden:
        print(
            "warning: the table statistics views (pg_stat_user_tables...) are still readable"
            " by every login of this database: hiding them needs a superuser (run this"
            " command again as one)",
            file=sys.stderr,
        )
    return 0


def _hide_statistics(url: str) -> bool:
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


def export(args: argparse.Namespace, settings: Settings) -> int:
    """Streams an analytics view as CSV (with a header) or NDJSON."""
    url = require_database_url(settings, "export")
    if url is None:
        return 2
    name = args.table.removeprefix("analytics.")
    if name not in VIEWS:
        print(f"unknown table {args.table!r}: one of {', '.join(VIEWS)}", file=sys.stderr)
        return 2
    table = sql.SQL("analytics.{}").format(sql.Identifier(name))
    out = sys.stdout.buffer
    with psycopg.connect(url) as conn:
        if args.format == "csv":
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
    return 0


def add_commands(sub: Any) -> None:
    r = sub.add_parser(
        "analytics-role",
        help="create a login role that can read the analytics schema and nothing else",
        description="Creates NAME (or sets its password) with SELECT on the analytics views"
        " only and a connection limit, and takes the per-table statistics views"
        " (pg_stat_user_tables...) from PUBLIC in this database (that part needs a"
        " superuser; without one it warns). Needs DATABASE_URL (a role allowed to create"
        " roles).",
    )
    r.add_argument("name")
    r.add_argument("password")
    r.add_argument(
        "--connection-limit",
        type=int,
        default=DEFAULT_CONNECTION_LIMIT,
        metavar="N",
        help=f"connections the role may hold at once (default {DEFAULT_CONNECTION_LIMIT})",
    )
    r.set_defaults(run=analytics_role)
    e = sub.add_parser(
        "export",
        help="stream an analytics table as CSV or NDJSON",
        description=f"Streams analytics.TABLE ({', '.join(VIEWS)}). Needs DATABASE_URL.",
    )
    e.add_argument("--table", required=True)
    e.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    e.set_defaults(run=export)
