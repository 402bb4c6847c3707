"""What the operators' console commands that write to the log share (``chorus projections
skip``, ``chorus reactions skip``, the account commands of api/user_cli.py): the checked
reason and operator, and an application of their own over the store."""

from __future__ import annotations

import argparse
import getpass
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from api.contexts import CONTEXTS, all_projections
from api.database import NoPasswords, shared_database
from infrastructure.settings import Settings

if TYPE_CHECKING:
    from application.chorus import Chorus

MAX_REASON = 1000


def reason_and_operator(args: argparse.Namespace) -> tuple[str, str] | None:
    """``--reason`` and ``--by`` (default: this login's user name), checked; None (with the
    problem printed) when either is unfit for the auditors' record."""
    reason = args.reason.strip()
    if not reason or len(reason) > MAX_REASON or not _printable(reason):
        print(f"--reason must be 1-{MAX_REASON} printable characters", file=sys.stderr)
        return None
    operator = args.by or getpass.getuser()
    if not operator or len(operator) > 200 or not _printable(operator):
        print("--by must be printable", file=sys.stderr)
        return None
    return reason, operator


def refused_skip(
    what: str, name: str, known: list[str], stuck_at: int | None, position: int
) -> bool:
    """Whether a skip of ``what`` NAME at ``position`` must be refused (printed why): NAME is
    unknown, not stuck, or stuck at another position. Only the event it is stuck at may be
    skipped."""
    if name not in known:
        print(f"unknown {what} {name!r}: one of {', '.join(sorted(known))}", file=sys.stderr)
        return True
    label = "read model" if what == "read model" else "reaction"
    if stuck_at is None:
        print(f"{label} {name} is not stuck: nothing to skip", file=sys.stderr)
        return True
    if position != stuck_at:
        print(
            f"{label} {name} is stuck at position {stuck_at}: only that event"
            f" can be skipped, not {position}",
            file=sys.stderr,
        )
        return True
    return False


def append(url: str, save: Callable[[Chorus], int]) -> int:
    """Runs ``save`` on an application of its own over the store at ``url``; its answer
    (the position appended at)."""
    with console_app_at(url) as app:
        return save(app)


@contextmanager
def console_app_at(url: str, master_key: str | None = None) -> Iterator[Chorus]:
    """An application over the store at ``url``, one connection, no password hashing; with
    the store's ``master_key``, it reads and writes personal fields sealed (issue 20)."""
    from application.chorus import Chorus
    from infrastructure.eventstore import eventsourcing_env
    from infrastructure.serialisation import close_key_ring

    app = Chorus(
        eventsourcing_env(url, pool_size=1, master_key=master_key),
        passwords=NoPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        yield app
    finally:
        close_key_ring(app.mapper)
        app.close()


@contextmanager
def console_app(settings: Settings) -> Iterator[Chorus]:
    """``console_app_at`` the database these settings name (a running server's private one
    too), its tables made first, with the store's master key: users' names are sealed, so
    loading a user needs it."""
    from api.bootstrap import migrate

    with shared_database(settings) as url:
        migrate(url, all_projections())
        with console_app_at(url, settings.existing_master_key()) as app:
            yield app


def _printable(text: str) -> bool:
    return all(c.isprintable() and unicodedata.category(c) != "Cf" for c in text)
