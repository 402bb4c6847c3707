"""``chorus projections status`` and ``chorus projections skip``: the operator's view of the
read models, and the audited way past a stored event one of them cannot apply."""

from __future__ import annotations

import argparse
import getpass
import sys
import unicodedata
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.contexts import CONTEXTS
from api.database import NoPasswords
from api.log_cli import require_database_url
from infrastructure.settings import Settings

MAX_REASON = 1000


def status(args: argparse.Namespace, settings: Settings) -> int:
    """One line per read model: its position and, if stuck, the event it cannot apply, since
    when and why. Exit status 1 while any is stuck (usable as a check)."""
    url = require_database_url(settings, "projections status")
    if url is None:
        return 2
    from projections.log import max_position
    from projections.runner import read_tracking

    with psycopg.connect(url, row_factory=dict_row) as conn, conn.cursor() as cur:
        positions, stuck = read_tracking(cur)
        head = max_position(cur)
    width = max((len(name) for name in positions), default=0)
    print(f"{'log':<{width}}  position {head}")
    for name in sorted(positions):
        line = f"{name:<{width}}  position {positions[name]}"
        if name in stuck:
            s = stuck[name]
            line += f"  stuck at {s.position} since {s.since.isoformat()}: {s.error}"
        else:
            line += f"  behind by {max(0, head - positions[name])}"
        print(line)
    return 1 if stuck else 0


def skip(args: argparse.Namespace, settings: Settings) -> int:
    """Records that read model NAME passes over the stored event at POSITION, the one it is
    stuck at (no other position is accepted); the runners then move it on."""
    url = require_database_url(settings, "projections skip")
    if url is None:
        return 2
    reason = args.reason.strip()
    if not reason or len(reason) > MAX_REASON or not _printable(reason):
        print(f"--reason must be 1-{MAX_REASON} printable characters", file=sys.stderr)
        return 2
    operator = args.by or getpass.getuser()
    if not operator or len(operator) > 200 or not _printable(operator):
        print("--by must be printable", file=sys.stderr)
        return 2
    from projections.runner import read_tracking

    with psycopg.connect(url, row_factory=dict_row) as conn, conn.cursor() as cur:
        positions, stuck = read_tracking(cur)
        row = cur.execute("SELECT current_user AS who").fetchone()
    if args.name not in positions:
        known = ", ".join(sorted(positions))
        print(f"unknown read model {args.name!r}: one of {known}", file=sys.stderr)
        return 2
    held = stuck.get(args.name)
    if held is None:
        print(f"read model {args.name} is not stuck: nothing to skip", file=sys.stderr)
        return 2
    if args.position != held.position:
        print(
            f"read model {args.name} is stuck at position {held.position}: only that event"
            f" can be skipped, not {args.position}",
            file=sys.stderr,
        )
        return 2
    who = f"{operator} (database role {row['who'] if row else '?'})"
    recorded = _record(url, args.name, held.position, held.error, reason, who)
    print(
        f"recorded at position {recorded}: read model {args.name} passes over the event at"
        f" {held.position}; the projection runners move it on"
    )
    return 0


def _record(url: str, name: str, position: int, error: str, reason: str, who: str) -> int:
    """Appends the skip to the log and returns its position."""
    from application.chorus import Chorus
    from application.read_model_skips import record_skip
    from infrastructure.eventstore import eventsourcing_env

    app = Chorus(
        eventsourcing_env(url, pool_size=1),
        passwords=NoPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        return record_skip(app, name, position, error, reason, who)
    finally:
        app.close()


def _printable(text: str) -> bool:
    return all(c.isprintable() and unicodedata.category(c) != "Cf" for c in text)


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "projections",
        help="read models: where each is, which is stuck, and skipping the event it is stuck on",
        description="Needs DATABASE_URL.",
    )
    cmds = p.add_subparsers(dest="projections_command", required=True)
    s = cmds.add_parser(
        "status",
        help="each read model's position, and the event a stuck one cannot apply",
        description="Prints each read model's position and, for a stuck one, the position"
        " of the event it cannot apply, since when and the error. Exits 1 while any is stuck.",
    )
    s.set_defaults(run=status)
    k = cmds.add_parser(
        "skip",
        help="let a stuck read model pass over the one event it cannot apply (recorded)",
        description="Appends a ProjectionEventSkipped event (who, why, the error) to the log:"
        " read model NAME passes over the event at POSITION, which must be the one it is"
        " stuck at. Everything else it applies as before; a rebuild skips the same event.",
    )
    k.add_argument("name", metavar="NAME")
    k.add_argument("--position", type=int, required=True, metavar="N")
    k.add_argument("--reason", required=True, help="why, for the auditors")
    k.add_argument("--by", help="who decided (default: this login's user name)")
    k.set_defaults(run=skip)
