"""Handlers of presence commands (sent by the server for the sessions it holds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.commands import EndInstanceSessions, EndSession, StartSession
from application.decisions import Decision, handles
from domain.base import Cause
from domain.presence import Presence, presence_id

if TYPE_CHECKING:
    from application.chorus import Chorus


def _presence(app: Chorus, user_id: str) -> Presence | None:
    pid = presence_id(user_id)
    return app.load(Presence, pid) if app.exists(pid) else None


@handles(StartSession)
def start_session(app: Chorus, cmd: StartSession, cause: Cause) -> Decision:
    user_id = cause.actor_id or ""
    presence = _presence(app, user_id) or Presence.track(user_id, cause)
    presence.start_session(cmd.session_id, cmd.instance_id, cause)
    return Decision([presence])


@handles(EndSession)
def end_session(app: Chorus, cmd: EndSession, cause: Cause) -> Decision:
    presence = _presence(app, cmd.user_id)
    if presence is not None:
        presence.end_session(cmd.session_id, cmd.reason, cause)
    return Decision([] if presence is None else [presence])


@handles(EndInstanceSessions)
def end_instance_sessions(app: Chorus, cmd: EndInstanceSessions, cause: Cause) -> Decision:
    presence = _presence(app, cmd.user_id)
    if presence is not None:
        presence.end_instance_sessions(cmd.instance_id, cmd.reason, cause)
    return Decision([] if presence is None else [presence])
