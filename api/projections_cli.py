"""``chorus projections status`` and ``chorus projections skip``: the operator's view of the
read models, and the audited way past a stored event one of them cannot apply."""

from __future__ import annotations

import argparse
from typing import Any

import psycopg
from psycopg.rows import dict_row

from api.log_cli import require_database_url
from api.operator_records import append, reason_and_operator, refused_skip
from infrastructure.settings import Settings


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
    checked = reason_and_operator(args)
    if checked is None:
        return 2
    reason, operator = checked
    from projections.runner import read_tracking

    with psycopg.connect(url, row_factory=dict_row) as conn, conn.cursor() as cur:
        positions, stuck = read_tracking(cur)
        row = cur.execute("SELECT current_user AS who").fetchone()
    held = stuck.get(args.name)
    at = None if held is None else held.position
    if refused_skip("read model", args.name, list(positions), at, args.position):
        return 2
    assert held is not None
    who = f"{operator} (database role {row['who'] if row else '?'})"
    from application.read_model_skips import record_skip

    recorded = append(
        url, lambda app: record_skip(app, args.name, held.position, held.error, reason, who)
    )
    print(
        f"recorded at position {recorded}: read model {args.name} passes over the event at"
        f" {held.position}; the projection runners move it on"
    )
    return 0


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
