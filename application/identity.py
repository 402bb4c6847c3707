"""Handlers of identity commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.commands import (
    BlockUser,
    ChangePassword,
    EndSignIns,
    RegisterUser,
    StartSignIn,
    UnblockUser,
)
from application.decisions import Decision, handles
from domain.base import Cause, ChorusAggregate, as_uuid
from domain.errors import Conflict, UsernameTaken
from domain.identity import SignIn, User, user_id_for, username_read_in
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


# -- sign-ins (issue 17) ---------------------------------------------------------------------


@handles(StartSignIn)
def start_sign_in(app: Chorus, cmd: StartSignIn, cause: Cause) -> Decision:
    return Decision([SignIn.start(as_uuid(cmd.session_id), cmd.user_id, cause)])


def _ended(app: Chorus, session_ids: list[str], reason: str, cause: Cause) -> list[ChorusAggregate]:
    ended: list[ChorusAggregate] = []
    for session_id in dict.fromkeys(session_ids):
        uid = as_uuid(session_id)
        if app.exists(uid):
            session = app.load(SignIn, uid, "session")
        else:
            # A refresh-token family issued before sign-ins were recorded.
            session = SignIn.start(uid, cause.actor_id or "", cause)
        if session.end(reason, cause):
            ended.append(session)
    return ended


@handles(EndSignIns)
def end_sign_ins(app: Chorus, cmd: EndSignIns, cause: Cause) -> Decision:
    return Decision(_ended(app, cmd.session_ids, cmd.reason, cause))


@handles(ChangePassword)
def change_password(app: Chorus, cmd: ChangePassword, cause: Cause) -> Decision:
    user = app.load(User, cause.actor_id or "", "user")
    check_user_password(cmd.password, user.username, user.display_name)
    user.change_password(cmd.kept_session_id, cause)
    ended = _ended(app, cmd.ended_session_ids, "password changed", cause)
    return Decision(
        [user, *ended],
        credentials={user.id: cmd.password_hash or app.passwords.hash(cmd.password)},
    )
