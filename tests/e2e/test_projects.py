"""Projects (issue 21, point 1) over real HTTP: their whole life, who reads them (every
workspace member, or a listed set), ``manage_projects``, the workflow's columns, another
workspace's ids (404 as unknown ones) and hostile input (4xx, nothing appended)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.fixtures.chorus import Api, Running, User


def _workspace(api: Api, owner: User, *members: User) -> str:
    body = {"name": "Studio", "visibility": "public"}
    ws: str = api.ok(api.post("/api/workspaces", owner, body), 201)["id"]
    for m in members:
        api.ok(api.post(f"/api/workspaces/{ws}/join", m))
    return ws


def _project(api: Api, ws: str, owner: User, **body: Any) -> str:
    created = api.post(f"/api/workspaces/{ws}/projects", owner, {"name": "Launch", **body})
    return str(api.ok(created, 201)["id"])


def test_a_project_is_created_with_the_default_workflow_renamed_described_archived_deleted(
    chorus: Running,
) -> None:
    api = chorus.api
    owner, member = api.signup("pown"), api.signup("pmem")
    ws = _workspace(api, owner, member)
    p = _project(api, ws, owner, description="Ship it")
    shown = api.ok(api.get(f"/api/projects/{p}", member))
    assert (shown["name"], shown["description"], shown["access"]) == (
        "Launch",
        "Ship it",
        "workspace",
    )
    assert [c["name"] for c in shown["columns"]] == ["To do", "In progress", "Done"]
    assert [c["id"] for c in shown["columns"]] == ["todo", "in-progress", "done"]
    api.ok(api.patch(f"/api/projects/{p}", owner, {"name": "Launch 2", "description": ""}))
    shown = api.ok(api.get(f"/api/projects/{p}", member))
    assert (shown["name"], shown["description"]) == ("Launch 2", "")
    api.ok(api.post(f"/api/projects/{p}/archive", owner))
    assert api.ok(api.get(f"/api/projects/{p}", member))["archived"] is True
    assert api.post(f"/api/projects/{p}/archive", owner).status_code == 409
    api.ok(api.post(f"/api/projects/{p}/unarchive", owner))
    listed = api.ok(api.get(f"/api/workspaces/{ws}/projects", member))
    assert [i["id"] for i in listed["items"]] == [p]
    api.ok(api.delete(f"/api/projects/{p}", owner))
    assert api.get(f"/api/projects/{p}", member).status_code == 404
    assert api.ok(api.get(f"/api/workspaces/{ws}/projects", owner))["items"] == []
    # A deleted project takes no change, and answers as an unknown one.
    assert api.patch(f"/api/projects/{p}", owner, {"name": "Back"}).status_code == 404


def test_managing_projects_needs_manage_projects(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("pown"), api.signup("pmem")
    ws = _workspace(api, owner, member)
    before = chorus.events()
    refused = api.post(f"/api/workspaces/{ws}/projects", member, {"name": "Mine"})
    assert refused.status_code == 403, refused.text
    p = _project(api, ws, owner)
    after_create = chorus.events()
    assert after_create == before + 1
    for response in (
        api.patch(f"/api/projects/{p}", member, {"name": "Mine"}),
        api.post(f"/api/projects/{p}/archive", member),
        api.delete(f"/api/projects/{p}", member),
        api.post(f"/api/projects/{p}/columns", member, {"name": "Review"}),
        api.put(f"/api/projects/{p}/access", member, json={"access": "listed"}),
    ):
        assert response.status_code == 403, response.text
    assert chorus.events() == after_create
    # Granting the permission through a custom role is enough.
    role = {"name": "planner", "permissions": ["manage_projects"]}
    api.ok(api.post(f"/api/workspaces/{ws}/roles", owner, role), 201)
    api.ok(api.put(f"/api/workspaces/{ws}/members/{member.user_id}/roles/planner", owner))
    api.ok(api.patch(f"/api/projects/{p}", member, {"name": "Ours"}))


def test_a_listed_project_exists_only_for_its_members_and_the_owners(chorus: Running) -> None:
    api = chorus.api
    owner, admin, ada, bob = (api.signup(n) for n in ("pown", "padm", "pada", "pbob"))
    ws = _workspace(api, owner, admin, ada, bob)
    api.ok(api.put(f"/api/workspaces/{ws}/members/{admin.user_id}/roles/admin", owner))
    p = _project(api, ws, admin, access="listed", member_ids=[ada.user_id])
    shown = api.ok(api.get(f"/api/projects/{p}", ada))
    assert shown["member_ids"] == sorted([admin.user_id, ada.user_id])
    assert api.get(f"/api/projects/{p}", owner).status_code == 200
    unknown = api.get(f"/api/projects/{uuid.uuid4()}", bob)
    hidden = api.get(f"/api/projects/{p}", bob)
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["detail"] == unknown.json()["detail"]
    assert api.ok(api.get(f"/api/workspaces/{ws}/projects", bob))["items"] == []
    # Writes answer as for an unknown id too (the domain's rule, not only the read model's).
    renamed = api.patch(f"/api/projects/{p}", bob, {"name": "Peek"})
    assert renamed.status_code == 404 and renamed.json()["detail"] == "unknown project"
    # Opened to the workspace, Bob reads it; listed again without him, he no longer does.
    api.ok(api.put(f"/api/projects/{p}/access", admin, json={"access": "workspace"}))
    assert api.get(f"/api/projects/{p}", bob).status_code == 200
    body = {"access": "listed", "member_ids": [ada.user_id]}
    api.ok(api.put(f"/api/projects/{p}/access", admin, json=body))
    assert api.get(f"/api/projects/{p}", bob).status_code == 404
    # Someone outside the workspace cannot be listed.
    stranger = api.signup("pstr")
    body = {"access": "listed", "member_ids": [stranger.user_id]}
    assert api.put(f"/api/projects/{p}/access", admin, json=body).status_code == 404


def test_columns_are_added_renamed_and_reordered(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("pown")
    ws = _workspace(api, owner)
    p = _project(api, ws, owner)
    review = api.ok(api.post(f"/api/projects/{p}/columns", owner, {"name": "Review"}), 201)["id"]
    api.ok(api.patch(f"/api/projects/{p}/columns/{review}", owner, {"name": "In review"}))
    order = ["todo", "in-progress", review, "done"]
    api.ok(api.put(f"/api/projects/{p}/columns/order", owner, json={"column_ids": order}))
    columns = api.ok(api.get(f"/api/projects/{p}", owner))["columns"]
    assert [(c["id"], c["name"]) for c in columns] == [
        ("todo", "To do"),
        ("in-progress", "In progress"),
        (review, "In review"),
        ("done", "Done"),
    ]
    before = chorus.events()
    for response in (
        # Every column once, no more, no fewer.
        api.put(f"/api/projects/{p}/columns/order", owner, json={"column_ids": order[:3]}),
        api.put(
            f"/api/projects/{p}/columns/order", owner, json={"column_ids": [*order[:3], "todo"]}
        ),
        api.patch(f"/api/projects/{p}/columns/nope", owner, {"name": "X"}),
        # Two columns of one name would make a board nobody can read.
        api.post(f"/api/projects/{p}/columns", owner, {"name": "Done"}),
    ):
        assert 400 <= response.status_code < 500, response.text
    assert chorus.events() == before


def test_another_workspaces_project_is_an_unknown_id(chorus: Running) -> None:
    api = chorus.api
    owner, stranger = api.signup("pown"), api.signup("pstr")
    ws = _workspace(api, owner)
    other_ws = _workspace(api, stranger)
    theirs = _project(api, other_ws, stranger)
    before = chorus.events()
    for response in (
        api.get(f"/api/projects/{theirs}", owner),
        api.patch(f"/api/projects/{theirs}", owner, {"name": "Mine"}),
        api.delete(f"/api/projects/{theirs}", owner),
        api.get(f"/api/projects/{theirs}/board", owner),
        api.post(f"/api/projects/{theirs}/tasks", owner, {"title": "x"}),
        api.get(f"/api/workspaces/{other_ws}/projects", owner),
    ):
        assert response.status_code == 404, response.text
    assert chorus.events() == before
    # A member of one's own workspace only: another workspace's user is nobody here.
    body = {"name": "X", "access": "listed", "member_ids": [stranger.user_id]}
    assert api.post(f"/api/workspaces/{ws}/projects", owner, body).status_code == 404


@pytest.mark.security
@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"name": "a\u0000b"},
        {"name": "ok", "description": "d" * 8001},
        {"name": "ok", "access": "everyone"},
        {
            "name": "ok",
            "access": "workspace",
            "member_ids": ["5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001"],
        },
        {"name": "ok", "member_ids": ["x"] * 1001},
        {"name": "ok", "owner": "me"},
        {"name": ["list"]},
    ],
)
def test_hostile_project_bodies_get_4xx_and_append_nothing(
    chorus: Running, body: dict[str, Any]
) -> None:
    api = chorus.api
    owner = api.signup("pown")
    ws = _workspace(api, owner)
    before = chorus.events()
    response = api.post(f"/api/workspaces/{ws}/projects", owner, body)
    assert 400 <= response.status_code < 500 and response.status_code != 404, response.text
    assert chorus.events() == before
