"""``chorus replay``: rebuild read models from position 0 while the API keeps serving."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tqdm import tqdm

from api.contexts import all_projections
from api.log_cli import require_database_url
from infrastructure.settings import Settings
from projections.replay import by_names, head, rebuild


def replay(args: argparse.Namespace, settings: Settings) -> int:
    url = require_database_url(settings, "replay")
    if url is None:
        return 2
    try:
        chosen = by_names(all_projections(), None if args.all else args.projection)
    except ValueError as exc:
        print(f"chorus replay: {exc}", file=sys.stderr)
        return 2
    total = head(url) if args.until is None else min(args.until, head(url))
    started = time.monotonic()
    with tqdm(total=total, unit=" events", disable=not sys.stderr.isatty(), desc="replay") as bar:
        reached = rebuild(url, chosen, until=args.until, progress=bar.update)
    elapsed = max(time.monotonic() - started, 1e-9)
    names = ", ".join(p.name for p in chosen)
    print(
        f"rebuilt {names} to position {reached} and swapped them in"
        f" ({total} events in {elapsed:.1f} s, {total / elapsed:,.0f} events/s)"
    )
    return 0


def add_commands(sub: Any) -> None:
    r = sub.add_parser(
        "replay",
        help="rebuild read models from position 0 and swap them in, while serving",
        description="Rebuilds read models into fresh tables from the event log while the"
        " live ones keep serving, then swaps them in atomically. Needs DATABASE_URL.",
    )
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every read model")
    which.add_argument(
        "--projection", action="append", metavar="NAME", help="one read model (repeatable)"
    )
    r.add_argument("--until", type=int, metavar="N", help="rebuild up to position N only")
    r.set_defaults(run=replay)
