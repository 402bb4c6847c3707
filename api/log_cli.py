"""``chorus events`` and ``chorus verify``: the auditor's commands on the event store.

Both need ``DATABASE_URL`` (the database of the Chorus being audited): starting a private
PostgreSQL for them would show an empty or stale log, or fight a running server for its
data directory.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import IO, Any
from uuid import UUID

import msgspec
import psycopg
from psycopg.rows import dict_row

from api import verify_cli
from api.envelopes import envelope
from infrastructure.chain import verify
from infrastructure.eventstore import EVENTS_TABLE, NOTIFY_CHANNEL
from infrastructure.keys import count_shredded, open_for_reading
from infrastructure.settings import Settings
from projections.log import max_position, to_log_event
from projections.log_pages import events_page
from projections.queries import run

PAGE = 1000
FOLLOW_POLL_S = 5.0  # a fallback read in case a notification is missed

_encoder = msgspec.json.Encoder()


def require_database_url(settings: Settings, command: str) -> str | None:
    if settings.database_url is None:
        print(
            f"chorus {command}: DATABASE_URL is not set; point it at the Chorus database"
            " (postgresql://user:password@host:port/dbname)",
            file=sys.stderr,
        )
    elif (master_key := settings.existing_master_key()) is not None:
        # Personal fields (issue 20) open only with the store's keys.
        open_for_reading(settings.database_url, master_key)
    return settings.database_url


class _Stop(Exception):
    """SIGTERM: stop as cleanly as on Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Stop


def _page(cur: psycopg.Cursor[Any], args: argparse.Namespace, after: int) -> list[dict[str, Any]]:
    return run(
        cur,
        events_page(
            after,
            args.page,
            until=args.until,
            stream=args.stream,
            type=args.type,
            actor=args.actor,
        ),
    )


def _write(out: IO[bytes], rows: list[dict[str, Any]]) -> None:
    for row in rows:
        out.write(_encoder.encode(envelope(to_log_event(row))))
        out.write(b"\n")
    out.flush()


def _head(conn: psycopg.Connection[Any]) -> int:
    with conn.cursor() as cur:
        return max_position(cur)


def _catch_up(
    conn: psycopg.Connection[Any], args: argparse.Namespace, after: int, out: IO[bytes]
) -> tuple[int, bool]:
    """Prints every matching event after ``after``, a page at a time. Returns the last
    position read and whether ``--until`` was reached."""
    while True:
        # The head is read first: commit order is position order, so once the head is at
        # or past ``--until``, the page read after it holds every event up to it.
        head = _head(conn) if args.until is not None else 0
        with conn.cursor() as cur:
            rows = _page(cur, args, after)
        _write(out, rows)
        if rows:
            after = rows[-1]["notification_id"]
        if len(rows) < args.page:  # a short page: the end of what is there now
            return after, args.until is not None and head >= args.until


def events(args: argparse.Namespace, settings: Settings) -> int:
    url = require_database_url(settings, "events")
    if url is None:
        return 2
    out = sys.stdout.buffer
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            if args.follow:
                # LISTEN before the first read: nothing committed after it is missed.
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            after, done = _catch_up(conn, args, args.after, out)
            if not args.follow or done:
                return 0
            while not done:
                # Wakes on the store's NOTIFY (every commit sends one), or after a while.
                for _ in conn.notifies(timeout=FOLLOW_POLL_S, stop_after=1):
                    pass
                for _ in conn.notifies(timeout=0):  # a burst needs one read, not one each
                    pass
                after, done = _catch_up(conn, args, after, out)
    except (KeyboardInterrupt, _Stop):
        return 0
    except BrokenPipeError:
        # The reader went away (e.g. ``| head``): not an error; keep the exit quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _expected_head(text: str) -> tuple[int, bytes]:
    try:
        position, digest = text.split(":", 1)
        value = (int(position), bytes.fromhex(digest))
    except ValueError:
        raise argparse.ArgumentTypeError("expected POSITION:HEXHASH") from None
    if value[0] < 1:
        raise argparse.ArgumentTypeError("positions start at 1")
    if len(value[1]) != 32:
        raise argparse.ArgumentTypeError("the hash must be 64 hex digits (SHA-256)")
    return value


