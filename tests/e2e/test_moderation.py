"""Running a workspace over HTTP: passwords, leaving, kicks, bans, roles, channel upkeep."""

from __future__ import annotations

import pytest

from tests.fixtures.chorus import Running


def test_a_public_workspace_with_a_password(chorus: Running) -> None:
    api = chorus.api
    host, guest = api.signup("host"), api.signup("guest")
    ws = api.ok(
        api.post(
            "/api/workspaces",
            host,
            {"name": "Club", "visibility": "public", "password": "sesame-123"},
        ),
        201,
    )["id"]
    info = api.ok(api.get(f"/api/workspaces/{ws}", guest))
    assert info["has_password"] is True and info["is_member"] is False
    before = chorus.events()
    assert api.post(f"/api/workspaces/{ws}/join", guest).status_code == 403
    assert api.post(f"/api/workspaces/{ws}/join", guest, {"password": "wrong"}).status_code == 403
    assert chorus.events() == before
    api.ok(api.post(f"/api/workspaces/{ws}/join", guest, {"password": "sesame-123"}))
    assert (
        api.post(f"/api/workspaces/{ws}/join", guest, {"password": "sesame-123"}).status_code == 409
    )
    # A private workspace cannot have a join password.
    bad = api.post(
        "/api/workspaces", host, {"name": "X", "visibility": "private", "password": "p" * 9}
    )
    assert bad.status_code == 422


def test_leaving_kicking_and_banning(chorus: Running) -> None:
    api = chorus.api
    owner, admin, member, pest = (api.signup(n) for n in ("own", "adm", "mem", "pest"))
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Town", "visibility": "public"}), 201)[
        "id"
    ]
    for user in (admin, member, pest):
        api.ok(api.post(f"/api/workspaces/{ws}/join", user))
    api.ok(api.put(f"/api/workspaces/{ws}/members/{admin.user_id}/roles/admin", owner))

    # The last owner cannot leave; members can.
    assert api.post(f"/api/workspaces/{ws}/leave", owner).status_code == 409
    api.ok(api.post(f"/api/workspaces/{ws}/leave", member))
    # Plain members cannot kick; admins cannot kick owners; admins kick members.
    assert api.post(f"/api/workspaces/{ws}/members/{pest.user_id}/kick", pest).status_code == 403
    assert api.post(f"/api/workspaces/{ws}/members/{owner.user_id}/kick", admin).status_code == 403
    api.ok(api.post(f"/api/workspaces/{ws}/members/{pest.user_id}/kick", admin))
    api.ok(api.post(f"/api/workspaces/{ws}/join", pest))  # kicked, not banned: may return
    api.ok(api.post(f"/api/workspaces/{ws}/members/{pest.user_id}/ban", admin))
    # Banned users cannot rejoin, by the door or by invite, until unbanned.
    assert api.post(f"/api/workspaces/{ws}/join", pest).status_code == 403
    code = api.ok(api.post(f"/api/workspaces/{ws}/invites", owner, {}), 201)["code"]
    assert api.post(f"/api/invites/{code}/accept", pest).status_code == 403
    api.ok(api.delete(f"/api/workspaces/{ws}/bans/{pest.user_id}", admin))
    api.ok(api.post(f"/api/invites/{code}/accept", pest))
    members = {
        m["user_id"] for m in api.ok(api.get(f"/api/workspaces/{ws}/members", owner))["items"]
    }
    assert members == {owner.user_id, admin.user_id, pest.user_id}


