"""Projects, their workflow and their tasks over HTTP (issue 21)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody
from litestar.response import Response

from api.commands import Created, Written, execute, reply
from api.errors import problems
from api.reads import (
    DEFAULT_LIMIT,
    check_limit,
    check_position,
    parse_cursor,
    read_cursor_async,
)
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
from domain.base import as_uuid
from domain.errors import InvalidValue, NotAMember, NotFound, PermissionDenied
from domain.projects import (
    MAX_COLUMN_ID,
    MAX_COLUMN_NAME,
    MAX_COLUMNS,
    MAX_PROJECT_DESCRIPTION,
    MAX_PROJECT_MEMBERS,
    MAX_PROJECT_NAME,
)
from domain.rules import check_text
from domain.tasks import (
    MAX_ASSIGNEES,
    MAX_LABEL,
    MAX_LABELS,
    MAX_TASK_TITLE,
    StaleNeighbour,
    normalise_due,
)
from projections import projects as views
from projections.log import log_end
from projections.queries import run_async
from projections.workspaces import permissions_of

Req = Request[str, Any, Any]
WRITE_ERRORS = problems(400, 401, 403, 404, 409, 410, 413, 422, 429)
READ_ERRORS = problems(401, 404, 422, 429)

# Limits on raw input are looser than the domain's (which strips white space first), so the
# domain gives the precise message; these only stop absurd sizes early.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROJECT_NAME * 2)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_PROJECT_DESCRIPTION * 2)]
ColumnId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_COLUMN_ID)]
ColumnName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_COLUMN_NAME * 2)]
Members = Annotated[list[Id], msgspec.Meta(max_length=MAX_PROJECT_MEMBERS)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TASK_TITLE * 2)]
Priority = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
Assignees = Annotated[list[Id], msgspec.Meta(max_length=MAX_ASSIGNEES)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL * 2)]
Labels = Annotated[list[Label], msgspec.Meta(max_length=MAX_LABELS)]
Due = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Estimate = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Clearable = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


class CreateProjectBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description | None = None
    access: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] = "workspace"
    member_ids: Members = []


class ChangeProjectBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    description: Description | None = None


class AccessBody(msgspec.Struct, forbid_unknown_fields=True):
    access: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    member_ids: Members = []


class ColumnBody(msgspec.Struct, forbid_unknown_fields=True):
    name: ColumnName


class ColumnOrderBody(msgspec.Struct, forbid_unknown_fields=True):
    column_ids: Annotated[list[ColumnId], msgspec.Meta(max_length=MAX_COLUMNS)]


class CreateTaskBody(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    status: ColumnId | None = None
    priority: Priority = "none"
    assignee_ids: Assignees = []
    due: Due | None = None
    labels: Labels = []
    parent_id: Id | None = None
    estimate: Estimate | None = None


class ChangeTaskBody(msgspec.Struct, forbid_unknown_fields=True):
    title: Title | None = None
    priority: Priority | None = None
    assignee_ids: Assignees | None = None
    due: Due | None = None
    labels: Labels | None = None
    parent_id: Id | None = None
    estimate: Estimate | None = None
    # Optional fields to empty: "due", "parent_id", "estimate".
    clear: Annotated[list[Clearable], msgspec.Meta(max_length=3)] = []


class MoveTaskBody(msgspec.Struct, forbid_unknown_fields=True):
    status: ColumnId
    after_id: Id | None = None
    before_id: Id | None = None


class Column(msgspec.Struct):
    id: str
    name: str


class ProjectView(msgspec.Struct):
    id: str
    workspace_id: str
    name: str
    description: str
    access: str
    member_ids: list[str]
    columns: list[Column]
    archived: bool
    created_at: datetime
    version: int


class ProjectList(msgspec.Struct):
    items: list[ProjectView]


class TaskView(msgspec.Struct):
    id: str
    project_id: str
    title: str
    status: str
    rank: str
    priority: str
    assignee_ids: list[str]
    due: datetime | None
    labels: list[str]
    parent_id: str | None
    estimate: int | None
    watcher_ids: list[str]
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    # What ``If-Match`` takes.
    version: int


class BoardColumn(msgspec.Struct):
    id: str
    name: str
    tasks: list[TaskView]


class Board(msgspec.Struct):
    id: str
    workspace_id: str
    name: str
    archived: bool
    version: int
    columns: list[BoardColumn]


class Moved(msgspec.Struct):
    position: int | None
    rank: str = msgspec.field(default="")


def _project_id(value: str) -> str:
    return str(as_uuid(value))


class ProjectController(Controller):
    path = "/api"
    tags = ["projects"]

    @post("/workspaces/{ws:str}/projects", operation_id="CreateProject", responses=WRITE_ERRORS)
    async def create(
        self, request: Req, ws: FromPath[str], data: JSONBody[CreateProjectBody]
    ) -> Response[Created]:
        """Creates a project (needs ``manage_projects``) with the default workflow (To do,
        In progress, Done). ``access``: ``workspace`` (every member reads it) or ``listed``
        (``member_ids``, the creator and the workspace's owners)."""
        cmd = CreateProject(
            workspace_id=ws,
            name=data.name,
            description=data.description,
            access=data.access,
            member_ids=list(data.member_ids),
        )
        return reply(await execute(request, cmd, request.user), Created)

    @get("/workspaces/{ws:str}/projects", operation_id="ListProjects", responses=READ_ERRORS)
    async def list_projects(
        self, request: Req, ws: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> ProjectList:
        """The workspace's projects I may read (404 for a workspace I am not in)."""
        workspace_id = str(as_uuid(ws))
        async with read_cursor_async(request, min_position) as cur:
            rows = await run_async(cur, views.list_visible_projects(workspace_id, request.user))
            if not rows:
                member = await run_async(cur, views.is_member(workspace_id, request.user))
                if not member:
                    raise NotAMember("unknown workspace")
        return ProjectList(items=[msgspec.convert(r, ProjectView) for r in rows])

    @get("/projects/{project:str}", operation_id="GetProject", responses=READ_ERRORS)
    async def show(
        self, request: Req, project: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> ProjectView:
        async with read_cursor_async(request, min_position) as cur:
            row = await run_async(cur, views.visible_project(_project_id(project), request.user))
        if row is None:
            raise NotFound("unknown project")
        return msgspec.convert(row, ProjectView)

    @patch("/projects/{project:str}", operation_id="ChangeProject", responses=WRITE_ERRORS)
    async def change(
        self, request: Req, project: FromPath[str], data: JSONBody[ChangeProjectBody]
    ) -> Response[Written]:
        """Renames and/or describes a project (needs ``manage_projects``)."""
        cmd = ChangeProject(project_id=project, name=data.name, description=data.description)
        return reply(await execute(request, cmd, request.user), Written)

    @put("/projects/{project:str}/access", operation_id="SetProjectAccess", responses=WRITE_ERRORS)
    async def set_access(
        self, request: Req, project: FromPath[str], data: JSONBody[AccessBody]
    ) -> Response[Written]:
        """Opens a project to the workspace or limits it to a listed set (``manage_projects``):
        those who lose access lose their ``/ws`` subscription to it at once."""
        cmd = SetProjectAccess(
            project_id=project, access=data.access, member_ids=list(data.member_ids)
        )
        return reply(await execute(request, cmd, request.user), Written)

    @post(
        "/projects/{project:str}/archive",
        operation_id="ArchiveProject",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def archive(self, request: Req, project: FromPath[str]) -> Response[Written]:
        """Archives a project: readable, its tasks no longer change."""
        cmd = ArchiveProject(project_id=project, archived=True)
        return reply(await execute(request, cmd, request.user), Written)

    @post(
        "/projects/{project:str}/unarchive",
        operation_id="UnarchiveProject",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def unarchive(self, request: Req, project: FromPath[str]) -> Response[Written]:
        cmd = ArchiveProject(project_id=project, archived=False)
        return reply(await execute(request, cmd, request.user), Written)

    @delete(
        "/projects/{project:str}",
        operation_id="DeleteProject",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def delete_project(self, request: Req, project: FromPath[str]) -> Response[Written]:
        """Deletes a project (``manage_projects``): nobody reads it or its tasks any more, its
        ``/ws`` subscriptions end; the log keeps it for the workspace's auditors."""
        cmd = DeleteProject(project_id=project)
        return reply(await execute(request, cmd, request.user), Written)

    # -- the workflow ----------------------------------------------------------------------

    @post(
        "/projects/{project:str}/columns",
        operation_id="AddProjectColumn",
        responses=WRITE_ERRORS,
    )
    async def add_column(
        self, request: Req, project: FromPath[str], data: JSONBody[ColumnBody]
    ) -> Response[Created]:
        """Adds a column at the end of the workflow (``manage_projects``)."""
        cmd = AddProjectColumn(project_id=project, name=data.name)
        return reply(await execute(request, cmd, request.user), Created)

    @patch(
        "/projects/{project:str}/columns/{column:str}",
        operation_id="RenameProjectColumn",
        responses=WRITE_ERRORS,
    )
    async def rename_column(
        self,
        request: Req,
        project: FromPath[str],
        column: FromPath[str],
        data: JSONBody[ColumnBody],
    ) -> Response[Written]:
        cmd = RenameProjectColumn(project_id=project, column_id=column[:64], name=data.name)
        return reply(await execute(request, cmd, request.user), Written)

    @put(
        "/projects/{project:str}/columns/order",
        operation_id="ReorderProjectColumns",
        responses=WRITE_ERRORS,
    )
    async def reorder_columns(
        self, request: Req, project: FromPath[str], data: JSONBody[ColumnOrderBody]
    ) -> Response[Written]:
        """Puts the columns in this order (every column named once)."""
        cmd = ReorderProjectColumns(project_id=project, column_ids=list(data.column_ids))
        return reply(await execute(request, cmd, request.user), Written)

    # -- the board and its tasks ------------------------------------------------------------

    @get("/projects/{project:str}/board", operation_id="GetBoard", responses=READ_ERRORS)
    async def board(
        self,
        request: Req,
        project: FromPath[str],
        at: FromQuery[int | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> Board:
        """The columns in workflow order, each with its tasks in board order. With ``at``
        (a log position; holders of ``view_audit`` in the workspace): the board as it stood
        then, folded from the log."""
        project_id = _project_id(project)
        # Checked here: the wait below takes the larger of the two, and would drop the other.
        check_position("min_position", min_position)
        if at is not None and at < 1:
            raise InvalidValue("at is a log position, 1 or more")
        async with read_cursor_async(request, max(min_position or 0, at or 0) or None) as cur:
            row = await run_async(cur, views.board(project_id, request.user))
            if at is not None:
                workspace = await run_async(cur, views.project_workspace(project_id))
                perms = (
                    None
                    if workspace is None
                    else await run_async(cur, permissions_of(workspace, request.user))
                )
                if perms is None or "view_audit" not in perms:
                    if row is None:
                        raise NotFound("unknown project")
                    raise PermissionDenied("the board as it was needs view_audit")
                row = await run_async(cur, views.board_at(project_id, at))
        if row is None:
            raise NotFound("unknown project")
        return msgspec.convert(row, Board)

    @post("/projects/{project:str}/tasks", operation_id="CreateTask", responses=WRITE_ERRORS)
    async def create_task(
        self, request: Req, project: FromPath[str], data: JSONBody[CreateTaskBody]
    ) -> Response[Created]:
        """Creates a task (``manage_tasks``) at the end of its column (``status``; the
        first column if left out). Its creator and assignees watch it."""
        project_id = _project_id(project)
        try:
            return await self._create_after_last(request, project_id, data, None)
        except StaleNeighbour:
            # The last card the read model knew moved meanwhile (someone else's write, which
            # the read did not wait for): once more, with the read models at the log's end.
            async with read_cursor_async(request, None) as cur:
                head = await run_async(cur, log_end())
            return await self._create_after_last(request, project_id, data, head)

    async def _create_after_last(
        self, request: Req, project_id: str, data: CreateTaskBody, min_position: int | None
    ) -> Response[Created]:
        async with read_cursor_async(request, min_position) as cur:
            row = await run_async(cur, views.visible_project(project_id, request.user))
            if row is None:
                raise NotFound("unknown project")
            column = data.status if data.status is not None else row["columns"][0]["id"]
            last = await run_async(cur, views.last_task_in_column(project_id, column))
        cmd = CreateTask(
            project_id=project_id,
            title=data.title,
            status=data.status,
            priority=data.priority,
            assignee_ids=list(data.assignee_ids),
            due=data.due,
            labels=list(data.labels),
            parent_id=data.parent_id,
            estimate=data.estimate,
            after_id=last,
        )
        return reply(await execute(request, cmd, request.user), Created)


class TaskPage(msgspec.Struct):
    items: list[TaskView]
    next: str | None


class TaskController(Controller):
    path = "/api/tasks"
    tags = ["projects"]

    @get("/", operation_id="ListTasks", responses=READ_ERRORS)
    async def list_tasks(
        self,
        request: Req,
        assignee: FromQuery[Annotated[str, msgspec.Meta(max_length=64)] | None] = None,
        status: FromQuery[Annotated[str, msgspec.Meta(max_length=MAX_COLUMN_ID)] | None] = None,
        label: FromQuery[Annotated[str, msgspec.Meta(max_length=MAX_LABEL * 2)] | None] = None,
        due_before: FromQuery[Annotated[str, msgspec.Meta(max_length=64)] | None] = None,
        limit: FromQuery[int] = DEFAULT_LIMIT,
        after: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> TaskPage:
        """Tasks of every project I read, across my workspaces, oldest first: ``assignee``
        (``me`` or a user id), ``status`` (a column id), ``label``, ``due_before`` (an ISO 8601
        instant with an offset). Pass ``next`` back as ``after`` for the next page."""
        check_limit(limit)
        # What reaches the database's text comparisons meets the text rule (NUL, controls).
        for name, text in (("status", status), ("label", label)):
            if text is not None:
                check_text(text, field=name)
        after_seq = parse_cursor(after, "after")
        who = request.user if assignee == "me" else assignee
        if who is not None:
            who = str(as_uuid(who))
        due = None if due_before is None else normalise_due(due_before)
        async with read_cursor_async(request, min_position) as cur:
            rows, next_seq = await run_async(
                cur,
                views.list_tasks(
                    request.user,
                    assignee=who,
                    status=status,
                    label=label,
                    due_before=due,
                    after=after_seq,
                    limit=limit,
                ),
            )
        return TaskPage(
            items=[msgspec.convert(r, TaskView) for r in rows],
            next=None if next_seq is None else str(next_seq),
        )

    @get("/{task:str}", operation_id="GetTask", responses=READ_ERRORS)
    async def show(
        self, request: Req, task: FromPath[str], min_position: FromQuery[int | None] = None
    ) -> TaskView:
        async with read_cursor_async(request, min_position) as cur:
            row = await run_async(cur, views.visible_task(str(as_uuid(task)), request.user))
        if row is None:
            raise NotFound("unknown task")
        return msgspec.convert(row, TaskView)

    @patch("/{task:str}", operation_id="ChangeTask", responses=WRITE_ERRORS)
    async def change(
        self,
        request: Req,
        task: FromPath[str],
        data: JSONBody[ChangeTaskBody],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Written]:
        """Changes the fields given (``manage_tasks``). With ``If-Match: <version>`` a task
        changed since is refused with 409 instead of overwritten."""
        cmd = ChangeTask(
            task_id=task,
            title=data.title,
            priority=data.priority,
            assignee_ids=None if data.assignee_ids is None else list(data.assignee_ids),
            due=data.due,
            labels=None if data.labels is None else list(data.labels),
            parent_id=data.parent_id,
            estimate=data.estimate,
            clear=list(data.clear),
            expected_version=version_of(if_match),
        )
        return reply(await execute(request, cmd, request.user), Written)

    @post("/{task:str}/move", operation_id="MoveTask", status_code=200, responses=WRITE_ERRORS)
    async def move(
        self,
        request: Req,
        task: FromPath[str],
        data: JSONBody[MoveTaskBody],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Moved]:
        """Moves the card into column ``status`` between ``after_id`` and ``before_id``
        (either may be left out: the column's start or end). Only the moved task is written;
        a neighbour that is no longer in that column, or a stale ``If-Match``, gets 409."""
        cmd = MoveTask(
            task_id=task,
            status=data.status,
            after_id=data.after_id,
            before_id=data.before_id,
            expected_version=version_of(if_match),
        )
        return reply(await execute(request, cmd, request.user), Moved)

    @delete("/{task:str}", operation_id="DeleteTask", status_code=200, responses=WRITE_ERRORS)
    async def delete_task(
        self,
        request: Req,
        task: FromPath[str],
        if_match: Annotated[str | None, HeaderParameter(name="If-Match")] = None,
    ) -> Response[Written]:
        cmd = DeleteTask(task_id=task, expected_version=version_of(if_match))
        return reply(await execute(request, cmd, request.user), Written)

    @put("/{task:str}/watch", operation_id="WatchTask", responses=WRITE_ERRORS)
    async def watch(self, request: Req, task: FromPath[str]) -> Response[Written]:
        """Starts watching a task (anyone who reads its project); ``position`` is null when
        already watching."""
        return reply(await execute(request, WatchTask(task_id=task), request.user), Written)

    @delete(
        "/{task:str}/watch", operation_id="UnwatchTask", status_code=200, responses=WRITE_ERRORS
    )
    async def unwatch(self, request: Req, task: FromPath[str]) -> Response[Written]:
        return reply(await execute(request, UnwatchTask(task_id=task), request.user), Written)


def version_of(if_match: str | None) -> int | None:
    """The version an ``If-Match`` names ("3", "\\"3\\"" or W/"3")."""
    if if_match is None:
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise InvalidValue('If-Match must be a task version such as "3"')
    return int(value)
