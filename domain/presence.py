"""Presence: each WebSocket session is a stream of its own, started and ended; a user is
online while any of their sessions is open. (One stream per session, not per user: a user
with many tabs or devices opens and closes sessions without contending on one aggregate.)"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import PermissionDenied
from domain.scopes import OPERATORS, StreamKind


class Session(ChorusAggregate):
    """One connection of a user, held by one server instance."""

    stream_kind = StreamKind("presence", OPERATORS, owner="user_id")

    @classmethod
    @caused
    def start(cls, session_id: UUID, instance_id: str, cause: Cause) -> Session:
        if cause.actor_id is None:
            raise PermissionDenied("a session belongs to a signed-in user")
        return cls(
            id=session_id,
            user_id=cause.actor_id,
            instance_id=instance_id,
        )

    @event("SessionStarted")
    def __init__(
        self,
        id: UUID,
        user_id: str,
        instance_id: str,
    ) -> None:
        self.user_id = user_id
        self.instance_id = instance_id
        self.open = True

    @caused
    def end(self, reason: str, cause: Cause) -> bool:
        """Returns False when the session had already ended (nothing to record)."""
        if not self.open:
            return False
        self._ended(reason=reason)
        return True

    @event("SessionEnded")
    def _ended(self, reason: str) -> None:
        self.open = False
