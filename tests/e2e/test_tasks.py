"""Tasks (issue 21, point 2) over real HTTP: their fields, the board order a move changes by
writing the moved task alone, ``If-Match`` (409 on a stale version), watchers, subtasks,
``manage_tasks`` and hostile input (4xx, nothing appended)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.fixtures.chorus import Api, Running, User


def _project(api: Api, owner: User, *members: User, **body: Any) -> tuple[str, str]:
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "W", "visibility": "public"}), 201)
    for m in members:
        api.ok(api.post(f"/api/workspaces/{ws['id']}/join", m))
    created = api.post(f"/api/workspaces/{ws['id']}/projects", owner, {"name": "P", **body})
    return ws["id"], api.ok(created, 201)["id"]


def _task(api: Api, project: str, user: User, **body: Any) -> str:
    created = api.post(f"/api/projects/{project}/tasks", user, {"title": "T", **body})
    return str(api.ok(created, 201)["id"])


def _column(api: Api, project: str, user: User, column: str) -> list[str]:
    board = api.ok(api.get(f"/api/projects/{project}/board", user))
    return [t["id"] for c in board["columns"] if c["id"] == column for t in c["tasks"]]


def test_a_task_has_its_fields_and_its_creator_and_assignees_watch_it(chorus: Running) -> None:
    api = chorus.api
    owner, ada = api.signup("town"), api.signup("tada")
    _, p = _project(api, owner, ada)
    parent = _task(api, p, owner, title="Epic")
    t = _task(
        api,
        p,
        ada,
        title="  Write the launch post  ",
        status="in-progress",
        priority="high",
        assignee_ids=[owner.user_id],
        due="2027-01-31T17:00:00+01:00",
        labels=["docs", "launch", "docs"],
        parent_id=parent,
        estimate=3,
    )
    task = api.ok(api.get(f"/api/tasks/{t}", owner))
    assert task["title"] == "Write the launch post"
    assert (task["status"], task["priority"], task["estimate"]) == ("in-progress", "high", 3)
    assert task["assignee_ids"] == [owner.user_id]
    # Time zone aware in, UTC stored and shown.
    assert task["due"] in ("2027-01-31T16:00:00Z", "2027-01-31T16:00:00+00:00")
    assert task["labels"] == ["docs", "launch"]
    assert task["parent_id"] == parent
    assert sorted(task["watcher_ids"]) == sorted([owner.user_id, ada.user_id])
    assert task["version"] == 1
    # Changing only some fields keeps the others; clear empties optional ones.
    api.ok(api.patch(f"/api/tasks/{t}", ada, {"priority": "low", "clear": ["due", "estimate"]}))
    task = api.ok(api.get(f"/api/tasks/{t}", owner))
    assert (task["priority"], task["due"], task["estimate"]) == ("low", None, None)
    assert task["labels"] == ["docs", "launch"] and task["version"] == 2


def test_new_tasks_go_to_the_end_of_their_column_and_a_move_writes_one_task(
    chorus: Running,
) -> None:
    api = chorus.api
    owner = api.signup("town")
    _, p = _project(api, owner)
    tasks = [_task(api, p, owner, title=f"t{i}") for i in range(5)]
    assert _column(api, p, owner, "todo") == tasks
    ranks = {t: api.ok(api.get(f"/api/tasks/{t}", owner))["rank"] for t in tasks}
    before = chorus.events()
    # The last card between the first two; then the first to the end of Done.
    moved = api.post(
        f"/api/tasks/{tasks[4]}/move",
        owner,
        {"status": "todo", "after_id": tasks[0], "before_id": tasks[1]},
    )
    assert api.ok(moved)["rank"] not in ranks.values()
    assert chorus.events() == before + 1
    assert _column(api, p, owner, "todo") == [tasks[0], tasks[4], tasks[1], tasks[2], tasks[3]]
    api.ok(api.post(f"/api/tasks/{tasks[0]}/move", owner, {"status": "done"}))
    assert _column(api, p, owner, "done") == [tasks[0]]
    assert chorus.events() == before + 2
    # No other task was rewritten: their keys and versions are as they were.
    for t in tasks[1:4]:
        shown = api.ok(api.get(f"/api/tasks/{t}", owner))
        assert (shown["rank"], shown["version"]) == (ranks[t], 1)
    # A neighbour that is not in the target column: the board changed since it was read.
    stale = api.post(f"/api/tasks/{tasks[1]}/move", owner, {"status": "todo", "after_id": tasks[0]})
    assert stale.status_code == 409, stale.text


def test_if_match_refuses_a_stale_change_move_or_delete(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("town")
    _, p = _project(api, owner)
    t = _task(api, p, owner)
    api.ok(api.patch(f"/api/tasks/{t}", owner, {"title": "v2"}, headers={"If-Match": '"1"'}))
    before = chorus.events()
    for response in (
        api.patch(f"/api/tasks/{t}", owner, {"title": "v3"}, headers={"If-Match": '"1"'}),
        api.post(f"/api/tasks/{t}/move", owner, {"status": "done"}, headers={"If-Match": "1"}),
        api.delete(f"/api/tasks/{t}", owner, headers={"If-Match": 'W/"1"'}),
    ):
        assert response.status_code == 409, response.text
    assert chorus.events() == before
    assert api.ok(api.get(f"/api/tasks/{t}", owner))["title"] == "v2"
    bad = api.patch(f"/api/tasks/{t}", owner, {"title": "x"}, headers={"If-Match": "v1"})
    assert bad.status_code == 422
    api.ok(api.delete(f"/api/tasks/{t}", owner, headers={"If-Match": '"2"'}))
    assert api.get(f"/api/tasks/{t}", owner).status_code == 404
    assert _column(api, p, owner, "todo") == []
    # Deleted is gone: a change gets 410, not a resurrection.
    assert api.patch(f"/api/tasks/{t}", owner, {"title": "back"}).status_code == 410


def test_watchers_watch_and_unwatch_and_new_assignees_start_watching(chorus: Running) -> None:
    api = chorus.api
    owner, ada, viewer = api.signup("town"), api.signup("tada"), api.signup("tvwr")
    ws, p = _project(api, owner, ada, viewer)
    api.ok(api.put(f"/api/workspaces/{ws}/members/{viewer.user_id}/roles/viewer", owner))
    api.ok(api.delete(f"/api/workspaces/{ws}/members/{viewer.user_id}/roles/member", owner))
    t = _task(api, p, owner)
    api.ok(api.patch(f"/api/tasks/{t}", owner, {"assignee_ids": [ada.user_id]}))
    assert sorted(api.ok(api.get(f"/api/tasks/{t}", owner))["watcher_ids"]) == sorted(
        [owner.user_id, ada.user_id]
    )
    # A viewer (no manage_tasks) may still watch; watching twice writes nothing.
    assert api.ok(api.put(f"/api/tasks/{t}/watch", viewer))["position"] is not None
    assert api.ok(api.put(f"/api/tasks/{t}/watch", viewer))["position"] is None
    assert viewer.user_id in api.ok(api.get(f"/api/tasks/{t}", owner))["watcher_ids"]
    assert api.ok(api.delete(f"/api/tasks/{t}/watch", ada))["position"] is not None
    assert api.ok(api.delete(f"/api/tasks/{t}/watch", ada))["position"] is None
    assert ada.user_id not in api.ok(api.get(f"/api/tasks/{t}", owner))["watcher_ids"]
    # ...but may not create, change or move tasks.
    before = chorus.events()
    for response in (
        api.post(f"/api/projects/{p}/tasks", viewer, {"title": "mine"}),
        api.patch(f"/api/tasks/{t}", viewer, {"title": "mine"}),
        api.post(f"/api/tasks/{t}/move", viewer, {"status": "done"}),
        api.delete(f"/api/tasks/{t}", viewer),
    ):
        assert response.status_code == 403, response.text
    assert chorus.events() == before


def test_assignees_and_parents_are_checked(chorus: Running) -> None:
    api = chorus.api
    owner, ada, bob, stranger = (api.signup(n) for n in ("town", "tada", "tbob", "tstr"))
    ws, p = _project(api, owner, ada, bob)
    listed = api.post(
        f"/api/workspaces/{ws}/projects",
        owner,
        {"name": "L", "access": "listed", "member_ids": [ada.user_id]},
    )
    lp = api.ok(listed, 201)["id"]
    before = chorus.events()
    # Someone outside the workspace, or who cannot read the listed project, is nobody to
    # hand its work to.
    assert (
        api.post(
            f"/api/projects/{p}/tasks", owner, {"title": "x", "assignee_ids": [stranger.user_id]}
        ).status_code
        == 404
    )
    assert (
        api.post(
            f"/api/projects/{lp}/tasks", owner, {"title": "x", "assignee_ids": [bob.user_id]}
        ).status_code
        == 404
    )
    assert chorus.events() == before
    api.ok(
        api.post(f"/api/projects/{lp}/tasks", owner, {"title": "x", "assignee_ids": [ada.user_id]}),
        201,
    )
    # Parents: same project, no cycles.
    a = _task(api, p, owner, title="a")
    b = _task(api, p, owner, title="b", parent_id=a)
    c = _task(api, p, owner, title="c", parent_id=b)
    other = _task(api, lp, owner, title="elsewhere")
    before = chorus.events()
    assert api.patch(f"/api/tasks/{a}", owner, {"parent_id": c}).status_code == 422
    assert api.patch(f"/api/tasks/{a}", owner, {"parent_id": a}).status_code == 422
    assert api.patch(f"/api/tasks/{a}", owner, {"parent_id": other}).status_code == 404
    assert (
        api.post(
            f"/api/projects/{p}/tasks", owner, {"title": "x", "parent_id": str(uuid.uuid4())}
        ).status_code
        == 404
    )
    assert chorus.events() == before
    api.ok(api.patch(f"/api/tasks/{c}", owner, {"clear": ["parent_id"]}))
    api.ok(api.patch(f"/api/tasks/{a}", owner, {"parent_id": c}))


def test_an_archived_project_takes_no_task_changes(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("town")
    _, p = _project(api, owner)
    t = _task(api, p, owner)
    api.ok(api.post(f"/api/projects/{p}/archive", owner))
    before = chorus.events()
    assert api.post(f"/api/projects/{p}/tasks", owner, {"title": "x"}).status_code == 409
    assert api.patch(f"/api/tasks/{t}", owner, {"title": "x"}).status_code == 409
    assert api.post(f"/api/tasks/{t}/move", owner, {"status": "done"}).status_code == 409
    assert chorus.events() == before
    # Deleting the project takes its tasks out of every reader's reach.
    api.ok(api.delete(f"/api/projects/{p}", owner))
    assert api.get(f"/api/tasks/{t}", owner).status_code == 404


@pytest.mark.security
@pytest.mark.parametrize(
    "body",
    [
        {"title": ""},
        {"title": "x" * 601},
        {"title": "a\u001bb"},
        {"title": "ok", "priority": "asap"},
        {"title": "ok", "status": "nope"},
        {"title": "ok", "due": "2027-01-31T17:00:00"},
        {"title": "ok", "due": "tomorrow"},
        {"title": "ok", "due": "0001-01-01T00:00:00+14:00"},
        {"title": "ok", "labels": ["x"] * 21},
        {"title": "ok", "labels": ["x" * 81]},
        {"title": "ok", "labels": [""]},
        {"title": "ok", "assignee_ids": ["not-a-uuid"]},
        {"title": "ok", "assignee_ids": [str(uuid.uuid4()) for _ in range(21)]},
        {"title": "ok", "estimate": -1},
        {"title": "ok", "estimate": 10**7},
        {"title": "ok", "rank": "a0"},
        {"title": "ok", "watcher_ids": []},
    ],
)
def test_hostile_task_bodies_get_4xx_and_append_nothing(
    chorus: Running, body: dict[str, Any]
) -> None:
    api = chorus.api
    owner = api.signup("town")
    _, p = _project(api, owner)
    t = _task(api, p, owner)
    before = chorus.events()
    created = api.post(f"/api/projects/{p}/tasks", owner, body)
    assert 400 <= created.status_code < 500, created.text
    changed = api.patch(f"/api/tasks/{t}", owner, body)
    assert 400 <= changed.status_code < 500, changed.text
    assert chorus.events() == before


@pytest.mark.security
@pytest.mark.parametrize(
    "body",
    [
        {"status": "done", "after_id": "x" * 65},
        {"status": "x" * 33},
        {"status": "done", "rank": "a0"},
        {"status": ""},
    ],
)
def test_hostile_moves_get_4xx_and_append_nothing(chorus: Running, body: dict[str, Any]) -> None:
    api = chorus.api
    owner = api.signup("town")
    _, p = _project(api, owner)
    t = _task(api, p, owner)
    before = chorus.events()
    moved = api.post(f"/api/tasks/{t}/move", owner, body)
    assert 400 <= moved.status_code < 500, moved.text
    assert chorus.events() == before


def test_board_order_is_byte_wise_in_the_read_model(chorus: Running) -> None:
    """Order keys mix upper and lower case ("Zz" < "a0"): the read model's column compares
    them byte-wise whatever the database's locale."""
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute(
            "SELECT collation_name FROM information_schema.columns"
            " WHERE table_name = 'rm_tasks' AND column_name = 'rank'"
        ).fetchone()
    assert row is not None and row[0] == "C"
