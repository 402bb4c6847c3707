"""``chorus erase-user`` and ``chorus rotate-master-key`` (issue 20), at the console.

``erase-user`` records the erasure (an operator's: no actor) and destroys the user's keys at
once; a running server's erasures read model destroys them again from the event, and its
read models forget the user's name and texts. ``rotate-master-key`` re-wraps every data key
under a new master key in one transaction, then keeps the new key where the old one was
(the data directory's file), or prints it for the operator to set as ``CHORUS_MASTER_KEY``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from api.contexts import CONTEXTS, all_projections
from api.database import NoPasswords, shared_database
from application.chorus import Chorus
from application.commands import EraseUser
from application.identity import user_id_of
from domain.base import Cause
from domain.errors import DomainError, NotFound
from infrastructure.eventstore import eventsourcing_env
from infrastructure.keys import KeyRefused, KeyRing, new_master_key, parse_master_key
from infrastructure.serialisation import close_key_ring
from infrastructure.settings import Settings


def erase_user(args: argparse.Namespace, settings: Settings) -> int:
    from api.bootstrap import migrate
    from api.erasure import erase_keys_of

    master_key = settings.existing_master_key()
    if master_key is None:
        print("chorus erase-user: no master key (CHORUS_MASTER_KEY)", file=sys.stderr)
        return 2
    with shared_database(settings) as url:
        migrate(url, all_projections())
        app = Chorus(
            eventsourcing_env(url, pool_size=1, master_key=master_key),
            passwords=NoPasswords(),
            handlers=CONTEXTS.handlers,
            snapshotting=CONTEXTS.snapshotting,
        )
        try:
            found = user_id_of(app, args.username)
            if found is None:
                raise NotFound("unknown user")
            result = app.execute_now(EraseUser(user_id=str(found)), Cause(None))
            destroyed = erase_keys_of(app.mapper, str(found))
        except DomainError as exc:
            print(f"chorus erase-user: {exc}", file=sys.stderr)
            return 1
        finally:
            close_key_ring(app.mapper)
            app.close()
    print(f"erased {args.username} at position {result.position}: {destroyed} keys destroyed")
    return 0


def rotate_master_key(args: argparse.Namespace, settings: Settings) -> int:
    old = settings.existing_master_key()
    if old is None:
        print("chorus rotate-master-key: no master key to rotate", file=sys.stderr)
        return 2
    new = sys.stdin.readline().strip() if args.new_key_from_stdin else new_master_key()
    try:
        parse_master_key(new)
    except KeyRefused as exc:
        print(f"chorus rotate-master-key: {exc}", file=sys.stderr)
        return 2
    with shared_database(settings) as url:
        ring = KeyRing.connect(url, old)
        try:
            count = ring.rotate(new)
        except KeyRefused as exc:
            print(f"chorus rotate-master-key: {exc}", file=sys.stderr)
            return 1
        finally:
            ring.close()
    if settings.master_key is None:
        path = settings.data_dir / "master-key"
        path.write_text(new)
        print(f"re-wrapped {count} data keys; the new master key is in {path}")
    else:
        print(f"re-wrapped {count} data keys; set CHORUS_MASTER_KEY to the new key:")
        print(new)
    return 0


def add_commands(sub: Any) -> None:
    e = sub.add_parser("erase-user", help="erase a user's personal data (crypto-shredding)")
    e.add_argument("username")
    e.set_defaults(run=erase_user)
    r = sub.add_parser("rotate-master-key", help="re-wrap every data key under a new master key")
    r.add_argument(
        "--new-key-from-stdin",
        action="store_true",
        help="read the new key (32 bytes, base64) from stdin instead of generating one",
    )
    r.set_defaults(run=rotate_master_key)
