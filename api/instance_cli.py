"""``chorus grant`` and ``chorus revoke``: instance roles, given at the console.

An instance ``auditor`` verifies the whole log over HTTP (``GET /api/audit/verify``); an
``operator`` runs the server. No HTTP route grants them: whoever can reach this command can
already read the database. Each grant or revocation is an event, with the console user who
ran it (``granted_by``).
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from typing import Any

from api.operator_records import console_app
from application.commands import GrantInstanceRole, RevokeInstanceRole
from application.identity import user_id_of
from domain.base import Cause
from domain.errors import DomainError, NotFound
from domain.instance import INSTANCE_ROLES
from domain.rules import normalise_username
from infrastructure.settings import Settings


def change_role(args: argparse.Namespace, settings: Settings) -> int:
    command_type: Any = GrantInstanceRole if args.grant else RevokeInstanceRole
    try:
        normalise_username(args.username)
    except DomainError as exc:
        print(f"chorus {args.command}: {exc}", file=sys.stderr)
        return 2
    by = f"{getpass.getuser()}@{socket.gethostname()}"
    with console_app(settings) as app:
        try:
            found = user_id_of(app, args.username)
            if found is None:
                raise NotFound("unknown user")
            result = app.execute_now(
                command_type(user_id=str(found), role=args.role, granted_by=by), Cause(None)
            )
        except DomainError as exc:
            print(f"chorus {args.command}: {exc}", file=sys.stderr)
            return 1
    done = "granted to" if args.grant else "revoked from"
    print(f"instance role {args.role} {done} {args.username} at position {result.position}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, grant in (("grant", True), ("revoke", False)):
        p = sub.add_parser(
            name, help=f"{name} an instance role ({', '.join(sorted(INSTANCE_ROLES))})"
        )
        p.add_argument("role", choices=sorted(INSTANCE_ROLES))
        p.add_argument("username")
        p.set_defaults(run=change_role, grant=grant)
