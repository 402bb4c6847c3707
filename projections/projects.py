"""Read models of projects and their tasks (issue 21): the project list, a project's listed
members, and the board (each column's live tasks in order key order)."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor
from psycopg.types.json import Jsonb

from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement

# Order keys compare byte-wise (domain/fractional_index.py): never by a locale's collation.
_TASK_COLUMNS = (
    "t.task_id::text AS id, t.project_id::text, t.title, t.status, t.rank, t.priority,"
    " t.assignee_ids, t.due, t.labels, t.parent_id, t.estimate, t.watcher_ids,"
    " t.created_by::text, t.created_at, t.updated_at, t.version"
)


class ProjectsProjection(EventProjection):
    name = "projects"
    tables = ("rm_projects", "rm_project_members", "rm_tasks")
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_projects (
        project_id uuid PRIMARY KEY,
        workspace_id uuid NOT NULL,
        name text NOT NULL,
        description text NOT NULL,
        access text NOT NULL,
        columns jsonb NOT NULL,
        archived boolean NOT NULL DEFAULT false,
        created_by uuid,
        created_at timestamptz NOT NULL,
        version integer NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rm_projects_workspace ON rm_projects (workspace_id);
    CREATE TABLE IF NOT EXISTS rm_project_members (
        project_id uuid NOT NULL,
        user_id uuid NOT NULL,
        PRIMARY KEY (project_id, user_id)
    );
    CREATE TABLE IF NOT EXISTS rm_tasks (
        task_id uuid PRIMARY KEY,
        project_id uuid NOT NULL,
        workspace_id uuid NOT NULL,
        title text NOT NULL,
        status text NOT NULL,
        rank text COLLATE "C" NOT NULL,
        priority text NOT NULL,
        assignee_ids text[] NOT NULL,
        due timestamptz,
        labels text[] NOT NULL,
        parent_id text,
        estimate integer,
        watcher_ids text[] NOT NULL,
        created_by uuid,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        version integer NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rm_tasks_board ON rm_tasks (project_id, status, rank, task_id);
    """
    handles = frozenset(
        {
            "ProjectCreated",
            "ProjectRenamed",
            "ProjectDescribed",
            "ProjectAccessChanged",
            "ProjectArchived",
            "ProjectUnarchived",
            "ProjectDeleted",
            "ProjectColumnAdded",
            "ProjectColumnRenamed",
            "ProjectColumnsReordered",
            "TaskCreated",
            "TaskChanged",
            "TaskMoved",
            "TaskDeleted",
            "TaskWatched",
            "TaskUnwatched",
        }
    )

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d, stream = event.data, event.stream
        if event.type.startswith("Project"):
            self._project(cur, event, d, stream)
        else:
            self._task(cur, event, d, stream)

    def _project(self, cur: Cursor[Any], event: LogEvent, d: dict[str, Any], p: Any) -> None:
        version = (event.version, p)
        match event.type:
            case "ProjectCreated":
                cur.execute(
                    "INSERT INTO rm_projects (project_id, workspace_id, name, description,"
                    " access, columns, created_by, created_at, version)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        p,
                        d["workspace_id"],
                        d["name"],
                        d["description"],
                        d["access"],
                        Jsonb(d["columns"]),
                        event.actor,
                        event.at,
                        event.version,
                    ),
                )
                _members(cur, p, d["member_ids"])
            case "ProjectRenamed":
                cur.execute(
                    "UPDATE rm_projects SET name = %s, version = %s WHERE project_id = %s",
                    (d["name"], *version),
                )
            case "ProjectDescribed":
                cur.execute(
                    "UPDATE rm_projects SET description = %s, version = %s WHERE project_id = %s",
                    (d["description"], *version),
                )
            case "ProjectAccessChanged":
                cur.execute(
                    "UPDATE rm_projects SET access = %s, version = %s WHERE project_id = %s",
                    (d["access"], *version),
                )
                cur.execute("DELETE FROM rm_project_members WHERE project_id = %s", (p,))
                _members(cur, p, d["member_ids"])
            case "ProjectArchived" | "ProjectUnarchived":
                cur.execute(
                    "UPDATE rm_projects SET archived = %s, version = %s WHERE project_id = %s",
                    (event.type == "ProjectArchived", *version),
                )
            case "ProjectDeleted":
                # Out of every reader's reach; the log keeps it (and its tasks) for auditors.
                cur.execute("DELETE FROM rm_tasks WHERE project_id = %s", (p,))
                cur.execute("DELETE FROM rm_project_members WHERE project_id = %s", (p,))
                cur.execute("DELETE FROM rm_projects WHERE project_id = %s", (p,))
            case "ProjectColumnAdded":
                column = {"id": d["column_id"], "name": d["name"]}
                cur.execute(
                    "UPDATE rm_projects SET columns = columns || %s, version = %s"
                    " WHERE project_id = %s",
                    (Jsonb([column]), *version),
                )
            case "ProjectColumnRenamed":
                cur.execute(
                    "UPDATE rm_projects SET columns = (SELECT jsonb_agg(CASE WHEN c->>'id' = %s"
                    "   THEN jsonb_set(c, '{name}', to_jsonb(%s::text)) ELSE c END"
                    "   ORDER BY i) FROM jsonb_array_elements(columns) WITH ORDINALITY AS x(c, i)),"
                    " version = %s WHERE project_id = %s",
                    (d["column_id"], d["name"], *version),
                )
            case "ProjectColumnsReordered":
                cur.execute(
                    "UPDATE rm_projects SET columns = (SELECT jsonb_agg(c ORDER BY o.i)"
                    "   FROM jsonb_array_elements(columns) AS c"
                    "   JOIN unnest(%s::text[]) WITH ORDINALITY AS o(id, i) ON o.id = c->>'id'),"
                    " version = %s WHERE project_id = %s",
                    (d["column_ids"], *version),
                )

    def _task(self, cur: Cursor[Any], event: LogEvent, d: dict[str, Any], t: Any) -> None:
        match event.type:
            case "TaskCreated":
                cur.execute(
                    "INSERT INTO rm_tasks (task_id, project_id, workspace_id, title, status,"
                    " rank, priority, assignee_ids, due, labels, parent_id, estimate,"
                    " watcher_ids, created_by, created_at, updated_at, version)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " %s)",
                    (
                        t,
                        d["project_id"],
                        d["workspace_id"],
                        d["title"],
                        d["status"],
                        d["rank"],
                        d["priority"],
                        d["assignee_ids"],
                        d["due"],
                        d["labels"],
                        d["parent_id"],
                        d["estimate"],
                        d["watcher_ids"],
                        event.actor,
                        event.at,
                        event.at,
                        event.version,
                    ),
                )
            case "TaskChanged":
                cur.execute(
                    "UPDATE rm_tasks SET title = %s, priority = %s, assignee_ids = %s, due = %s,"
                    " labels = %s, parent_id = %s, estimate = %s, watcher_ids = %s,"
                    " updated_at = %s, version = %s WHERE task_id = %s",
                    (
                        d["title"],
                        d["priority"],
                        d["assignee_ids"],
                        d["due"],
                        d["labels"],
                        d["parent_id"],
                        d["estimate"],
                        d["watcher_ids"],
                        event.at,
                        event.version,
                        t,
                    ),
                )
            case "TaskMoved":
                cur.execute(
                    "UPDATE rm_tasks SET status = %s, rank = %s, updated_at = %s, version = %s"
                    " WHERE task_id = %s",
                    (d["status"], d["rank"], event.at, event.version, t),
                )
            case "TaskDeleted":
                cur.execute("DELETE FROM rm_tasks WHERE task_id = %s", (t,))
            case "TaskWatched":
                cur.execute(
                    "UPDATE rm_tasks SET watcher_ids = array_append(watcher_ids, %s),"
                    " version = %s WHERE task_id = %s",
                    (d["user_id"], event.version, t),
                )
            case "TaskUnwatched":
                cur.execute(
                    "UPDATE rm_tasks SET watcher_ids = array_remove(watcher_ids, %s),"
                    " version = %s WHERE task_id = %s",
                    (d["user_id"], event.version, t),
                )


