"""``chorus issue-password-reset`` and ``chorus reactivate-user``: an operator's help with
accounts (issue 20), at the console.

Whoever can run these can already read the database; each is an event naming the console user
who ran it. A reset token is ``<user id>.<secret>``: 256 random bits, of which the log keeps
only the SHA-256, with its expiry. Chorus sends no e-mail: the token goes to a
``ResetDelivery``, by default this console (the operator passes it on however they reach the
user); ``--deliver-with COMMAND`` hands it to a command of the operator's instead (a mailer,
a chat bot), the hook point for e-mail delivery.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import shlex
import socket
import subprocess
import sys
from typing import Protocol

from api.operator_records import console_app
from application.chorus import Chorus
from application.commands import IssuePasswordReset, ReactivateUser
from application.identity import user_id_of
from domain.base import Cause
from domain.errors import DomainError, NotFound
from domain.identity import MAX_RESET_TTL_S, MIN_RESET_TTL_S, reset_token_hash
from domain.rules import normalise_username
from infrastructure.settings import Settings

# What a delivery command may take to hand the token on.
DELIVERY_TIMEOUT_S = 60


class ResetDelivery(Protocol):
    """Where a freshly issued reset token goes. Called once the token's hash is in the log;
    raising makes the command fail (exit 1), the token unused, to expire."""

    def deliver(self, username: str, user_id: str, token: str, expires_in_s: int) -> None: ...


class ToConsole:
    """The default: the token alone on stdout (for a script to capture), the rest on stderr."""

    def deliver(self, username: str, user_id: str, token: str, expires_in_s: int) -> None:
        print(
            f"password reset token for {username}, valid {expires_in_s} s, single use:",
            file=sys.stderr,
        )
        print(token)


class ToCommand:
    """Runs the operator's command with the token on its stdin (never in its arguments,
    which other users of the machine can list) and the user in ``CHORUS_RESET_USERNAME``,
    ``CHORUS_RESET_USER_ID`` and ``CHORUS_RESET_EXPIRES_IN_S``."""

    def __init__(self, command: str) -> None:
        self.argv = shlex.split(command)

    def deliver(self, username: str, user_id: str, token: str, expires_in_s: int) -> None:
        env = {
            **os.environ,
            "CHORUS_RESET_USERNAME": username,
            "CHORUS_RESET_USER_ID": user_id,
            "CHORUS_RESET_EXPIRES_IN_S": str(expires_in_s),
        }
        done = subprocess.run(
            self.argv,
            input=token + "\n",
            env=env,
            text=True,
            timeout=DELIVERY_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the delivery command exited with {done.returncode}")


def new_reset_token(user_id: str) -> tuple[str, str]:
    """A token and the hash the log keeps of it."""
    secret = secrets.token_urlsafe(32)
    return f"{user_id}.{secret}", reset_token_hash(secret)


def _operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _user_id(app: Chorus, username: str) -> str:
    found = user_id_of(app, username)
    if found is None:
        raise NotFound("unknown user")
    return str(found)


def issue_password_reset(args: argparse.Namespace, settings: Settings) -> int:
    delivery: ResetDelivery = ToCommand(args.deliver_with) if args.deliver_with else ToConsole()
    try:
        normalise_username(args.username)
    except DomainError as exc:
        print(f"chorus {args.command}: {exc}", file=sys.stderr)
        return 2
    with console_app(settings) as app:
        try:
            user_id = _user_id(app, args.username)
            token, token_hash = new_reset_token(user_id)
            command = IssuePasswordReset(
                user_id=user_id,
                token_hash=token_hash,
                issued_by=_operator(),
                expires_in_s=args.expires_in,
            )
            app.execute_now(command, Cause(None))
        except DomainError as exc:
            print(f"chorus {args.command}: {exc}", file=sys.stderr)
            return 1
    try:
        delivery.deliver(args.username, user_id, token, args.expires_in)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(
            f"chorus {args.command}: not delivered ({exc}); the token expires unused",
            file=sys.stderr,
        )
        return 1
    return 0


def reactivate_user(args: argparse.Namespace, settings: Settings) -> int:
    try:
        normalise_username(args.username)
    except DomainError as exc:
        print(f"chorus {args.command}: {exc}", file=sys.stderr)
        return 2
    with console_app(settings) as app:
        try:
            user_id = _user_id(app, args.username)
            result = app.execute_now(
                ReactivateUser(user_id=user_id, reactivated_by=_operator()), Cause(None)
            )
        except DomainError as exc:
            print(f"chorus {args.command}: {exc}", file=sys.stderr)
            return 1
    print(f"{args.username} reactivated at position {result.position}")
    return 0


def _ttl(value: str) -> int:
    seconds = int(value)
    if not MIN_RESET_TTL_S <= seconds <= MAX_RESET_TTL_S:
        raise argparse.ArgumentTypeError(f"between {MIN_RESET_TTL_S} and {MAX_RESET_TTL_S} seconds")
    return seconds


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "issue-password-reset",
        help="issue a one-time password reset token for a user (printed, or --deliver-with)",
    )
    p.add_argument("username")
    p.add_argument("--expires-in", type=_ttl, default=24 * 3600, metavar="SECONDS")
    p.add_argument(
        "--deliver-with",
        metavar="COMMAND",
        help="run COMMAND with the token on its stdin instead of printing it",
    )
    p.set_defaults(run=issue_password_reset)
    r = sub.add_parser("reactivate-user", help="reactivate a deactivated account")
    r.add_argument("username")
    r.set_defaults(run=reactivate_user)
