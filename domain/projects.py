"""Projects: a workspace's boards of work (issue 21), with their workflow's columns and who
may read them (every member of the workspace, or a listed set, as a private channel).

A project is the container its tasks live in (``domain/tasks.py``): its stream kind names the
project as the tasks' "channel" in the scope sense, so the event hub and ``rm_streams`` put a
project and its tasks in one place, and a ``/ws`` subscription to a project reads exactly
them (application/subscriptions.py).
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import Conflict, InvalidValue, NotAMember, NotFound
from domain.rules import bounded_text, shown_name
from domain.scopes import CHANNEL_READERS, SELF, StreamKind
from domain.workspaces import Workspace

MAX_PROJECT_NAME = 100
MAX_PROJECT_DESCRIPTION = 4000
MAX_COLUMNS = 20
MAX_COLUMN_NAME = 50
MAX_PROJECT_MEMBERS = 1000
MAX_COLUMN_ID = 32

ACCESS_WORKSPACE = "workspace"
ACCESS_LISTED = "listed"
ACCESS_MODES = (ACCESS_WORKSPACE, ACCESS_LISTED)

# The workflow every new project starts with: stable ids, so clients and tests can name them.
DEFAULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("todo", "To do"),
    ("in-progress", "In progress"),
    ("done", "Done"),
)


class Project(ChorusAggregate):
    """A project of a workspace. ``access`` is ``workspace`` (every member reads it) or
    ``listed`` (only ``member_ids``, and the workspace's owners, who can always reach it to
    fix its list). Changing it needs ``manage_projects``; so do its columns."""

    stream_kind = StreamKind(
        "project",
        CHANNEL_READERS,
        workspace="workspace_id",
        channel=SELF,
        # Both name no user: every subscriber of the project is checked again.
        access_events=("ProjectAccessChanged", "ProjectDeleted"),
    )

    @classmethod
    @caused
    def create(
        cls,
        id: UUID,
        workspace: Workspace,
        name: str,
        description: str | None,
        access: str,
        member_ids: list[str],
        cause: Cause,
    ) -> Project:
        actor = cause.actor
        workspace.check_permission(actor, "manage_projects")
        members = _listed(access, member_ids, workspace, actor)
        return cls(
            id=id,
            workspace_id=workspace.id,
            name=shown_name(name, field="name", max_length=MAX_PROJECT_NAME),
            description=_description(description),
            access=access,
            member_ids=members,
            columns=[{"id": c, "name": n} for c, n in DEFAULT_COLUMNS],
        )

    @event("ProjectCreated")
    def __init__(
        self,
        id: UUID,
        workspace_id: UUID,
        name: str,
        description: str,
        access: str,
        member_ids: list[str],
        columns: list[dict[str, str]],
    ) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.description = description
        self.access = access
        self.member_ids = list(member_ids)
        self.columns = [dict(c) for c in columns]
        self.archived = False
        self.is_deleted = False

    # -- access --------------------------------------------------------------------------

    def can_view(self, user_id: str, workspace: Workspace | None) -> bool:
        if self.is_deleted or workspace is None or not workspace.is_member(user_id):
            return False
        if self.access == ACCESS_WORKSPACE or user_id in workspace.owners():
            return True
        return user_id in self.member_ids

    def check_can_view(self, user_id: str, workspace: Workspace | None) -> None:
        if not self.can_view(user_id, workspace):
            # As an unknown id: a listed project does not exist for those outside it.
            raise NotAMember("unknown project")

    def check_can_manage(self, user_id: str, workspace: Workspace) -> None:
        self.check_can_view(user_id, workspace)
        workspace.check_permission(user_id, "manage_projects")

    def check_can_change_tasks(self, user_id: str, workspace: Workspace) -> None:
        """Creating, changing, moving and deleting its tasks: ``manage_tasks``, in a project
        that is not archived."""
        self.check_can_view(user_id, workspace)
        workspace.check_permission(user_id, "manage_tasks")
        if self.archived:
            raise Conflict("the project is archived")

    def column_ids(self) -> list[str]:
        return [c["id"] for c in self.columns]

    def check_column(self, column_id: str) -> str:
        if column_id not in self.column_ids():
            raise InvalidValue(f"the project has no column {column_id[:MAX_COLUMN_ID]!r}")
        return column_id

    # -- changes -------------------------------------------------------------------------

    @caused
    def rename(self, name: str, workspace: Workspace, cause: Cause) -> None:
        self.check_can_manage(cause.actor, workspace)
        self._renamed(name=shown_name(name, field="name", max_length=MAX_PROJECT_NAME))

    @event("ProjectRenamed")
    def _renamed(self, name: str) -> None:
        self.name = name

    @caused
    def describe(self, description: str, workspace: Workspace, cause: Cause) -> None:
        self.check_can_manage(cause.actor, workspace)
        self._described(description=_description(description))

    @event("ProjectDescribed")
    def _described(self, description: str) -> None:
        self.description = description

    @caused
    def set_access(
        self, access: str, member_ids: list[str], workspace: Workspace, cause: Cause
    ) -> None:
        self.check_can_manage(cause.actor, workspace)
        members = _listed(access, member_ids, workspace, cause.actor)
        self._access_changed(access=access, member_ids=members)

    @event("ProjectAccessChanged")
    def _access_changed(self, access: str, member_ids: list[str]) -> None:
        self.access = access
        self.member_ids = list(member_ids)

    @caused
    def archive(self, archived: bool, workspace: Workspace, cause: Cause) -> None:
        self.check_can_manage(cause.actor, workspace)
        if self.archived == archived:
            raise Conflict("already archived" if archived else "not archived")
        if archived:
            self._archived()
        else:
            self._unarchived()

    @event("ProjectArchived")
    def _archived(self) -> None:
        self.archived = True

    @event("ProjectUnarchived")
    def _unarchived(self) -> None:
        self.archived = False

    @caused
    def delete(self, workspace: Workspace, cause: Cause) -> None:
        """Nobody reads it or its tasks any more; the log keeps them for auditors."""
        self.check_can_manage(cause.actor, workspace)
        self._deleted()

    @event("ProjectDeleted")
    def _deleted(self) -> None:
        self.is_deleted = True

    # -- the workflow ----------------------------------------------------------------------

    @caused
    def add_column(self, column_id: str, name: str, workspace: Workspace, cause: Cause) -> None:
        self.check_can_manage(cause.actor, workspace)
        if len(self.columns) >= MAX_COLUMNS:
            raise Conflict(f"a project has at most {MAX_COLUMNS} columns")
        if column_id in self.column_ids():
            raise Conflict("that column exists")
        self._column_added(column_id=column_id, name=_column_name(name, self))

    @event("ProjectColumnAdded")
    def _column_added(self, column_id: str, name: str) -> None:
        self.columns.append({"id": column_id, "name": name})

    @caused
    def rename_column(self, column_id: str, name: str, workspace: Workspace, cause: Cause) -> None:
        self.check_can_manage(cause.actor, workspace)
        self.check_column(column_id)
        self._column_renamed(column_id=column_id, name=_column_name(name, self, column_id))

    @event("ProjectColumnRenamed")
    def _column_renamed(self, column_id: str, name: str) -> None:
        for column in self.columns:
            if column["id"] == column_id:
                column["name"] = name

    @caused
    def reorder_columns(self, column_ids: list[str], workspace: Workspace, cause: Cause) -> None:
        self.check_can_manage(cause.actor, workspace)
        if sorted(column_ids) != sorted(self.column_ids()) or len(set(column_ids)) != len(
            column_ids
        ):
            raise InvalidValue("name every column of the project once, in the new order")
        self._columns_reordered(column_ids=list(column_ids))

    @event("ProjectColumnsReordered")
    def _columns_reordered(self, column_ids: list[str]) -> None:
        by_id = {c["id"]: c for c in self.columns}
        self.columns = [by_id[c] for c in column_ids]


def _description(description: str | None) -> str:
    if description is None:
        return ""
    return bounded_text(
        description, field="description", max_length=MAX_PROJECT_DESCRIPTION, allow_empty=True
    )


def _column_name(name: str, project: Project, column_id: str | None = None) -> str:
    shown = shown_name(name, field="name", max_length=MAX_COLUMN_NAME)
    if any(c["name"] == shown and c["id"] != column_id for c in project.columns):
        raise Conflict("the project has a column of that name")
    return shown


def _listed(access: str, member_ids: list[str], workspace: Workspace, actor: str) -> list[str]:
    """The listed set, checked: workspace members only (another workspace's users do not
    exist here), the actor always among them so they keep sight of what they made."""
    if access not in ACCESS_MODES:
        raise InvalidValue(f"access is one of {', '.join(ACCESS_MODES)}")
    if access == ACCESS_WORKSPACE:
        if member_ids:
            raise InvalidValue("a project open to the workspace lists no members")
        return []
    if len(member_ids) > MAX_PROJECT_MEMBERS:
        raise InvalidValue(f"at most {MAX_PROJECT_MEMBERS} members")
    members = sorted({*member_ids, actor})
    for user_id in members:
        if not workspace.is_member(user_id):
            raise NotFound("that user is not a member of the workspace")
    return members
