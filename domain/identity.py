"""Users: who can sign in and be a member of workspaces."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate
from domain.rules import MAX_DISPLAY_NAME, bounded_text, normalise_username

_USERNAMES = uuid5(NAMESPACE_URL, "chorus:usernames")


def user_id_for(username: str) -> UUID:
    """A user's id is derived from the username, so the event store itself refuses a second
    registration of the same name (a version conflict), even across processes."""
    return uuid5(_USERNAMES, normalise_username(username))


class User(ChorusAggregate):
    """A registered user. Credentials are kept beside the log, never in it."""

    @classmethod
    def register(cls, username: str, display_name: str | None, cause: Cause) -> User:
        name = normalise_username(username)
        shown = bounded_text(
            display_name if display_name is not None else name,
            field="display_name",
            max_length=MAX_DISPLAY_NAME,
        )
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
