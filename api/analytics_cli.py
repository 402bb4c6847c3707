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


def analytics_role(args: argparse.Namespace, settings: Settings) -> int:
    """Creates (or updates the password of) a login role that reads the analytics schema
    and nothing else."""
    url = require_database_url(settings, "analytics-role")
    if url is None:
        return 2
    if not _ROLE_NAME.fullmatch(args.name):
        print("the role name must be 1-63 of a-z, 0-9 and _", file=sys.stderr)
        return 2
    if len(args.password) < 12:
        print("the password must be at least 12 characters", file=sys.stderr)
        return 2
    role, password = sql.Identifier(args.name), sql.Literal(args.password)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (args.name,)).fetchone()
        verb = (
            "ALTER ROLE {} WITH LOGIN PASSWORD {}" if exists else "CREATE ROLE {} LOGIN PASSWORD {}"
        )
        conn.execute(sql.SQL(verb).format(role, password))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA analytics TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO {}").format(role))
        # Views recreated after a read-model rebuild keep the grant.
        conn.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO {}"
            ).format(role)
        )
    print(f"role {args.name} can read the analytics schema ({', '.join(VIEWS)})")
    return 0


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
        " only. Needs DATABASE_URL (a role allowed to create roles).",
    )
    r.add_argument("name")
    r.add_argument("password")
    r.set_defaults(run=analytics_role)
    e = sub.add_parser(
        "export",
        help="stream an analytics table as CSV or NDJSON",
        description=f"Streams analytics.TABLE ({', '.join(VIEWS)}). Needs DATABASE_URL.",
    )
    e.add_argument("--table", required=True)
    e.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    e.set_defaults(run=export)
