"""Users: who can sign in and be a member of workspaces."""

from __future__ import annotations

import unicodedata
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate
from domain.errors import InvalidValue
from domain.rules import MAX_DISPLAY_NAME, bounded_text, normalise_username

_USERNAMES = uuid5(NAMESPACE_URL, "chorus:usernames")

# Shown in place of a name, these fillers show nothing (NFKC maps the half-width and
# compatibility ones to U+1160).
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def display_name_rule(value: str) -> str:
    """The display name as it is stored and shown: NFKC-normalised (full-width, ligatures,
    styled letters become the plain characters they look like), stripped, 1 to
    ``MAX_DISPLAY_NAME`` characters, meeting the character rule, and free of what
    impersonates or hides: format characters (Unicode ``Cf``: the bidi overrides, embeddings,
    isolates and marks that reorder a name on screen, zero-width spaces and joiners, the
    BOM, soft hyphens), line and paragraph separators and invisible fillers."""
    normal = unicodedata.normalize("NFKC", value)
    for character in normal:
        category = unicodedata.category(character)
        if category in ("Cf", "Zl", "Zp") or character in _INVISIBLE_LETTERS:
            raise InvalidValue(
                f"display_name must not contain invisible or reordering characters"
                f" (U+{ord(character):04X})"
            )
    return bounded_text(normal, field="display_name", max_length=MAX_DISPLAY_NAME)


def username_read_in(display_name: str) -> str | None:
    """The username a display name reads as (case-folded after NFKC), or None if it reads
    as no possible username: who registers under a display name equal to another user's
    username would pass for them in every client that shows names."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", display_name).casefold())
    try:
        return normalise_username(folded)
    except InvalidValue:
        return None


def user_id_for(username: str) -> UUID:
    """A user's id is derived from the username, so the event store itself refuses a second
    registration of the same name (a version conflict), even across processes."""
    return uuid5(_USERNAMES, normalise_username(username))


class User(ChorusAggregate):
    """A registered user. Credentials are kept beside the log, never in it."""

    @classmethod
    def register(cls, username: str, display_name: str | None, cause: Cause) -> User:
        name = normalise_username(username)
        shown = display_name_rule(display_name if display_name is not None else name)
        user_id = user_id_for(name)
        # Registration is the user's own act: they are its actor.
        return cls(
            id=user_id,
            username=name,
            display_name=shown,
            actor_id=str(user_id),
            command_id=cause.command_id,
        )

    @event("UserRegistered")
    def __init__(
        self,
        id: UUID,
        username: str,
        display_name: str,
        actor_id: str | None,
        command_id: str | None,
    ) -> None:
        self.username = username
        self.display_name = display_name
