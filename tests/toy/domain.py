"""The toy context's aggregate: a board in a workspace, readable by every member."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate
from domain.rules import shown_name
from domain.scopes import WORKSPACE_MEMBERS, StreamKind
from domain.workspaces import Workspace


class Board(ChorusAggregate):
    """A board of a workspace."""

    stream_kind = StreamKind("board", WORKSPACE_MEMBERS, workspace="workspace_id")

    @classmethod
    def create(cls, id: UUID, workspace: Workspace, name: str, cause: Cause) -> Board:
        workspace.check_member(cause.actor_id or "")
        return cls(
            id=id,
            workspace_id=workspace.id,
            name=shown_name(name, field="name", max_length=80),
            actor_id=cause.actor_id,
            command_id=cause.command_id,
        )

    @event("BoardCreated")
    def __init__(
        self,
        id: UUID,
        workspace_id: UUID,
        name: str,
        actor_id: str | None,
        command_id: str | None,
    ) -> None:
        self.workspace_id = workspace_id
        self.name = name
