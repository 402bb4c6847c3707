"""The common base of every aggregate and event in Chorus."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import NotFound


@dataclass(frozen=True)
class Cause:
    """Who issued a command, and the command id that makes its retries idempotent.

    Every event records both, so the log answers "who did this, and by which request".
    """

    actor_id: str | None
    command_id: str | None = None

    @property
    def actor(self) -> str:
        """The actor's id, or "" for none (a sign-up): what the rules compare ids with."""
        return self.actor_id or ""


class ChorusAggregate(Aggregate):
    """An aggregate whose every event carries ``actor_id`` and ``command_id``."""

    class Event(Aggregate.Event):
        actor_id: str | None
        command_id: str | None

    class Created(Event, Aggregate.Created):
        pass


def as_uuid(value: str | UUID) -> UUID:
    """Parses an id given by a client; a malformed id is simply not found."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"unknown id {value!r:.80}") from None
