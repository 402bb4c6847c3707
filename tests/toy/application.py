"""The toy context's command and its handler."""

from __future__ import annotations

from uuid import uuid4

from application.commands import Command
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause
from domain.workspaces import Workspace
from tests.toy.domain import Board


class CreateBoard(Command, frozen=True):
    workspace_id: str
    name: str


HANDLERS = HandlerTable()


@HANDLERS.on(CreateBoard)
def create_board(app: DecisionContext, cmd: CreateBoard, cause: Cause) -> Decision:
    workspace = app.load(Workspace, cmd.workspace_id)
    board = Board.create(uuid4(), workspace, cmd.name, cause)
    return Decision([board], {"id": str(board.id)}, status=201)