def test_roles_are_listed_granted_and_revoked(chorus: Running) -> None:
    api = chorus.api
    owner, admin, mod = api.signup("own"), api.signup("adm"), api.signup("mod")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Roles", "visibility": "public"}), 201)[
        "id"
    ]
    for user in (admin, mod):
        api.ok(api.post(f"/api/workspaces/{ws}/join", user))
    api.ok(api.put(f"/api/workspaces/{ws}/members/{admin.user_id}/roles/admin", owner))
    # An admin lacks view_audit: it cannot make a role that carries it, nor grant owner.
    auditor = {"name": "auditor", "permissions": ["view_audit"]}
    assert api.post(f"/api/workspaces/{ws}/roles", admin, auditor).status_code == 403
    assert (
        api.put(f"/api/workspaces/{ws}/members/{mod.user_id}/roles/owner", admin).status_code == 403
    )
    unknown = {"name": "odd", "permissions": ["fly"]}
    assert api.post(f"/api/workspaces/{ws}/roles", admin, unknown).status_code == 422
    api.ok(
        api.post(
            f"/api/workspaces/{ws}/roles",
            admin,
            {"name": "mod", "permissions": ["manage_messages"]},
        ),
        201,
    )
    assert (
        api.post(
            f"/api/workspaces/{ws}/roles", admin, {"name": "mod", "permissions": []}
        ).status_code
        == 409
    )
    roles = {r["name"]: r for r in api.ok(api.get(f"/api/workspaces/{ws}/roles", mod))["items"]}
    assert set(roles) == {"owner", "admin", "member", "viewer", "mod"}
    assert roles["mod"] == {"name": "mod", "permissions": ["manage_messages"], "builtin": False}
    api.ok(api.put(f"/api/workspaces/{ws}/members/{mod.user_id}/roles/mod", admin))
    assert (
        api.put(f"/api/workspaces/{ws}/members/{mod.user_id}/roles/mod", admin).status_code == 409
    )
    api.ok(api.delete(f"/api/workspaces/{ws}/members/{mod.user_id}/roles/mod", admin))
    assert (
        api.delete(f"/api/workspaces/{ws}/members/{mod.user_id}/roles/mod", admin).status_code
        == 404
    )
    # Owners keep the owner role while they are the only one.
    assert (
        api.delete(f"/api/workspaces/{ws}/members/{owner.user_id}/roles/owner", owner).status_code
        == 403
    )
    members = {
        m["user_id"]: m["roles"]
        for m in api.ok(api.get(f"/api/workspaces/{ws}/members", owner))["items"]
    }
    assert members[mod.user_id] == ["member"] and members[admin.user_id] == ["member", "admin"]


def test_channel_upkeep(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Rooms", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    ch = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "old", "topic": "t"}), 201
    )["id"]
    assert api.patch(f"/api/channels/{ch}", member, {"topic": "mine"}).status_code == 403
    api.ok(api.patch(f"/api/channels/{ch}", owner, {"name": "new", "topic": "news"}))
    shown = api.ok(api.get(f"/api/channels/{ch}", member))
    assert (shown["name"], shown["topic"], shown["archived"]) == ("new", "news", False)
    api.ok(api.post(f"/api/channels/{ch}/archive", owner))
    assert api.post(f"/api/channels/{ch}/messages", member, {"text": "hello?"}).status_code == 409
    assert api.ok(api.get(f"/api/channels/{ch}", member))["archived"] is True
    api.ok(api.post(f"/api/channels/{ch}/unarchive", owner))
    api.ok(api.post(f"/api/channels/{ch}/messages", member, {"text": "hello!"}), 201)

    private = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "p", "private": True}), 201
    )["id"]
    assert (
        api.post(f"/api/channels/{ch}/members", owner, {"user_id": member.user_id}).status_code
        == 409
    )
    api.ok(api.post(f"/api/channels/{private}/members", owner, {"user_id": member.user_id}))
    api.ok(api.get(f"/api/channels/{private}/messages", member))
    api.ok(api.delete(f"/api/channels/{private}/members/{member.user_id}", owner))
    assert api.get(f"/api/channels/{private}/messages", member).status_code == 404


def test_members_and_presence_page_in_join_order(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Many", "visibility": "public"}), 201)[
        "id"
    ]
    joiners = [api.signup(f"j{i}") for i in range(4)]
    for user in joiners:
        api.ok(api.post(f"/api/workspaces/{ws}/join", user))
    expected = [owner.user_id] + [u.user_id for u in joiners]
    for path in ("members", "presence"):
        seen: list[str] = []
        page = api.ok(api.get(f"/api/workspaces/{ws}/{path}", owner, limit=2))
        seen += [i["user_id"] for i in page["items"]]
        while page["next"] is not None:
            page = api.ok(
                api.get(f"/api/workspaces/{ws}/{path}", owner, limit=2, after=page["next"])
            )
            seen += [i["user_id"] for i in page["items"]]
        assert seen == expected, path


