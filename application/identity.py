"""Handlers of identity commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.commands import BlockUser, RegisterUser, UnblockUser
from application.decisions import Decision, handles
from domain.base import Cause, as_uuid
from domain.errors import Conflict, UsernameTaken
from domain.identity import User, user_id_for, username_read_in
from domain.rules import check_user_password, normalise_username

if TYPE_CHECKING:
    from application.chorus import Chorus


@handles(RegisterUser)
def register_user(app: Chorus, cmd: RegisterUser, cause: Cause) -> Decision:
    username = normalise_username(cmd.username)
    check_user_password(cmd.password, username, cmd.display_name)
    if app.exists(user_id_for(username)):
        raise UsernameTaken("that username is taken")
    user = User.register(username, cmd.display_name, cause)
    # Checked as the username itself is: against the users the store holds.
    looks_like = username_read_in(user.display_name)
    if looks_like not in (None, username) and app.exists(user_id_for(looks_like)):
        raise Conflict("display_name is another user's username")
    return Decision(
        [user],
        {"user_id": str(user.id)},
        status=201,
        # Hashed by the API on its hashing pool, or here (the command line, tests).
        credentials={user.id: cmd.password_hash or app.passwords.hash(cmd.password)},
    )


@handles(BlockUser)
def block_user(app: Chorus, cmd: BlockUser, cause: Cause) -> Decision:
    me = app.load(User, cause.actor_id or "", "user")
    other = app.load(User, cmd.user_id, "user")
    me.block(str(other.id), cause)
    return Decision([me])


@handles(UnblockUser)
def unblock_user(app: Chorus, cmd: UnblockUser, cause: Cause) -> Decision:
    me = app.load(User, cause.actor_id or "", "user")
    # A blocked id stays unblockable even if it no longer names anyone.
    me.unblock(str(as_uuid(cmd.user_id)), cause)
    return Decision([me])
