"""Tasks: the cards of a project's board (issue 21).

A task lives in its project (its stream kind names the project as its scope's "channel": see
domain/projects.py), in one of the project's columns (its ``status``), at an order key
(``rank``, domain/fractional_index.py) that sorts it among that column's cards: a move writes
the moved task alone. Changes, moves and deletions may name the version the client last saw
(``If-Match``): a stale one is refused (409) instead of overwriting a newer change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import Conflict, Gone, InvalidValue, NotFound
from domain.fractional_index import check_key
from domain.projects import Project
from domain.rules import shown_name
from domain.scopes import CHANNEL_READERS, StreamKind
from domain.workspaces import Workspace

MAX_TASK_TITLE = 300
MAX_ASSIGNEES = 20
MAX_LABELS = 20
MAX_LABEL = 40
MAX_ESTIMATE = 1_000_000
# How deep subtasks nest: deep enough for any plan, shallow enough that a cycle check is a
# handful of loads.
MAX_DEPTH = 8
MAX_WATCHERS = 1000
PRIORITIES = ("none", "low", "medium", "high", "urgent")
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


class StaleNeighbour(Conflict):
    """A neighbour card named for a move or a new card is no longer in that column."""


class Task(ChorusAggregate):
    """A task of a project."""

    stream_kind = StreamKind(
        "task", CHANNEL_READERS, workspace="workspace_id", channel="project_id"
    )

    @classmethod
    @caused
    def create(
        cls,
        id: UUID,
        project: Project,
        workspace: Workspace,
        fields: TaskFields,
        status: str | None,
        rank: str,
        cause: Cause,
    ) -> Task:
        actor = cause.actor
        project.check_can_change_tasks(actor, workspace)
        column = project.check_column(status) if status is not None else project.column_ids()[0]
        fields.check(project, workspace)
        return cls(
            id=id,
            workspace_id=workspace.id,
            project_id=project.id,
            title=fields.title,
            status=column,
            rank=check_key(rank),
            priority=fields.priority,
            assignee_ids=fields.assignee_ids,
            due=fields.due,
            labels=fields.labels,
            parent_id=fields.parent_id,
            estimate=fields.estimate,
            watcher_ids=sorted({actor, *fields.assignee_ids}),
        )

    @event("TaskCreated")
    def __init__(
        self,
        id: UUID,
        workspace_id: UUID,
        project_id: UUID,
        title: str,
        status: str,
        rank: str,
        priority: str,
        assignee_ids: list[str],
        due: str | None,
        labels: list[str],
        parent_id: str | None,
        estimate: int | None,
        watcher_ids: list[str],
    ) -> None:
        self.workspace_id = workspace_id
        self.project_id = project_id
        self.title = title
        self.status = status
        self.rank = rank
        self.priority = priority
        self.assignee_ids = list(assignee_ids)
        self.due = due
        self.labels = list(labels)
        self.parent_id = parent_id
        self.estimate = estimate
        self.watcher_ids = list(watcher_ids)
        self.is_deleted = False

    def fields(self) -> TaskFields:
        return TaskFields(
            self.title,
            self.priority,
            list(self.assignee_ids),
            self.due,
            list(self.labels),
            self.parent_id,
            self.estimate,
        )

    def check_version(self, expected_version: int | None) -> None:
        if expected_version is not None and expected_version != self.version:
            raise Conflict(f"the task is at version {self.version}, not {expected_version}")

    def check_live(self) -> None:
        if self.is_deleted:
            raise Gone("the task was deleted")

    # -- changes -------------------------------------------------------------------------

    @caused
    def change(
        self,
        fields: TaskFields,
        project: Project,
        workspace: Workspace,
        cause: Cause,
        expected_version: int | None = None,
    ) -> None:
        project.check_can_change_tasks(cause.actor, workspace)
        self.check_live()
        self.check_version(expected_version)
        fields.check(project, workspace, tuple(self.assignee_ids))
        if fields.parent_id == str(self.id):
            raise InvalidValue("a task cannot be its own parent")
        if fields == self.fields():
            raise InvalidValue("nothing to change")
        # New assignees start watching; nobody stops watching by being unassigned.
        added = [a for a in fields.assignee_ids if a not in self.watcher_ids]
        if len(self.watcher_ids) + len(added) > MAX_WATCHERS:
            raise Conflict(f"a task has at most {MAX_WATCHERS} watchers")
        self._changed(
            title=fields.title,
            priority=fields.priority,
            assignee_ids=fields.assignee_ids,
            due=fields.due,
            labels=fields.labels,
            parent_id=fields.parent_id,
            estimate=fields.estimate,
            watcher_ids=[*self.watcher_ids, *added],
        )

    @event("TaskChanged")
    def _changed(
        self,
        title: str,
        priority: str,
        assignee_ids: list[str],
        due: str | None,
        labels: list[str],
        parent_id: str | None,
        estimate: int | None,
        watcher_ids: list[str],
    ) -> None:
        self.title = title
        self.priority = priority
        self.assignee_ids = list(assignee_ids)
        self.due = due
        self.labels = list(labels)
        self.parent_id = parent_id
        self.estimate = estimate
        self.watcher_ids = list(watcher_ids)

    @caused
    def move(
        self,
        status: str,
        rank: str,
        project: Project,
        workspace: Workspace,
        cause: Cause,
        expected_version: int | None = None,
    ) -> None:
        project.check_can_change_tasks(cause.actor, workspace)
        self.check_live()
        self.check_version(expected_version)
        self._moved(status=project.check_column(status), rank=check_key(rank))

    @event("TaskMoved")
    def _moved(self, status: str, rank: str) -> None:
        self.status = status
        self.rank = rank

    @caused
    def delete(
        self,
        project: Project,
        workspace: Workspace,
        cause: Cause,
        expected_version: int | None = None,
    ) -> None:
        project.check_can_change_tasks(cause.actor, workspace)
        self.check_live()
        self.check_version(expected_version)
        self._deleted()

    @event("TaskDeleted")
    def _deleted(self) -> None:
        self.is_deleted = True

    # -- watchers ("subscribers"): anyone who reads the project ---------------------------

    @caused
    def watch(self, project: Project, workspace: Workspace, cause: Cause) -> bool:
        """Starts watching; False (nothing written) when already watching."""
        project.check_can_view(cause.actor, workspace)
        self.check_live()
        if cause.actor in self.watcher_ids:
            return False
        if len(self.watcher_ids) >= MAX_WATCHERS:
            raise Conflict(f"a task has at most {MAX_WATCHERS} watchers")
        self._watched(user_id=cause.actor)
        return True

    @event("TaskWatched")
    def _watched(self, user_id: str) -> None:
        self.watcher_ids.append(user_id)

    @caused
    def unwatch(self, project: Project, workspace: Workspace, cause: Cause) -> bool:
        project.check_can_view(cause.actor, workspace)
        self.check_live()
        if cause.actor not in self.watcher_ids:
            return False
        self._unwatched(user_id=cause.actor)
        return True

    @event("TaskUnwatched")
    def _unwatched(self, user_id: str) -> None:
        self.watcher_ids.remove(user_id)


class TaskFields:
    """A task's editable fields, normalised and bounded (the project-dependent checks are
    ``check``'s)."""

    def __init__(
        self,
        title: str,
        priority: str = "none",
        assignee_ids: list[str] | None = None,
        due: str | None = None,
        labels: list[str] | None = None,
        parent_id: str | None = None,
        estimate: int | None = None,
    ) -> None:
        self.title = shown_name(title, field="title", max_length=MAX_TASK_TITLE)
        if priority not in PRIORITIES:
            raise InvalidValue(f"priority is one of {', '.join(PRIORITIES)}")
        self.priority = priority
        assignees = list(assignee_ids or [])
        if len(assignees) > MAX_ASSIGNEES:
            raise InvalidValue(f"at most {MAX_ASSIGNEES} assignees")
        self.assignee_ids = sorted({str(_uuid(a, "assignee")) for a in assignees})
        self.due = None if due is None else normalise_due(due)
        given = list(labels or [])
        if len(given) > MAX_LABELS:
            raise InvalidValue(f"at most {MAX_LABELS} labels")
        self.labels = sorted({shown_name(x, field="label", max_length=MAX_LABEL) for x in given})
        self.parent_id = None if parent_id is None else str(_uuid(parent_id, "parent task"))
        if estimate is not None and not 0 <= estimate <= MAX_ESTIMATE:
            raise InvalidValue(f"the estimate is a whole number from 0 to {MAX_ESTIMATE}")
        self.estimate = estimate

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskFields) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def check(self, project: Project, workspace: Workspace, already: tuple[str, ...] = ()) -> None:
        """New assignees are members who can read the project (one assigned before who lost
        access since does not block other changes)."""
        for user_id in self.assignee_ids:
            if user_id not in already and not project.can_view(user_id, workspace):
                # Whoever cannot read the project is not someone to hand work to here.
                raise NotFound("an assignee is not a member who can read the project")


def check_parent(task_id: UUID | None, parent: Task, ancestors: list[Task]) -> None:
    """The parent is a live task of the same project, and making it one makes no cycle:
    ``ancestors`` are the parent's own parents, nearest first (the handler loads them)."""
    parent.check_live()
    chain = [parent, *ancestors]
    if task_id is not None and any(t.id == task_id for t in chain):
        raise InvalidValue("a task cannot be a subtask of its own subtask")
    if len(chain) >= MAX_DEPTH:
        raise InvalidValue(f"subtasks nest at most {MAX_DEPTH} deep")


def normalise_due(value: str) -> str:
    """An ISO 8601 instant with its offset (a due date means a moment somewhere), as UTC."""
    if len(value) > 64:
        raise InvalidValue("due is an ISO 8601 date and time with an offset")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidValue("due is an ISO 8601 date and time with an offset") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidValue("due needs a time zone offset, e.g. 2027-01-31T17:00:00+01:00")
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        # Year 1 at +14:00 is before the first instant Python can name in UTC.
        raise InvalidValue("due is out of range") from None
    if not _EARLIEST <= utc < _LATEST:
        raise InvalidValue("due is out of range")
    return utc.isoformat()


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"unknown {what}") from None
