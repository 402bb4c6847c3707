"""Handlers of project and task commands (issue 21)."""

from __future__ import annotations

from uuid import UUID, uuid4

from application.commands import (
    AddProjectColumn,
    ArchiveProject,
    ChangeProject,
    ChangeTask,
    CreateProject,
    CreateTask,
    DeleteProject,
    DeleteTask,
    MoveTask,
    RenameProjectColumn,
    ReorderProjectColumns,
    SetProjectAccess,
    UnwatchTask,
    WatchTask,
)
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause, as_uuid
from domain.errors import InvalidValue, NotFound
from domain.fractional_index import key_between
from domain.projects import Project
from domain.tasks import MAX_DEPTH, StaleNeighbour, Task, TaskFields, check_parent
from domain.workspaces import Workspace

# This context's command handlers, joined with the others' in application/handlers.py.
HANDLERS = HandlerTable()


def project_with_workspace(
    app: DecisionContext, project_id: str | UUID, user_id: str
) -> tuple[Project, Workspace]:
    """A project the user may read, and its workspace (404 as an unknown id otherwise)."""
    project = app.load(Project, project_id)
    workspace = app.load(Workspace, project.workspace_id)
    project.check_can_view(user_id, workspace)
    return project, workspace


def task_in_project(
    app: DecisionContext, task_id: str | UUID, user_id: str
) -> tuple[Task, Project, Workspace]:
    """A task of a project the user may read (404 as an unknown id otherwise)."""
    task = app.load(Task, task_id)
    try:
        project, workspace = project_with_workspace(app, task.project_id, user_id)
    except NotFound:
        raise NotFound("unknown task") from None
    return task, project, workspace


# -- projects ------------------------------------------------------------------------------


@HANDLERS.on(CreateProject)
def create_project(app: DecisionContext, cmd: CreateProject, cause: Cause) -> Decision:
    workspace = app.load(Workspace, cmd.workspace_id)
    workspace.check_member(cause.actor)
    members = [str(as_uuid(m)) for m in cmd.member_ids]
    project = Project.create(
        uuid4(), workspace, cmd.name, cmd.description, cmd.access, members, cause
    )
    return Decision([project], {"id": str(project.id)}, status=201)


@HANDLERS.on(ChangeProject)
def change_project(app: DecisionContext, cmd: ChangeProject, cause: Cause) -> Decision:
    project, workspace = project_with_workspace(app, cmd.project_id, cause.actor)
    if cmd.name is None and cmd.description is None:
        raise InvalidValue("nothing to change: give a name or a description")
    if cmd.name is not None:
        project.rename(cmd.name, workspace, cause)
    if cmd.description is not None:
        project.describe(cmd.description, workspace, cause)
    return Decision([project])


@HANDLERS.on(SetProjectAccess)
def set_project_access(app: DecisionContext, cmd: SetProjectAccess, cause: Cause) -> Decision:
    project, workspace = project_with_workspace(app, cmd.project_id, cause.actor)
    members = [str(as_uuid(m)) for m in cmd.member_ids]
    project.set_access(cmd.access, members, workspace, cause)
    return Decision([project])


@HANDLERS.on(ArchiveProject)
def archive_project(app: DecisionContext, cmd: ArchiveProject, cause: Cause) -> Decision:
    project, workspace = project_with_workspace(app, cmd.project_id, cause.actor)
    project.archive(cmd.archived, workspace, cause)
    return Decision([project])


@HANDLERS.on(DeleteProject)
def delete_project(app: DecisionContext, cmd: DeleteProject, cause: Cause) -> Decision:
    project, workspace = project_with_workspace(app, cmd.project_id, cause.actor)
    project.delete(workspace, cause)
    return Decision([project])


@HANDLERS.on(AddProjectColumn)
def add_project_column(app: DecisionContext, cmd: AddProjectColumn, cause: Cause) -> Decision:
    project, workspace = project_with_workspace(app, cmd.project_id, cause.actor)
    column_id = uuid4().hex[:12]
    project.add_column(column_id, cmd.name, workspace, cause)
    return Decision([project], {"id": column_id}, status=201)


@HANDLERS.on(RenameProjectColumn)
def rename_project_column(app: DecisionContext, cmd: RenameProjectColumn, cause: Cause) -> Decision:
    project, workspace = project_with_workspace(app, cmd.project_id, cause.actor)
    project.rename_column(cmd.column_id, cmd.name, workspace, cause)
    return Decision([project])


@HANDLERS.on(ReorderProjectColumns)
def reorder_project_columns(
    app: DecisionContext, cmd: ReorderProjectColumns, cause: Cause
) -> Decision:
    project, workspace = project_with_workspace(app, cmd.project_id, cause.actor)
    project.reorder_columns(list(cmd.column_ids), workspace, cause)
    return Decision([project])


# -- tasks ---------------------------------------------------------------------------------


