"""Presence: a user's sessions (WebSocket connections) coming online and going offline."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate
from domain.errors import Conflict

_PRESENCE = uuid5(NAMESPACE_URL, "chorus:presence")


def presence_id(user_id: str) -> UUID:
    """One presence stream per user, found from the user id alone."""
    return uuid5(_PRESENCE, user_id)


class Presence(ChorusAggregate):
    """A user's open sessions, each on one server instance. Online while any is open."""

    @classmethod
    def track(cls, user_id: str, cause: Cause) -> Presence:
        return cls(
            id=presence_id(user_id),
            user_id=user_id,
            actor_id=cause.actor_id,
            command_id=cause.command_id,
        )

    @event("PresenceTracked")
    def __init__(
        self,
        id: UUID,
        user_id: str,
        actor_id: str | None,
        command_id: str | None,
    ) -> None:
        self.user_id = user_id
        self.sessions: dict[str, str] = {}  # session id -> instance id

    @property
    def online(self) -> bool:
        return bool(self.sessions)

    def start_session(self, session_id: str, instance_id: str, cause: Cause) -> None:
        if session_id in self.sessions:
            raise Conflict("that session is already open")
        self._session_started(
            session_id=session_id,
            instance_id=instance_id,
            actor_id=cause.actor_id,
            command_id=cause.command_id,
        )

    @event("SessionStarted")
    def _session_started(
        self, session_id: str, instance_id: str, actor_id: str | None, command_id: str | None
    ) -> None:
        self.sessions[session_id] = instance_id

    def end_session(self, session_id: str, reason: str, cause: Cause) -> bool:
        """Returns False when the session was not open (already ended: nothing to record)."""
        if session_id not in self.sessions:
            return False
        self._session_ended(
            session_id=session_id,
            reason=reason,
            actor_id=cause.actor_id,
            command_id=cause.command_id,
        )
        return True

    def end_instance_sessions(self, instance_id: str, reason: str, cause: Cause) -> int:
        """Ends every session the user had on a lost instance; returns how many."""
        lost = [s for s, i in self.sessions.items() if i == instance_id]
        for session_id in lost:
            self.end_session(session_id, reason, cause)
        return len(lost)

    @event("SessionEnded")
    def _session_ended(
        self, session_id: str, reason: str, actor_id: str | None, command_id: str | None
    ) -> None:
        self.sessions.pop(session_id, None)
