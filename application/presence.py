"""Handlers of presence commands (sent by the server for the sessions it holds)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from application.commands import EndSession, StartSession
from application.decisions import Decision, handles
from domain.base import Cause
from domain.presence import Session

if TYPE_CHECKING:
    from application.chorus import Chorus


@handles(StartSession)
def start_session(app: Chorus, cmd: StartSession, cause: Cause) -> Decision:
    return Decision([Session.start(UUID(cmd.session_id), cmd.instance_id, cause)])


@handles(EndSession)
def end_session(app: Chorus, cmd: EndSession, cause: Cause) -> Decision:
    session = app.load(Session, cmd.session_id, "session")
    session.end(cmd.reason, cause)
    return Decision([session])