def test_moderators_cannot_act_on_members_ranked_at_or_above_them(chorus: Running) -> None:
    """Issue 17, finding 11: two admins can neither remove nor demote each other; the owner,
    above every role, can."""
    api = chorus.api
    owner, first, second = api.signup("own"), api.signup("adm1"), api.signup("adm2")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Peers", "visibility": "public"}), 201)[
        "id"
    ]
    for admin in (first, second):
        api.ok(api.post(f"/api/workspaces/{ws}/join", admin))
        api.ok(api.put(f"/api/workspaces/{ws}/members/{admin.user_id}/roles/admin", owner))
    member = f"/api/workspaces/{ws}/members/{second.user_id}"
    before = chorus.events()
    for response in (
        api.post(f"{member}/kick", first),
        api.post(f"{member}/ban", first),
        api.delete(f"{member}/roles/admin", first),
        api.put(f"/api/workspaces/{ws}/members/{second.user_id}/roles/viewer", first),
    ):
        assert response.status_code == 403, response.text
        assert "at or above" in response.json()["detail"]
    assert chorus.events() == before
    api.ok(api.delete(f"{member}/roles/admin", owner))
    api.ok(api.post(f"{member}/kick", first))  # now outranked


@pytest.mark.parametrize("departure", ["leave", "kick", "ban"])
def test_coming_back_does_not_restore_a_private_channel(chorus: Running, departure: str) -> None:
    """Issue 17, finding 3: a private channel's membership ends with the workspace
    membership; rejoining does not bring back the channel, nor what was said meanwhile."""
    api = chorus.api
    owner, mem, spy = api.signup("own"), api.signup("mem"), api.signup("spy")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Back", "visibility": "public"}), 201)[
        "id"
    ]
    for user in (mem, spy):
        api.ok(api.post(f"/api/workspaces/{ws}/join", user))
    secret = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "s", "private": True}), 201
    )["id"]
    api.ok(api.post(f"/api/channels/{secret}/members", owner, {"user_id": spy.user_id}))
    listed = api.ok(api.get(f"/api/channels/{secret}/members", owner))["items"]
    assert {m["user_id"] for m in listed} == {owner.user_id, spy.user_id}
    # Workspace members outside the channel cannot list it: it does not exist for them.
    assert api.get(f"/api/channels/{secret}/members", mem).status_code == 404

    match departure:
        case "leave":
            api.ok(api.post(f"/api/workspaces/{ws}/leave", spy))
        case "kick":
            api.ok(api.post(f"/api/workspaces/{ws}/members/{spy.user_id}/kick", owner))
        case "ban":
            api.ok(api.post(f"/api/workspaces/{ws}/members/{spy.user_id}/ban", owner))
            api.ok(api.delete(f"/api/workspaces/{ws}/bans/{spy.user_id}", owner))
    said = api.ok(api.post(f"/api/channels/{secret}/messages", owner, {"text": "meanwhile"}), 201)
    api.ok(api.post(f"/api/workspaces/{ws}/join", spy))

    at = {"min_position": said["position"]}
    assert api.get(f"/api/channels/{secret}", spy, **at).status_code == 404
    assert api.get(f"/api/channels/{secret}/messages", spy, **at).status_code == 404
    assert api.post(f"/api/channels/{secret}/messages", spy, {"text": "hi"}).status_code == 404
    events = api.ok(api.get("/api/events", spy, stream=said["id"], **at))["items"]
    assert events == []
    listed = api.ok(api.get(f"/api/channels/{secret}/members", owner, **at))["items"]
    assert {m["user_id"] for m in listed} == {owner.user_id}
    # Added again, the member reads the channel once more.
    api.ok(api.post(f"/api/channels/{secret}/members", owner, {"user_id": spy.user_id}))
    assert api.get(f"/api/channels/{secret}/messages", spy).status_code == 200
