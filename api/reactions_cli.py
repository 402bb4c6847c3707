"""``chorus reactions status`` and ``chorus reactions skip``: where each reaction policy is,
which one is stuck, and the audited way past the event a stuck one cannot handle."""

from __future__ import annotations

import argparse
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.log_cli import require_database_url
from api.operator_records import append, reason_and_operator, refused_skip
from infrastructure.reaction_log import ReactionLog
from infrastructure.settings import Settings


def status(args: argparse.Namespace, settings: Settings) -> int:
    """One line per policy: its position and, if stuck, the event it cannot handle, since
    when and why. Exit status 1 while any is stuck (usable as a check)."""
    url = require_database_url(settings, "reactions status")
    if url is None:
        return 2
    with ConnectionPool(
        url, min_size=1, max_size=1, kwargs={"row_factory": dict_row}, open=True
    ) as pool:
        store = ReactionLog(pool, url)
        states, head = store.states(), store.log_end()
    width = max((len(name) for name in states), default=3)
    print(f"{'log':<{width}}  position {head}")
    for name in sorted(states):
        s = states[name]
        line = f"{name:<{width}}  position {s.position}"
        if s.done:
            line += f" ({s.done} of its commands done)"
        if s.stuck_position is not None and s.since is not None:
            line += f"  stuck at {s.stuck_position} since {s.since.isoformat()}: {s.error}"
        else:
            line += f"  behind by {max(0, head - s.position)}"
        print(line)
    return 1 if any(s.stuck_position is not None for s in states.values()) else 0


def skip(args: argparse.Namespace, settings: Settings) -> int:
    """Records that policy NAME passes over the stored event at POSITION, the one it is stuck
    at (no other position is accepted); its runner then moves it on."""
    url = require_database_url(settings, "reactions skip")
    if url is None:
        return 2
    checked = reason_and_operator(args)
    if checked is None:
        return 2
    reason, operator = checked
    with ConnectionPool(
        url, min_size=1, max_size=1, kwargs={"row_factory": dict_row}, open=True
    ) as pool:
        states = ReactionLog(pool, url).states()
        with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT current_user AS who").fetchone()
    held = states.get(args.name)
    at = None if held is None else held.stuck_position
    if refused_skip("reaction policy", args.name, list(states), at, args.position):
        return 2
    assert held is not None and held.stuck_position is not None
    from application.read_model_skips import record_reaction_skip

    who = f"{operator} (database role {row['who'] if row else '?'})"
    error, position = held.error or "", held.stuck_position
    recorded = append(
        url, lambda app: record_reaction_skip(app, args.name, position, error, reason, who)
    )
    print(
        f"recorded at position {recorded}: reaction {args.name} passes over the event at"
        f" {position}; its runner moves it on"
    )
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "reactions",
        help="reaction policies: where each is, which is stuck, and skipping the event it is"
        " stuck on",
        description="Needs DATABASE_URL.",
    )
    cmds = p.add_subparsers(dest="reactions_command", required=True)
    s = cmds.add_parser(
        "status",
        help="each policy's position, and the event a stuck one cannot handle",
        description="Prints each reaction policy's position and, for a stuck one, the"
        " position of the event it cannot handle, since when and the error. Exits 1 while"
        " any is stuck.",
    )
    s.set_defaults(run=status)
    k = cmds.add_parser(
        "skip",
        help="let a stuck policy pass over the one event it cannot handle (recorded)",
        description="Appends a ReactionEventSkipped event (who, why, the error) to the log:"
        " policy NAME passes over the event at POSITION, which must be the one it is stuck"
        " at; the commands that event would cause are not run. Everything else it handles as"
        " before.",
    )
    k.add_argument("name", metavar="NAME")
    k.add_argument("--position", type=int, required=True, metavar="N")
    k.add_argument("--reason", required=True, help="why, for the auditors")
    k.add_argument("--by", help="who decided (default: this login's user name)")
    k.set_defaults(run=skip)