def _members(cur: Cursor[Any], project: Any, member_ids: list[str]) -> None:
    cur.executemany(
        "INSERT INTO rm_project_members (project_id, user_id) VALUES (%s, %s)",
        [(project, uid) for uid in member_ids],
    )


# -- queries ---------------------------------------------------------------------------------

_PROJECT_COLUMNS = (
    "p.project_id::text AS id, p.workspace_id::text, p.name, p.description, p.access,"
    " p.columns, p.archived, p.created_at, p.version,"
    " ARRAY(SELECT pm.user_id::text FROM rm_project_members pm"
    "   WHERE pm.project_id = p.project_id ORDER BY pm.user_id) AS member_ids"
)
# Who reads a project, as domain/projects.py's Project.can_view says: members of its
# workspace, of a listed project only those listed and the workspace's owners.
_READABLE = (
    " EXISTS (SELECT 1 FROM rm_workspace_members m WHERE m.workspace_id = p.workspace_id"
    "   AND m.user_id = %(u)s AND (p.access = 'workspace' OR 'owner' = ANY(m.roles)"
    "   OR EXISTS (SELECT 1 FROM rm_project_members pm WHERE pm.project_id = p.project_id"
    "     AND pm.user_id = %(u)s)))"
)


def visible_project(project_id: str, user_id: str) -> Query[dict[str, Any] | None]:
    """The project if the user may read it (None: as an unknown id)."""
    rows = yield Statement(
        f"SELECT {_PROJECT_COLUMNS} FROM rm_projects p WHERE p.project_id = %(p)s AND {_READABLE}",
        {"p": project_id, "u": user_id},
    )
    return rows[0] if rows else None