def verify_chain(args: argparse.Namespace, settings: Settings) -> int:
    url = require_database_url(settings, "verify")
    if url is None:
        return 2
    with psycopg.connect(url, autocommit=True) as conn:
        bar: Any = None
        if sys.stderr.isatty() and not args.no_progress:
            from tqdm import tqdm

            with conn.cursor(row_factory=dict_row) as cur:
                head = max_position(cur)
            bar = tqdm(total=head, unit="ev", desc="verify", file=sys.stderr)
        done = 0

        def progress(position: int) -> None:
            nonlocal done
            if position - done >= 1000:
                bar.update(position - done)
                done = position

        try:
            report = verify(
                conn,
                EVENTS_TABLE,
                expect=args.expect,
                progress=progress if bar is not None else None,
            )
            if bar is not None and report.ok:
                bar.update(max(0, report.head_position - done))
        finally:
            if bar is not None:
                bar.close()
    if args.json and not (report.ok and (args.read_models or args.projection)):
        verify_cli.print_json(report, None)
        return 0 if report.ok else 1
    if not report.ok:
        print(
            f"FAILED at position {report.bad_position}: {report.problem}"
            f" ({report.count} events verified before it)"
        )
        return 1
    if not args.json:
        print(
            f"ok: {report.count} events verified; head position {report.head_position}"
            f" hash {report.head_hash.hex()}"
        )
        # The chain covers what is stored, the ciphertext: erasures leave it whole. The
        # count is a report, never a reason to fail the verification.
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                sealed, shredded = count_shredded(conn, EVENTS_TABLE)
            print(f"shredded: {shredded} events hold erased fields ({sealed} hold sealed fields)")
        except psycopg.Error as exc:
            print(f"shredded: not counted ({type(exc).__name__})")
    if not (args.read_models or args.projection):
        return 0
    status, read_models = verify_cli.check_read_models(args, url, report)
    if args.json and read_models is not None:
        verify_cli.print_json(report, read_models)
    return status


def add_commands(sub: Any) -> None:
    e = sub.add_parser(
        "events",
        help="print the event log as JSON lines (envelopes) in position order",
        description="Prints envelopes (one JSON object per line) in position order, reading"
        " the store a page at a time. Needs DATABASE_URL.",
    )
    e.add_argument("--after", type=int, default=0, metavar="N", help="positions after N")
    e.add_argument("--until", type=int, metavar="N", help="positions up to N (inclusive)")
    e.add_argument("--stream", type=UUID, metavar="ID", help="one stream (aggregate id)")
    e.add_argument("--type", metavar="T", help="one event type, e.g. MessageSent")
    e.add_argument("--actor", metavar="U", help="events caused by this user id")
    e.add_argument(
        "--follow", action="store_true", help="keep printing new events (stop: Ctrl-C / SIGTERM)"
    )
    e.add_argument("--page", type=int, default=PAGE, help=argparse.SUPPRESS)  # tests
    e.set_defaults(run=events)
    v = sub.add_parser(
        "verify",
        help="check the tamper-evident hash chain of the whole log",
        description="Recomputes the SHA-256 chain over every stored event (streaming) and"
        " prints the count and the head hash, or names the first bad position and exits 1."
        " With --read-models, then rebuilds the read models from the log into a shadow schema"
        " and compares them with the live tables (exit 1 on any difference). Needs"
        " DATABASE_URL.",
    )
    v.add_argument(
        "--expect",
        type=_expected_head,
        metavar="POSITION:HASH",
        help="a head hash published earlier: fail unless the chain still passes through it",
    )
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify_cli.add_arguments(v)
    v.set_defaults(run=verify_chain)
