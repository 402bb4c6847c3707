"""Handlers of identity commands."""

from __future__ import annotations

from uuid import UUID, uuid4

from application.commands import (
    BlockUser,
    ChangePassword,
    ChangeProfile,
    DeactivateAccount,
    EndSignIns,
    IssuePasswordReset,
    ReactivateUser,
    RegisterUser,
    ResetPassword,
    StartSignIn,
    UnblockUser,
)
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause, ChorusAggregate, as_uuid
from domain.errors import Conflict, InvalidValue, UsernameTaken
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


def _claim(app: DecisionContext, username: str, user_id: UUID, cause: Cause) -> UsernameClaim:
    """The claim of ``username`` for ``user_id``: a new claim stream, or, for a name a
    rename released (issue 20), the next event of its stream (saved under its version)."""
    claim_id = username_claim_id(username)
    if app.exists(claim_id):
        claim = app.load(UsernameClaim, claim_id, "username")
        claim.reclaim(user_id, cause)
        return claim
    return UsernameClaim.claim(username, user_id, cause)


@HANDLERS.on(RegisterUser)
def register_user(app: DecisionContext, cmd: RegisterUser, cause: Cause) -> Decision:
    username = normalise_username(cmd.username)
    check_user_password(cmd.password, username, cmd.display_name)
    if user_id_of(app, username) is not None:
        raise UsernameTaken("that username is taken")
    # A random id tells nothing about the name; the claim, saved in the same transaction,
    # is what a second registration of the name (another process's too) conflicts on.
    user = User.register(uuid4(), username, cmd.display_name, cause)
    claim = _claim(app, username, user.id, Cause(str(user.id), cause.command_id))
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


# -- a user's whole life (issue 20) ----------------------------------------------------------


def _check_not_another_username(app: DecisionContext, user: User, display_name: str) -> None:
    """As at sign-up: a display name may not read as another user's username."""
    looks_like = username_read_in(display_name)
    if looks_like not in (None, user.username):
        holder = user_id_of(app, looks_like)
        if holder is not None and holder != user.id:
            raise Conflict("display_name is another user's username")


def _claims_for_rename(
    app: DecisionContext, user: User, new: str, previous: str, cause: Cause
) -> list[ChorusAggregate]:
    """Claims ``new`` for ``user`` and releases ``previous``, to be saved with the rename:
    the claim stream's version check refuses a concurrent claim of ``new`` (one of the two
    transactions fails), and the released ``previous`` can be claimed by anyone after."""
    holder = user_id_of(app, new)
    if holder is not None:
        raise UsernameTaken("that username is taken")
    claim = _claim(app, new, user.id, cause)
    old_id = username_claim_id(previous)
    if app.exists(old_id):
        old = app.load(UsernameClaim, old_id, "username")
    else:
        # A user registered before claims (their id derived from the name): a claim is
        # made for the old name and released at once, so the name no longer resolves to
        # them (a claim is looked at before the derived id).
        old = UsernameClaim.claim(previous, user.id, cause)
    old.release(str(user.id), cause)
    return [claim, old]


@HANDLERS.on(ChangeProfile)
def change_profile(app: DecisionContext, cmd: ChangeProfile, cause: Cause) -> Decision:
    if cmd.display_name is None and cmd.avatar_url is None and cmd.username is None:
        raise InvalidValue("nothing to change: send display_name, avatar_url or username")
    user = app.load(User, cause.actor, "user")
    changed: list[ChorusAggregate] = []
    if cmd.username is not None:
        new = normalise_username(cmd.username)
        previous = user.change_username(new, cause)
        if previous is not None:
            changed += _claims_for_rename(app, user, new, previous, cause)
    if cmd.display_name is not None and user.change_display_name(cmd.display_name, cause):
        _check_not_another_username(app, user, user.display_name)
    if cmd.avatar_url is not None:
        user.change_avatar(cmd.avatar_url or None, cause)
    return Decision([user, *changed])


@HANDLERS.on(DeactivateAccount)
def deactivate_account(app: DecisionContext, cmd: DeactivateAccount, cause: Cause) -> Decision:
    user = app.load(User, cause.actor, "user")
    user.deactivate(cause)
    ended = _ended(app, cmd.ended_session_ids, "account deactivated", cause)
    return Decision([user, *ended])


@HANDLERS.on(ReactivateUser)
def reactivate_user(app: DecisionContext, cmd: ReactivateUser, cause: Cause) -> Decision:
    user = app.load(User, cmd.user_id, "user")
    user.reactivate(cmd.reactivated_by, cause)
    return Decision([user])


@HANDLERS.on(IssuePasswordReset)
def issue_password_reset(app: DecisionContext, cmd: IssuePasswordReset, cause: Cause) -> Decision:
    user = app.load(User, cmd.user_id, "user")
    user.issue_password_reset(cmd.token_hash, cmd.expires_in_s, cmd.issued_by, app.clock(), cause)
    return Decision([user])


@HANDLERS.on(ResetPassword)
def reset_password(app: DecisionContext, cmd: ResetPassword, cause: Cause) -> Decision:
    user = app.load(User, cause.actor, "user")
    user.reset_password(cmd.token_hash, app.clock(), cause)
    check_user_password(cmd.password, user.username, user.display_name)
    ended = _ended(app, cmd.ended_session_ids, "password reset", cause)
    return Decision(
        [user, *ended],
        credentials={user.id: cmd.password_hash or app.passwords.hash(cmd.password)},
    )
