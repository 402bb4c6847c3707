"""Issue 20 over real HTTP, /ws and /yjs: a workspace's whole life (rename, visibility and
password, transfer, delete), its roles' (rename, permissions, order, delete) and its invites'
(list, revoke). Each change is a past-tense event in ``/api/events``; refusals append nothing;
another workspace's ids answer as unknown ones."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg

from tests.fixtures.chorus import NOT_BY_REACTIONS, Api, Running, User
from tests.fixtures.documents import client, new_document, text_of, type_text
from tests.fixtures.polling import wait_until
from tests.fixtures.websocket import send, socket, until


def event_count(database_url: str) -> int:
    """What clients' commands appended: not the reactions' notifications, and not presence
    (a /ws socket of an earlier test ends its session when the server notices, at a moment
    of its own: seen landing between two refused requests of the next test)."""
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            f"SELECT count(*) FROM chorus_events WHERE {NOT_BY_REACTIONS}"
            " AND topic NOT LIKE 'domain.presence:%%'"
        ).fetchone()
        return int(found[0]) if found else 0


def _workspace(api: Api, owner: User, *members: User, name: str = "Life") -> str:
    ws = str(api.ok(api.post("/api/workspaces", owner, {"name": name}), 201)["id"])
    code = api.ok(api.post(f"/api/workspaces/{ws}/invites", owner, {}), 201)["code"]
    for member in members:
        api.ok(api.post(f"/api/invites/{code}/accept", member))
    return ws


def _events(api: Api, user: User, **query: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.ok(api.get("/api/events", user, **query))["items"]
    return items


def _types(api: Api, user: User, stream: str) -> list[str]:
    return [e["type"] for e in _events(api, user, stream=stream, limit=200)]


def _refused(
    chorus: Running, response: httpx.Response, status: int, before: int | None = None
) -> str:
    """The response is a problem of ``status``, and (``before`` given) nothing was appended."""
    assert response.status_code == status, (response.status_code, response.text)
    if before is not None:
        assert event_count(chorus.database_url) == before
    detail: str = response.json()["detail"]
    return detail


def _roles(api: Api, ws: str, user: User) -> dict[str, list[str]]:
    items = api.ok(api.get(f"/api/workspaces/{ws}/members", user))["items"]
    return {m["user_id"]: sorted(m["roles"]) for m in items}


def _role_names(api: Api, ws: str, user: User) -> list[str]:
    return [r["name"] for r in api.ok(api.get(f"/api/workspaces/{ws}/roles", user))["items"]]


def _unknown_alike(api: Api, chorus: Running, method: str, path: str, ws: str, user: User,
                   body: Any = None) -> None:  # fmt: skip
    """The same request on ``ws`` and on an unknown workspace id: both 404, same detail, and
    nothing appended."""
    before = event_count(chorus.database_url)
    answers = []
    for target in (ws, str(uuid.uuid4())):
        url = path.format(ws=target)
        # Reads wait for the read models to reach the last write, as Api.get does.
        params = {"min_position": api.position} if method == "GET" else {}
        r = api.http.request(method, url, json=body, headers=user.headers, params=params)
        answers.append((r.status_code, r.json()["detail"]))
    assert answers[0] == answers[1] and answers[0][0] == 404, answers
    assert event_count(chorus.database_url) == before


# -- the workspace itself -------------------------------------------------------------------------


def test_rename_and_visibility_are_events_and_show_in_the_read_models(chorus: Running) -> None:
    api = chorus.api
    owner, member, outsider = api.signup("own"), api.signup("mem"), api.signup("out")
    ws = _workspace(api, owner, member)
    before = event_count(chorus.database_url)
    # Bad input: 422 and nothing appended.
    _refused(chorus, api.patch(f"/api/workspaces/{ws}", owner, {"name": "   "}), 422, before)
    _refused(chorus, api.patch(f"/api/workspaces/{ws}", owner, {"name": "x", "owner_id": "y"}),
             422, before)  # fmt: skip
    _refused(chorus, api.put(f"/api/workspaces/{ws}/visibility", owner,
                             json={"visibility": "secret"}), 422, before)  # fmt: skip
    _refused(chorus, api.put(f"/api/workspaces/{ws}/visibility", owner,
                             json={"visibility": "private", "password": "a-Long-enough-1"}),
             422, before)  # fmt: skip
    # A plain member lacks manage_workspace; an outsider sees no workspace at all.
    _refused(chorus, api.patch(f"/api/workspaces/{ws}", member, {"name": "Mine"}), 403, before)
    _unknown_alike(api, chorus, "PATCH", "/api/workspaces/{ws}", ws, outsider, {"name": "Z"})
    _unknown_alike(api, chorus, "PUT", "/api/workspaces/{ws}/visibility", ws, outsider,
                   {"visibility": "public"})  # fmt: skip

    api.ok(api.patch(f"/api/workspaces/{ws}", owner, {"name": "  Life, renamed "}))
    assert api.ok(api.get(f"/api/workspaces/{ws}", member))["name"] == "Life, renamed"
    listed = api.ok(api.get("/api/workspaces", member))["items"]
    assert [w["name"] for w in listed if w["id"] == ws] == ["Life, renamed"]

    # Public with a password: outsiders join with it only; then private: they cannot see it.
    password = "violet-Harbour-lantern-7"
    api.ok(api.put(f"/api/workspaces/{ws}/visibility", owner,
                   json={"visibility": "public", "password": password}))  # fmt: skip
    shown = api.ok(api.get(f"/api/workspaces/{ws}", outsider))
    assert (shown["visibility"], shown["has_password"]) == ("public", True)
    stored = _stored_hash(chorus, ws)
    assert stored is not None and password not in stored  # hashed, as at creation
    before = event_count(chorus.database_url)
    _refused(chorus, api.post(f"/api/workspaces/{ws}/join", outsider, {"password": "nope"}),
             403, before)  # fmt: skip
    api.ok(api.post(f"/api/workspaces/{ws}/join", outsider, {"password": password}))
    api.ok(api.post(f"/api/workspaces/{ws}/leave", outsider))
    api.ok(api.put(f"/api/workspaces/{ws}/visibility", owner, json={"visibility": "private"}))
    _unknown_alike(api, chorus, "GET", "/api/workspaces/{ws}", ws, outsider)
    assert api.ok(api.get(f"/api/workspaces/{ws}", member))["has_password"] is False

    changes = [e for e in _events(api, member, stream=ws, limit=200) if e["type"] in
               ("WorkspaceRenamed", "WorkspaceVisibilityChanged")]  # fmt: skip
    assert [(e["type"], e["data"].get("name"), e["data"].get("visibility")) for e in changes] == [
        ("WorkspaceRenamed", "Life, renamed", None),
        ("WorkspaceVisibilityChanged", None, "public"),
        ("WorkspaceVisibilityChanged", None, "private"),
    ]
    assert all(e["actor"] == owner.user_id for e in changes)


def _stored_hash(chorus: Running, subject: str) -> str | None:
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute(
            "SELECT password_hash FROM chorus_credentials WHERE subject_id = %s", (subject,)
        ).fetchone()
    return None if row is None else str(row[0])


def test_ownership_goes_to_a_member_and_the_old_owner_becomes_admin(chorus: Running) -> None:
    api = chorus.api
    owner, admin, member = api.signup("own"), api.signup("adm"), api.signup("mem")
    outsider = api.signup("out")
    ws = _workspace(api, owner, admin, member)
    api.ok(api.put(f"/api/workspaces/{ws}/members/{admin.user_id}/roles/admin", owner))
    before = event_count(chorus.database_url)
    path = f"/api/workspaces/{ws}/transfer"
    _refused(chorus, api.post(path, admin, {"user_id": member.user_id}), 403, before)
    _refused(chorus, api.post(path, owner, {"user_id": outsider.user_id}), 404, before)
    _refused(chorus, api.post(path, owner, {"user_id": owner.user_id}), 422, before)
    _refused(chorus, api.post(path, owner, {}), 422, before)
    _unknown_alike(api, chorus, "POST", "/api/workspaces/{ws}/transfer", ws, outsider,
                   {"user_id": member.user_id})  # fmt: skip

    api.ok(api.post(path, owner, {"user_id": member.user_id}))
    assert api.ok(api.get(f"/api/workspaces/{ws}", admin))["owner_id"] == member.user_id
    roles = _roles(api, ws, admin)
    assert roles[owner.user_id] == ["admin"] and roles[member.user_id] == ["member", "owner"]
    (moved,) = [e for e in _events(api, admin, stream=ws, limit=200)
                if e["type"] == "WorkspaceOwnershipTransferred"]  # fmt: skip
    assert moved["data"]["owner_id"] == member.user_id
    assert moved["data"]["previous_owner_id"] == owner.user_id
    # The former owner ranks as an admin now: the new owner's things are out of reach.
    before = event_count(chorus.database_url)
    _refused(chorus, api.delete(f"/api/workspaces/{ws}", owner, json={"confirm_name": "Life"}),
             403, before)  # fmt: skip
    _refused(chorus, api.post(path, owner, {"user_id": admin.user_id}), 403, before)


def test_deleting_a_workspace_ends_every_members_access_at_once(chorus: Running) -> None:
    api = chorus.api
    owner, member, outsider = api.signup("own"), api.signup("mem"), api.signup("out")
    ws = _workspace(api, owner, member, name="Doomed")
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "general"}), 201)["id"]
    msg = api.ok(api.post(f"/api/channels/{ch}/messages", member, {"text": "hello"}), 201)["id"]
    doc = new_document(api, owner, ws)
    code = api.ok(api.post(f"/api/workspaces/{ws}/invites", owner, {}), 201)["code"]
    path = f"/api/workspaces/{ws}"
    before = event_count(chorus.database_url)
    _refused(chorus, api.delete(path, owner, json={"confirm_name": "doomed"}), 422, before)
    _refused(chorus, api.delete(path, owner), 422, before)
    _refused(chorus, api.delete(path, member, json={"confirm_name": "Doomed"}), 403, before)
    _unknown_alike(api, chorus, "DELETE", "/api/workspaces/{ws}", ws, outsider,
                   {"confirm_name": "Doomed"})  # fmt: skip

    with (
        socket(chorus, member.access_token) as live,
        client(chorus, doc, member).wait_synced() as editor,
    ):
        send(live, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws}]})
        send(live, {"op": "subscribe", "sub": "c", "streams": [{"channel": ch}]})
        assert {until(live, "subscribed")["sub"], until(live, "subscribed")["sub"]} == {"w", "c"}
        api.ok(api.delete(path, owner, json={"confirm_name": "Doomed"}))
        ends = [until(live, "end"), until(live, "end")]
        assert {(e["sub"], e["reason"]) for e in ends} == {
            ("w", "access revoked"),
            ("c", "access revoked"),
        }
        assert editor.wait_closed() == 4404, editor.close_reason

    # Every read path answers as for an unknown id, to members and former owner alike.
    for user in (owner, member):
        _unknown_alike(api, chorus, "GET", "/api/workspaces/{ws}", ws, user)
        _unknown_alike(api, chorus, "GET", "/api/workspaces/{ws}/members", ws, user)
        _unknown_alike(api, chorus, "GET", "/api/workspaces/{ws}/channels", ws, user)
        assert ws not in [w["id"] for w in api.ok(api.get("/api/workspaces", user))["items"]]
        assert api.get(f"/api/channels/{ch}", user).status_code == 404
        assert api.get(f"/api/channels/{ch}/messages", user).status_code == 404
        assert api.get(f"/api/documents/{doc}", user).status_code == 404
        assert _events(api, user, stream=ch) == [] and _events(api, user, stream=msg) == []
        assert _events(api, user, stream=ws) == []
    before = event_count(chorus.database_url)
    for write in (
        api.post(f"/api/channels/{ch}/messages", member, {"text": "after"}),
        api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "again"}),
        api.post("/api/invites/accept", outsider, {"code": code}),
        api.post(f"/api/workspaces/{ws}/join", outsider),
    ):
        assert write.status_code == 404, write.text
    assert event_count(chorus.database_url) == before
    # The log keeps what the workspace held (for the auditors and the erasure rules).
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chorus_events WHERE originator_id = %s", (msg,)
        ).fetchone()
    assert row is not None and row[0] == 1


# -- roles --------------------------------------------------------------------------------------


def test_roles_are_renamed_changed_reordered_and_deleted(chorus: Running) -> None:
    api = chorus.api
    owner, lead, helper, outsider = (api.signup(n) for n in ("own", "lead", "help", "out"))
    ws = _workspace(api, owner, lead, helper)
    for name, perms in (("lead", ["manage_roles", "view_channels", "send_messages"]),
                        ("helper", ["view_channels"]), ("quiet", [])):  # fmt: skip
        api.ok(api.post(f"/api/workspaces/{ws}/roles", owner,
                        {"name": name, "permissions": perms}), 201)  # fmt: skip
    api.ok(api.put(f"/api/workspaces/{ws}/members/{lead.user_id}/roles/lead", owner))
    api.ok(api.put(f"/api/workspaces/{ws}/members/{helper.user_id}/roles/helper", owner))
    base = f"/api/workspaces/{ws}/roles"
    assert _role_names(api, ws, helper) == [
        "owner", "admin", "lead", "helper", "quiet", "member", "viewer",
    ]  # fmt: skip

    before = event_count(chorus.database_url)
    # The hierarchy: lead cannot touch lead (its own), nor built-in roles; helper has no
    # manage_roles; bad names and unknown permissions are 422.
    _refused(chorus, api.patch(f"{base}/lead", lead, {"name": "boss"}), 403, before)
    _refused(chorus, api.delete(f"{base}/member", owner), 403, before)
    _refused(chorus, api.patch(f"{base}/quiet", helper, {"name": "hush"}), 403, before)
    _refused(chorus, api.patch(f"{base}/quiet", lead, {"name": "Not Valid"}), 422, before)
    _refused(chorus, api.put(f"{base}/quiet/permissions", owner, json={"permissions": ["fly"]}),
             422, before)  # fmt: skip
    _refused(chorus, api.put(f"{base}/quiet/permissions", lead,
                             json={"permissions": ["ban_members"]}), 403, before)  # fmt: skip
    _refused(chorus, api.put(f"{base}/order", owner, json={"roles": ["quiet", "lead"]}), 422,
             before)  # fmt: skip
    _refused(chorus, api.put(f"{base}/order", lead, json={"roles": ["helper", "lead", "quiet"]}),
             403, before)  # fmt: skip
    _refused(chorus, api.delete(f"{base}/nope", owner), 404, before)
    _unknown_alike(api, chorus, "PATCH", "/api/workspaces/{ws}/roles/quiet", ws, outsider,
                   {"name": "hush"})  # fmt: skip
    _unknown_alike(api, chorus, "DELETE", "/api/workspaces/{ws}/roles/quiet", ws, outsider)
    _unknown_alike(api, chorus, "PUT", "/api/workspaces/{ws}/roles/order", ws, outsider,
                   {"roles": ["lead", "quiet", "helper"]})  # fmt: skip
    _unknown_alike(api, chorus, "PUT", "/api/workspaces/{ws}/roles/quiet/permissions", ws,
                   outsider, {"permissions": []})  # fmt: skip

    api.ok(api.patch(f"{base}/helper", lead, {"name": "aide"}))
    assert _roles(api, ws, owner)[helper.user_id] == ["aide", "member"]
    api.ok(api.put(f"{base}/quiet/permissions", lead, json={"permissions": ["send_messages"]}))
    listed = {r["name"]: r["permissions"] for r in api.ok(api.get(base, owner))["items"]}
    assert listed["quiet"] == ["send_messages"] and "helper" not in listed
    api.ok(api.put(f"{base}/order", lead, json={"roles": ["lead", "quiet", "aide"]}))
    assert _role_names(api, ws, helper)[2:5] == ["lead", "quiet", "aide"]
    api.ok(api.delete(f"{base}/aide", lead))
    assert _roles(api, ws, owner)[helper.user_id] == ["member"]
    assert "aide" not in _role_names(api, ws, owner)

    kinds = [e["type"] for e in _events(api, helper, stream=ws, limit=200)
             if e["type"].startswith("Role")]  # fmt: skip
    assert kinds[-4:] == ["RoleRenamed", "RolePermissionsChanged", "RolesReordered", "RoleDeleted"]


def test_a_role_deleted_or_stripped_demotes_its_holders_live_editors(chorus: Running) -> None:
    """Holders lose a deleted role at once, and a role's withdrawn permission too: a live
    /yjs editor holding edit_documents only through it becomes read-only, as for a revoke."""
    api = chorus.api
    owner, first, second = api.signup("own"), api.signup("one"), api.signup("two")
    ws = _workspace(api, owner, first, second)
    for name in ("scribe", "writer"):
        api.ok(api.post(f"/api/workspaces/{ws}/roles", owner,
                        {"name": name, "permissions": ["view_documents", "edit_documents"]}),
               201)  # fmt: skip
    for user, role in ((first, "scribe"), (second, "writer")):
        api.ok(api.put(f"/api/workspaces/{ws}/members/{user.user_id}/roles/{role}", owner))
        api.ok(api.put(f"/api/workspaces/{ws}/members/{user.user_id}/roles/viewer", owner))
        api.ok(api.delete(f"/api/workspaces/{ws}/members/{user.user_id}/roles/member", owner))
    doc = new_document(api, owner, ws)
    with (
        client(chorus, doc, owner).wait_synced() as o,
        client(chorus, doc, first).wait_synced() as a,
        client(chorus, doc, second).wait_synced() as b,
    ):
        type_text(a, "one wrote ")
        type_text(b, "two wrote ")
        o.wait(lambda: "one wrote" in text_of(o) and "two wrote" in text_of(o))
        api.ok(api.delete(f"/api/workspaces/{ws}/roles/scribe", owner))
        changed = api.ok(api.put(f"/api/workspaces/{ws}/roles/writer/permissions", owner,
                                 json={"permissions": ["view_documents"]}))  # fmt: skip
        # Once the live copies have the change, an editor's next update waits for its check.
        follower = chorus.server.services.rooms.log_follower
        wait_until(
            "the hub delivered the change", lambda: follower.delivered >= changed["position"]
        )
        type_text(a, "one again")
        type_text(b, "two again")
        a.wait(lambda: bool(a.denied))
        b.wait(lambda: bool(b.denied))
        assert "read-only" in a.denied[0] and "read-only" in b.denied[0]
        # Still readers (viewer): the owner's later edit reaches them.
        type_text(o, "owner after")
        a.wait(lambda: "owner after" in text_of(a))
        b.wait(lambda: "owner after" in text_of(b))
    content = str(api.ok(api.get(f"/api/documents/{doc}", owner))["content"])
    assert "one again" not in content and "two again" not in content


# -- invites ------------------------------------------------------------------------------------


def test_invites_are_listed_with_uses_left_and_revoked(chorus: Running) -> None:
    api = chorus.api
    owner, admin, member, viewer = (api.signup(n) for n in ("own", "adm", "mem", "view"))
    outsider, newcomer = api.signup("out"), api.signup("new")
    ws = _workspace(api, owner, admin, member, viewer)
    api.ok(api.put(f"/api/workspaces/{ws}/members/{admin.user_id}/roles/admin", owner))
    api.ok(api.put(f"/api/workspaces/{ws}/members/{viewer.user_id}/roles/viewer", owner))
    api.ok(api.delete(f"/api/workspaces/{ws}/members/{viewer.user_id}/roles/member", owner))
    admins = api.ok(api.post(f"/api/workspaces/{ws}/invites", admin,
                             {"max_uses": 3, "expires_in_s": 3600}), 201)["code"]  # fmt: skip
    mine = api.ok(api.post(f"/api/workspaces/{ws}/invites", member, {"max_uses": 2}), 201)["code"]
    api.ok(api.post("/api/invites/accept", newcomer, {"code": admins}))
    base = f"/api/workspaces/{ws}/invites"
    listed = {i["created_by"]: i for i in api.ok(api.get(base, member))["items"]}
    assert listed[admin.user_id]["uses"] == 1 and listed[admin.user_id]["uses_left"] == 2
    assert listed[member.user_id]["uses_left"] == 2 and not listed[member.user_id]["expired"]
    assert listed[owner.user_id]["max_uses"] is None and listed[owner.user_id]["uses_left"] is None
    assert all(code not in str(listed) for code in (admins, mine))  # hashes, never codes
    # Listing needs invite (a viewer lacks it); outsiders see no workspace.
    assert api.get(base, viewer).status_code == 403
    _unknown_alike(api, chorus, "GET", "/api/workspaces/{ws}/invites", ws, outsider)

    admins_id, mine_id = listed[admin.user_id]["id"], listed[member.user_id]["id"]
    other = _workspace(api, outsider, name="Other")
    other_id = api.ok(api.get(f"/api/workspaces/{other}/invites", outsider))["items"][0]["id"]
    before = event_count(chorus.database_url)
    # A member does not outrank the admin who made that one; unknown ids are 404.
    _refused(chorus, api.delete(f"{base}/{admins_id}", member), 403, before)
    _refused(chorus, api.delete(f"{base}/{admins_id}", viewer), 403, before)
    _refused(chorus, api.delete(f"{base}/{'0' * 64}", owner), 404, before)
    _unknown_alike(api, chorus, "DELETE", f"/api/workspaces/{{ws}}/invites/{mine_id}", ws,
                   outsider)  # fmt: skip
    # Another workspace's invite id is unknown here.
    _refused(chorus, api.delete(f"{base}/{other_id}", owner), 404, before)

    api.ok(api.delete(f"{base}/{mine_id}", member))
    api.ok(api.delete(f"{base}/{admins_id}", owner))
    assert {i["id"] for i in api.ok(api.get(base, owner))["items"]} & {admins_id, mine_id} == set()
    # A revoked code answers exactly as one that never existed.
    before = event_count(chorus.database_url)
    unknown = api.post("/api/invites/accept", outsider, {"code": f"{uuid.UUID(ws).hex}-nope"})
    revoked = api.post("/api/invites/accept", outsider, {"code": mine})
    assert (
        (revoked.status_code, revoked.json()["detail"])
        == (
            unknown.status_code,
            unknown.json()["detail"],
        )
        == (404, "unknown invite")
    )
    assert event_count(chorus.database_url) == before
    revoked_events = [e for e in _events(api, member, stream=ws, limit=200)
                      if e["type"] == "InviteRevoked"]  # fmt: skip
    assert [e["actor"] for e in revoked_events] == [member.user_id, owner.user_id]
