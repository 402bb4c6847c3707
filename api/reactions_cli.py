"""``chorus reactions status``: where each reaction policy is, and which one is stuck."""

from __future__ import annotations

import argparse
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.log_cli import require_database_url
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


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "reactions",
        help="reaction policies: where each is, and which is stuck",
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
