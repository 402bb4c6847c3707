"""Users: who can sign in and be a member of workspaces."""

from __future__ import annotations

import unicodedata
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import Conflict, InvalidValue, NotFound, PermissionDenied
from domain.rules import MAX_DISPLAY_NAME, normalise_username, shown_name
from domain.scopes import OPERATORS, OWNER, SELF, StreamKind

# Enough for anyone's list of people they do not want to hear from, bounded like every input.
MAX_BLOCKED_USERS = 1000

_USERNAMES = uuid5(NAMESPACE_URL, "chorus:usernames")


def display_name_rule(value: str) -> str:
    """The display name as it is stored and shown: NFKC-normalised (full-width, ligatures,
    styled letters become the plain characters they look like), stripped, 1 to
    ``MAX_DISPLAY_NAME`` characters, meeting the character rule and the name rule (nothing
    that hides, reorders or spills over: see ``domain.rules.check_shown_name``)."""
    normal = unicodedata.normalize("NFKC", value)
    return shown_name(normal, field="display_name", max_length=MAX_DISPLAY_NAME)


def username_read_in(display_name: str) -> str | None:
    """The username a display name reads as (case-folded after NFKC), or None if it reads
    as no possible username: who registers under a display name equal to another user's
    username would pass for them in every client that shows names."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", display_name).casefold())
    try:
        return normalise_username(folded)
    except InvalidValue:
        return None


def legacy_user_id(username: str) -> UUID:
    """The id a user registered before issue 17 got: derived from the username, so it gave
    the name away. Those ids stay valid (their streams live there, without a username
    claim); new users get random ids and a claim (domain/indexes.py)."""
    return uuid5(_USERNAMES, normalise_username(username))


class User(ChorusAggregate):
    """A registered user. Credentials are kept beside the log, never in it."""

    stream_kind = StreamKind("user", OWNER, owner=SELF)

    @classmethod
    @caused
    def register(cls, user_id: UUID, username: str, display_name: str | None, cause: Cause) -> User:
        """``user_id`` is random (the application draws it); the username's uniqueness is
        its claim's business (domain/indexes.py), saved with this event."""
        name = normalise_username(username)
        shown = display_name_rule(display_name if display_name is not None else name)
        # Registration is the user's own act: they are its actor.
        return cls(
            id=user_id,
            username=name,
            display_name=shown,
            actor_id=str(user_id),
        )

    @event("UserRegistered")
    def __init__(
        self,
        id: UUID,
        username: str,
        display_name: str,
        actor_id: str | None,
    ) -> None:
        self.username = username
        self.display_name = display_name

    # -- whom the user hears from ------------------------------------------------------------

    @property
    def blocked(self) -> set[str]:
        # Snapshots taken before blocks existed lack the attribute.
        blocked: set[str] = self.__dict__.setdefault("blocked_ids", set())
        return blocked

    @caused
    def block(self, user_id: str, cause: Cause) -> None:
        """Blocked users cannot direct-message this user, and their mentions do not reach
        them. Only the user blocks, for themselves."""
        self._check_self(cause)
        if user_id == str(self.id):
            raise InvalidValue("you cannot block yourself")
        if user_id in self.blocked:
            raise Conflict("already blocked")
        if len(self.blocked) >= MAX_BLOCKED_USERS:
            raise InvalidValue(f"at most {MAX_BLOCKED_USERS} blocked users")
        self._user_blocked(user_id=user_id)

    @event("UserBlocked")
    def _user_blocked(self, user_id: str) -> None:
        self.blocked.add(user_id)

    @caused
    def unblock(self, user_id: str, cause: Cause) -> None:
        self._check_self(cause)
        if user_id not in self.blocked:
            raise NotFound("that user is not blocked")
        self._user_unblocked(user_id=user_id)

    @event("UserUnblocked")
    def _user_unblocked(self, user_id: str) -> None:
        self.blocked.discard(user_id)

    def hears_from(self, user_id: str) -> bool:
        return user_id not in self.blocked

    def _check_self(self, cause: Cause) -> None:
        if cause.actor_id != str(self.id):
            raise PermissionDenied("only a user changes whom they hear from")

    # -- the password (issue 17): the hash is kept beside the log, never in it ---------------

    @caused
    def change_password(self, kept_session_id: str | None, cause: Cause) -> None:
        """Records that the user changed their password; every session but
        ``kept_session_id`` (the one that changed it) ends with it."""
        if cause.actor_id != str(self.id):
            raise PermissionDenied("only a user changes their password")
        self._password_changed(kept_session_id=kept_session_id)

    @event("PasswordChanged")
    def _password_changed(self, kept_session_id: str | None) -> None:
        pass

    # -- erasure (issue 20): the event says that it happened and what kind, never the data --

    @property
    def erased(self) -> bool:
        return getattr(self, "_erased_kinds", None) is not None

    @caused
    def erase(self, kinds: list[str], cause: Cause) -> None:
        """Records that the user's personal data of ``kinds`` was erased (its keys are
        destroyed beside the log: infrastructure/keys.py). By the user, or by an operator
        (``chorus erase-user``, no actor)."""
        if cause.actor_id not in (None, str(self.id)):
            raise PermissionDenied("only a user erases themselves")
        if self.erased:
            raise NotFound("unknown user")
        self._user_erased(kinds=kinds)

    @event("UserErased")
    def _user_erased(self, kinds: list[str]) -> None:
        self._erased_kinds = kinds


def check_can_message(sender: User, recipient: User) -> None:
    """A direct message needs neither of the two to have blocked the other."""
    if not recipient.hears_from(str(sender.id)) or not sender.hears_from(str(recipient.id)):
        raise PermissionDenied("you cannot message this user")


def check_can_add(actor_id: str, invitee: User) -> None:
    """Nobody brings a user into a room (a private channel) after that user blocked them."""
    if not invitee.hears_from(actor_id):
        raise PermissionDenied("you cannot add this user")


class SignIn(ChorusAggregate):
    """One sign-in of a user (issue 17): a session, from login or sign-up until logout, logout
    everywhere, its removal from the session list, a password change or a stolen refresh
    token's reuse. Its id is its refresh-token family's and its access tokens' ``sid``: once
    it has ended, both are refused. Holds no address or device: the log is append-only."""

    stream_kind = StreamKind("sign_in", OPERATORS, owner="user_id")

    @classmethod
    @caused
    def start(cls, session_id: UUID, user_id: str, cause: Cause) -> SignIn:
        if cause.actor_id != user_id:
            raise PermissionDenied("a user signs in as themselves")
        return cls(id=session_id, user_id=user_id, actor_id=user_id)

    @event("SignedIn")
    def __init__(self, id: UUID, user_id: str, actor_id: str | None) -> None:
        self.user_id = user_id
        self.live = True

    @caused
    def end(self, reason: str, cause: Cause) -> bool:
        """False when it had already ended (nothing to record)."""
        if cause.actor_id != self.user_id:
            raise PermissionDenied("a user ends their own sessions")
        if not self.live:
            return False
        self._signed_out(
            user_id=self.user_id,
            reason=reason,
        )
        return True

    @event("SignedOut")
    def _signed_out(self, user_id: str, reason: str) -> None:
        self.live = False
