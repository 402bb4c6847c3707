"""Erasure by crypto-shredding (issue 20): the command that records a user's erasure.

The erasure itself is destroying data keys (infrastructure/keys.py). The route and the CLI do
it at once after the command commits; the erasures read model (projections/erasures.py) does
it again from the ``UserErased`` event, in its own transaction, so a crash between the two
still erases, and a store rebuilt from its log erases again.
"""

from __future__ import annotations

from application.commands import EraseUser
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause, as_uuid
from domain.identity import User

HANDLERS = HandlerTable()

# What an erasure of a user shreds: their profile (username, display name) and the text of
# every message they wrote.
USER_KINDS = ("profile", "messages")

# A stored password hash nothing verifies against (not an argon2 hash): an erased user
# cannot sign in again, and the hash of the old password is gone with the row's value.
NO_PASSWORD = "!erased"


@HANDLERS.on(EraseUser)
def erase_user(app: DecisionContext, cmd: EraseUser, cause: Cause) -> Decision:
    user = app.load(User, as_uuid(cmd.user_id), "user")
    user.erase(list(USER_KINDS), cause)
    return Decision([user], credentials={user.id: NO_PASSWORD})
