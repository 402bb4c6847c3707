"""``chorus analytics-role`` and ``chorus export``: the analysts' side of the command line."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from api.log_cli import require_database_url
from infrastructure.settings import Settings
from projections.analytics import VIEWS
from projections.analytics_access import export_view, grant_reader, hide_statistics

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Connections the analytics role may hold at once: a runaway notebook must not take the
# slots the servers and ``chorus verify`` need (max_connections is shared by every role).
DEFAULT_CONNECTION_LIMIT = 4


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
    grant_reader(url, args.name, args.password, args.connection_limit)
    hidden = hide_statistics(url)
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


def export(args: argparse.Namespace, settings: Settings) -> int:
    """Streams an analytics view as CSV (with a header) or NDJSON."""
    url = require_database_url(settings, "export")
    if url is None:
        return 2
    name = args.table.removeprefix("analytics.")
    if name not in VIEWS:
        print(f"unknown table {args.table!r}: one of {', '.join(VIEWS)}", file=sys.stderr)
        return 2
    export_view(url, name, args.format, sys.stdout.buffer)
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
