"""Handlers of identity commands."""

from __future__ import annotations

from uuid import UUID, uuid4

from application.commands import (
    BlockUser,
    ChangePassword,
    EndSignIns,
    RegisterUser,
    StartSignIn,
    UnblockUser,
)
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause, ChorusAggregate, as_uuid
from domain.errors import Conflict, UsernameTaken
from domain.identity import SignIn, User, legacy_user_id, username_read_in
from domain.indexes import UsernameClaim, username_claim_id
from domain.rules import check_user_password, normalise_username

# This context's command handlers, joined with the others' in application/handlers.py.
HANDLERS = HandlerTable()


def user_id_of(app: DecisionContext, username: str) -> UUID | None:
    """The id of the user who holds ``username`` (any case), from the event store: its
    claim's holder, or, for a user registered before claims existed, the id derived from
    the name (such a user has no claim). InvalidValue for what can be no username."""
    return user_ids_of(app, [username]).get(normalise_username(username))


def user_ids_of(app: DecisionContext, usernames: list[str]) -> dict[str, UUID]:
    """``user_id_of`` for several names at once, by normalised name (those nobody holds
    are left out): one query says which claims and legacy users exist, so names of nobody
    (say, a message's 20 mentions) cost no more than one."""
    names = {normalise_username(u) for u in usernames}
    claims = {name: username_claim_id(name) for name in names}
    legacy = {name: legacy_user_id(name) for name in names}
    present = app.existing([*claims.values(), *legacy.values()])
    found: dict[str, UUID] = {}
    for name in names:
        if claims[name] in present:
            holder = app.load(UsernameClaim, claims[name], "username").holder
            if holder is not None:
                found[name] = as_uuid(holder)
        elif legacy[name] in present:
            found[name] = legacy[name]
    return found


@HANDLERS.on(RegisterUser)
def register_user(app: DecisionContext, cmd: RegisterUser, cause: Cause) -> Decision:
    username = normalise_username(cmd.username)
    check_user_password(cmd.password, username, cmd.display_name)
    if user_id_of(app, username) is not None:
        raise UsernameTaken("that username is taken")
    # A random id tells nothing about the name; the claim, saved in the same transaction,
    # is what a second registration of the name (another process's too) conflicts on.
    user = User.register(uuid4(), username, cmd.display_name, cause)
    claim = UsernameClaim.claim(username, user.id, Cause(str(user.id), cause.command_id))
    # Checked as the username itself is: against the users the store holds.
    looks_like = username_read_in(user.display_name)
    if looks_like not in (None, username) and user_id_of(app, looks_like) is not None:
        raise Conflict("display_name is another user's username")
    return Decision(
        [user, claim],
        {"user_id": str(user.id)},
        status=201,
        # Hashed by the API on its hashing pool, or here (the command line, tests).
        credentials={user.id: cmd.password_hash or app.passwords.hash(cmd.password)},
    )


@HANDLERS.on(BlockUser)
def block_user(app: DecisionContext, cmd: BlockUser, cause: Cause) -> Decision:
    me = app.load(User, cause.actor, "user")
    other = app.load(User, cmd.user_id, "user")
    me.block(str(other.id), cause)
    return Decision([me])


@HANDLERS.on(UnblockUser)
def unblock_user(app: DecisionContext, cmd: UnblockUser, cause: Cause) -> Decision:
    me = app.load(User, cause.actor, "user")
    # A blocked id stays unblockable even if it no longer names anyone.
    me.unblock(str(as_uuid(cmd.user_id)), cause)
    return Decision([me])


# -- sign-ins (issue 17) ---------------------------------------------------------------------


@HANDLERS.on(StartSignIn)
def start_sign_in(app: DecisionContext, cmd: StartSignIn, cause: Cause) -> Decision:
    return Decision([SignIn.start(as_uuid(cmd.session_id), cmd.user_id, cause)])


def _ended(
    app: DecisionContext, session_ids: list[str], reason: str, cause: Cause
) -> list[ChorusAggregate]:
    ended: list[ChorusAggregate] = []
    for session_id in dict.fromkeys(session_ids):
        uid = as_uuid(session_id)
        if app.exists(uid):
            session = app.load(SignIn, uid, "session")
        else:
            # A refresh-token family issued before sign-ins were recorded.
            session = SignIn.start(uid, cause.actor, cause)
        if session.end(reason, cause):
            ended.append(session)
    return ended


@HANDLERS.on(EndSignIns)
def end_sign_ins(app: DecisionContext, cmd: EndSignIns, cause: Cause) -> Decision:
    return Decision(_ended(app, cmd.session_ids, cmd.reason, cause))


@HANDLERS.on(ChangePassword)
def change_password(app: DecisionContext, cmd: ChangePassword, cause: Cause) -> Decision:
    user = app.load(User, cause.actor, "user")
    check_user_password(cmd.password, user.username, user.display_name)
    user.change_password(cmd.kept_session_id, cause)
    ended = _ended(app, cmd.ended_session_ids, "password changed", cause)
    return Decision(
        [user, *ended],
        credentials={user.id: cmd.password_hash or app.passwords.hash(cmd.password)},
    )
