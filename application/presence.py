"""Handlers of presence commands (sent by the server for the sessions it holds)."""

from __future__ import annotations

from uuid import UUID

from application.commands import EndSession, StartSession
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause
from domain.presence import Session

# This context's command handlers, joined with the others' in application/handlers.py.
HANDLERS = HandlerTable()


@HANDLERS.on(StartSession)
def start_session(app: DecisionContext, cmd: StartSession, cause: Cause) -> Decision:
    return Decision([Session.start(UUID(cmd.session_id), cmd.instance_id, cause)])


@HANDLERS.on(EndSession)
def end_session(app: DecisionContext, cmd: EndSession, cause: Cause) -> Decision:
    session = app.load(Session, cmd.session_id, "session")
    session.end(cmd.reason, cause)
    return Decision([session])