def list_visible_projects(workspace_id: str, user_id: str) -> Query[list[dict[str, Any]]]:
    return (
        yield Statement(
            f"SELECT {_PROJECT_COLUMNS} FROM rm_projects p"
            f" WHERE p.workspace_id = %(w)s AND {_READABLE}"
            " ORDER BY p.created_at, p.project_id",
            {"w": workspace_id, "u": user_id},
        )
    )


def visible_task(task_id: str, user_id: str) -> Query[dict[str, Any] | None]:
    """The task if the user may read its project."""
    rows = yield Statement(
        f"SELECT {_TASK_COLUMNS} FROM rm_tasks t JOIN rm_projects p ON p.project_id = t.project_id"
        f" WHERE t.task_id = %(t)s AND {_READABLE}",
        {"t": task_id, "u": user_id},
    )
    return rows[0] if rows else None


def board(project_id: str, user_id: str) -> Query[dict[str, Any] | None]:
    """The project and its columns, each with its live tasks in order (order key, then task
    id: two cards moved to one spot at once get the same key, and every reader still sees
    one order)."""
    project = yield from visible_project(project_id, user_id)
    if project is None:
        return None
    tasks = yield Statement(
        f"SELECT {_TASK_COLUMNS} FROM rm_tasks t WHERE t.project_id = %s"
        " ORDER BY t.status, t.rank, t.task_id",
        (project_id,),
    )
    by_column: dict[str, list[dict[str, Any]]] = {c["id"]: [] for c in project["columns"]}
    for task in tasks:
        by_column.setdefault(task["status"], []).append(task)
    columns = [{**c, "tasks": by_column[c["id"]]} for c in project["columns"]]
    return {**project, "columns": columns}


def last_task_in_column(project_id: str, column: str) -> Query[str | None]:
    rows = yield Statement(
        "SELECT task_id::text AS id FROM rm_tasks WHERE project_id = %s AND status = %s"
        " ORDER BY rank DESC, task_id DESC LIMIT 1",
        (project_id, column),
    )
    return rows[0]["id"] if rows else None


def is_member(workspace_id: str, user_id: str) -> Query[bool]:
    rows = yield Statement(
        "SELECT 1 FROM rm_workspace_members WHERE workspace_id = %s AND user_id = %s",
        (workspace_id, user_id),
    )
    return bool(rows)
