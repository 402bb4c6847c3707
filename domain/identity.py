"""Users: who can sign in and be a member of workspaces."""

from __future__ import annotations

import hashlib
import unicodedata
from datetime import datetime, timedelta
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import Conflict, InvalidValue, NotFound, PermissionDenied
from domain.rules import MAX_DISPLAY_NAME, forbidden_character, normalise_username, shown_name
from domain.scopes import OPERATORS, OWNER, SELF, StreamKind

# Enough for anyone's list of people they do not want to hear from, bounded like every input.
MAX_BLOCKED_USERS = 1000

_USERNAMES = uuid5(NAMESPACE_URL, "chorus:usernames")

# Long enough for any image host's URL with a signature in its query, short enough that a
# member list of a thousand people stays small.
MAX_AVATAR_URL = 512
# An operator's reset token lives this long unless they say otherwise (issue 20), and at
# most a week: the token is as good as the password until it is used or expires.
DEFAULT_RESET_TTL_S = 24 * 3600
MIN_RESET_TTL_S = 5 * 60
MAX_RESET_TTL_S = 7 * 24 * 3600
# Pending reset tokens a user may hold at once: each one is a way in.
MAX_PENDING_RESETS = 5


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


def avatar_url_rule(value: str) -> str:
    """An avatar URL as users paste it: ``https`` only (no mixed content, no ``javascript:``
    or ``data:``), a host, no credentials (``user:pass@`` would hand a secret to every viewer
    and can disguise the host), no whitespace or control characters anywhere (a pasted URL
    with a line break is a mistake, and clients would show the two halves differently),
    at most ``MAX_AVATAR_URL`` characters. Never fetched by Chorus: clients load it."""
    if len(value) > MAX_AVATAR_URL:
        raise InvalidValue(f"avatar_url: at most {MAX_AVATAR_URL} characters")
    if any(c.isspace() for c in value) or forbidden_character(value) is not None:
        raise InvalidValue("avatar_url: no whitespace or control characters")
    if not value.isascii():
        # A host in Unicode can pass for another one; paste its punycode (xn--) form.
        raise InvalidValue("avatar_url: ASCII only (internationalised hosts as xn--)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidValue("avatar_url: not a URL") from None
    if parts.scheme.lower() != "https":
        raise InvalidValue("avatar_url: an https URL")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise InvalidValue("avatar_url: no credentials in the URL")
    if not parts.hostname or port == 0:
        raise InvalidValue("avatar_url: needs a host")
    return value


def reset_token_hash(secret: str) -> str:
    """What the log keeps of a reset token: its SHA-256 (the secret is 256 random bits, so
    a fast hash is enough: nothing to brute-force)."""
    return hashlib.sha256(secret.encode()).hexdigest()


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

    # -- the profile (issue 20): one event per field, so a read model or an erasure rule
    # -- interested in one field never decodes the others ----------------------------------

    @property
    def avatar_url(self) -> str | None:
        # Users registered before issue 20 (and their snapshots) lack the attribute.
        found: str | None = self.__dict__.get("avatar", None)
        return found

    @property
    def active(self) -> bool:
        return not self.__dict__.get("deactivated", False)

    @caused
    def change_display_name(self, display_name: str, cause: Cause) -> bool:
        """False when it is the current name (nothing to record)."""
        self._check_own_profile(cause)
        shown = display_name_rule(display_name)
        if shown == self.display_name:
            return False
        self._display_name_changed(display_name=shown)
        return True

    @event("DisplayNameChanged")
    def _display_name_changed(self, display_name: str) -> None:
        self.display_name = display_name

    @caused
    def change_avatar(self, avatar_url: str | None, cause: Cause) -> bool:
        """``None`` removes the avatar. False when nothing changes."""
        self._check_own_profile(cause)
        url = None if avatar_url is None else avatar_url_rule(avatar_url)
        if url == self.avatar_url:
            return False
        self._avatar_changed(avatar_url=url)
        return True

    @event("AvatarChanged")
    def _avatar_changed(self, avatar_url: str | None) -> None:
        self.avatar = avatar_url

    @caused
    def change_username(self, username: str, cause: Cause) -> str | None:
        """The username given up, or None when it is the current one. Its uniqueness is
        the claims' business (domain/indexes.py): the handler claims the new one and
        releases this one in the same transaction."""
        self._check_own_profile(cause)
        name = normalise_username(username)
        if name == self.username:
            return None
        previous = self.username
        self._username_changed(username=name, previous=previous)
        return previous

    @event("UsernameChanged")
    def _username_changed(self, username: str, previous: str) -> None:
        self.username = username

    def _check_own_profile(self, cause: Cause) -> None:
        if cause.actor_id != str(self.id):
            raise PermissionDenied("only a user changes their profile")
        if not self.active:
            raise PermissionDenied("this account is deactivated")

    # -- deactivation (issue 20): the account stays, its owner cannot sign in --------------

    @caused
    def deactivate(self, cause: Cause) -> None:
        if cause.actor_id != str(self.id):
            raise PermissionDenied("only a user deactivates their account")
        if not self.active:
            raise Conflict("already deactivated")
        self._user_deactivated()

    @event("UserDeactivated")
    def _user_deactivated(self) -> None:
        self.deactivated = True
        # Nothing issued before may bring the account back.
        self.resets: dict[str, datetime] = {}

    @caused
    def reactivate(self, by: str, cause: Cause) -> None:
        """An operator's act, at the console (``chorus reactivate-user``)."""
        if cause.actor_id is not None:
            raise PermissionDenied("an operator reactivates accounts, at the console")
        if self.active:
            raise Conflict("the account is active")
        self._user_reactivated(reactivated_by=by)

    @event("UserReactivated")
    def _user_reactivated(self, reactivated_by: str) -> None:
        self.deactivated = False

    # -- password reset (issue 20): a one-time token an operator issues --------------------

    @property
    def pending_resets(self) -> dict[str, datetime]:
        found: dict[str, datetime] = self.__dict__.setdefault("resets", {})
        return found

    @caused
    def issue_password_reset(
        self, token_hash: str, expires_in_s: int | None, by: str, now: datetime, cause: Cause
    ) -> None:
        """Records the hash of a token (never the token) and when it expires."""
        if cause.actor_id is not None:
            raise PermissionDenied("an operator issues reset tokens, at the console")
        if not self.active:
            raise PermissionDenied("this account is deactivated")
        ttl = DEFAULT_RESET_TTL_S if expires_in_s is None else expires_in_s
        if not MIN_RESET_TTL_S <= ttl <= MAX_RESET_TTL_S:
            raise InvalidValue(
                f"expires_in_s must be between {MIN_RESET_TTL_S} and {MAX_RESET_TTL_S}"
            )
        live = [h for h, expiry in self.pending_resets.items() if expiry > now]
        if len(live) >= MAX_PENDING_RESETS:
            raise Conflict(f"at most {MAX_PENDING_RESETS} reset tokens pending")
        self._password_reset_issued(
            token_hash=token_hash, expires_at=now + timedelta(seconds=ttl), issued_by=by
        )

    @event("PasswordResetIssued")
    def _password_reset_issued(self, token_hash: str, expires_at: datetime, issued_by: str) -> None:
        self.pending_resets[token_hash] = expires_at

    def check_reset_token(self, token_hash: str, now: datetime) -> None:
        """PermissionDenied, alike, for a token never issued, used or expired."""
        expiry = self.pending_resets.get(token_hash)
        if expiry is None or expiry <= now:
            raise PermissionDenied("invalid or expired reset token")
        if not self.active:
            raise PermissionDenied("this account is deactivated")

    @caused
    def reset_password(self, token_hash: str, now: datetime, cause: Cause) -> None:
        """Spends the token (and every other pending one: one reset is enough); every
        session of the user ends with it."""
        if cause.actor_id != str(self.id):
            raise PermissionDenied("a reset token resets its own user's password")
        self.check_reset_token(token_hash, now)
        self._password_reset(token_hash=token_hash)

    @event("PasswordReset")
    def _password_reset(self, token_hash: str) -> None:
        self.resets = {}

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
        # A reset token outlives no password change: whoever changed it knew the old one.
        self.resets = {}

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