def _neighbour(
    app: DecisionContext, task_id: str | None, project: Project, column: str, moving: UUID | None
) -> str | None:
    """The order key of a neighbour card: a live task of the same project and column (else
    409: the board changed since the client read it)."""
    if task_id is None:
        return None
    try:
        task = app.load(Task, task_id, "neighbour task")
    except NotFound:
        raise NotFound("unknown neighbour task") from None
    if task.project_id != project.id or task.id == moving:
        # Another project's (another workspace's) card answers as an unknown id.
        raise NotFound("unknown neighbour task")
    if task.is_deleted or task.status != column:
        raise StaleNeighbour("the neighbour moved or was deleted: reload the board")
    return task.rank


def _checked_parent(
    app: DecisionContext, parent_id: str | None, project: Project, task_id: UUID | None
) -> None:
    if parent_id is None:
        return
    try:
        parent = app.load(Task, parent_id, "parent task")
    except NotFound:
        raise NotFound("unknown parent task") from None
    if parent.project_id != project.id:
        raise NotFound("unknown parent task")
    ancestors: list[Task] = []
    current = parent
    while current.parent_id is not None and len(ancestors) < MAX_DEPTH:
        current = app.load(Task, current.parent_id, "parent task")
        ancestors.append(current)
    check_parent(task_id, parent, ancestors)


@HANDLERS.on(CreateTask)
def create_task(app: DecisionContext, cmd: CreateTask, cause: Cause) -> Decision:
    project, workspace = project_with_workspace(app, cmd.project_id, cause.actor)
    fields = TaskFields(
        cmd.title,
        cmd.priority,
        cmd.assignee_ids,
        cmd.due,
        cmd.labels,
        cmd.parent_id,
        cmd.estimate,
    )
    project.check_can_change_tasks(cause.actor, workspace)
    status = project.column_ids()[0] if cmd.status is None else project.check_column(cmd.status)
    _checked_parent(app, fields.parent_id, project, None)
    rank = key_between(_neighbour(app, cmd.after_id, project, status, None), None)
    task = Task.create(uuid4(), project, workspace, fields, status, rank, cause)
    return Decision([task], {"id": str(task.id)}, status=201)


CLEARABLE = ("due", "parent_id", "estimate")


@HANDLERS.on(ChangeTask)
def change_task(app: DecisionContext, cmd: ChangeTask, cause: Cause) -> Decision:
    task, project, workspace = task_in_project(app, cmd.task_id, cause.actor)
    unknown = set(cmd.clear) - set(CLEARABLE)
    if unknown or len(cmd.clear) > len(CLEARABLE):
        raise InvalidValue(f"clear names some of {', '.join(CLEARABLE)}")
    given = {"due": cmd.due, "parent_id": cmd.parent_id, "estimate": cmd.estimate}
    if any(given[name] is not None for name in cmd.clear):
        raise InvalidValue("a field is given and cleared at once")
    now = task.fields()

    def pick(name: str, value: object) -> object:
        if name in cmd.clear:
            return None
        return getattr(now, name) if value is None else value

    fields = TaskFields(
        cmd.title if cmd.title is not None else now.title,
        cmd.priority if cmd.priority is not None else now.priority,
        cmd.assignee_ids if cmd.assignee_ids is not None else now.assignee_ids,
        pick("due", cmd.due),  # type: ignore[arg-type]
        cmd.labels if cmd.labels is not None else now.labels,
        pick("parent_id", cmd.parent_id),  # type: ignore[arg-type]
        pick("estimate", cmd.estimate),  # type: ignore[arg-type]
    )
    if fields.parent_id is not None and fields.parent_id != task.parent_id:
        _checked_parent(app, fields.parent_id, project, task.id)
    task.change(fields, project, workspace, cause, cmd.expected_version)
    return Decision([task])


@HANDLERS.on(MoveTask)
def move_task(app: DecisionContext, cmd: MoveTask, cause: Cause) -> Decision:
    task, project, workspace = task_in_project(app, cmd.task_id, cause.actor)
    project.check_can_change_tasks(cause.actor, workspace)
    task.check_live()
    task.check_version(cmd.expected_version)
    status = project.check_column(cmd.status)
    after = _neighbour(app, cmd.after_id, project, status, task.id)
    before = _neighbour(app, cmd.before_id, project, status, task.id)
    task.move(status, key_between(after, before), project, workspace, cause)
    return Decision([task], {"rank": task.rank})


@HANDLERS.on(DeleteTask)
def delete_task(app: DecisionContext, cmd: DeleteTask, cause: Cause) -> Decision:
    task, project, workspace = task_in_project(app, cmd.task_id, cause.actor)
    task.delete(project, workspace, cause, cmd.expected_version)
    return Decision([task])


@HANDLERS.on(WatchTask)
def watch_task(app: DecisionContext, cmd: WatchTask, cause: Cause) -> Decision:
    task, project, workspace = task_in_project(app, cmd.task_id, cause.actor)
    return Decision([task] if task.watch(project, workspace, cause) else [])


@HANDLERS.on(UnwatchTask)
def unwatch_task(app: DecisionContext, cmd: UnwatchTask, cause: Cause) -> Decision:
    task, project, workspace = task_in_project(app, cmd.task_id, cause.actor)
    return Decision([task] if task.unwatch(project, workspace, cause) else [])
