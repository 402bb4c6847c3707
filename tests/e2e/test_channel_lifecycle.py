"""Issue 20 over real HTTP and /ws: a channel's whole life. Renaming and the topic (which
existed: ``PATCH /api/channels/{id}``, ``ChannelChanged``), deletion (not only archiving), and
the members of a private channel (which existed: ``GET /api/channels/{id}/members``)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from tests.fixtures.chorus import Api, Running, User, event_count
from tests.fixtures.websocket import send, socket, until


def _scene(api: Api) -> tuple[dict[str, User], str]:
    """A private workspace: ``owner``, ``member`` and ``viewer`` in it, ``outsider`` not."""
    users = {n: api.signup(n[:4]) for n in ("owner", "member", "viewer", "outsider")}
    owner = users["owner"]
    ws = str(api.ok(api.post("/api/workspaces", owner, {"name": "Chan"}), 201)["id"])
    code = api.ok(api.post(f"/api/workspaces/{ws}/invites", owner, {}), 201)["code"]
    for name in ("member", "viewer"):
        api.ok(api.post(f"/api/invites/{code}/accept", users[name]))
    viewer = users["viewer"].user_id
    api.ok(api.put(f"/api/workspaces/{ws}/members/{viewer}/roles/viewer", owner))
    api.ok(api.delete(f"/api/workspaces/{ws}/members/{viewer}/roles/member", owner))
    return users, ws


def _events(api: Api, user: User, stream: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.ok(api.get("/api/events", user, stream=stream))["items"]
    return items


def _same_as_unknown(api: Api, method: str, path: str, ch: str, user: User) -> None:
    answers = []
    for target in (ch, str(uuid.uuid4())):
        # Reads wait for the read models to reach the caller's last write, as Api.get does.
        params = {"min_position": api.position} if method == "GET" else {}
        r = api.http.request(method, path.format(ch=target), headers=user.headers, params=params)
        answers.append((r.status_code, r.json()["detail"]))
    assert answers[0] == answers[1] and answers[0][0] == 404, answers


def test_rename_and_topic_are_events_every_reader_sees(chorus: Running) -> None:
    api = chorus.api
    users, ws = _scene(api)
    owner, member, viewer = users["owner"], users["member"], users["viewer"]
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "general"}), 201)["id"]
    before = event_count(chorus.database_url)
    for body in ({}, {"name": "   "}, {"topic": "x" * 5000}, {"name": "n", "archived": True}):
        r = api.patch(f"/api/channels/{ch}", owner, body)
        assert r.status_code == 422, (body, r.text)
    assert api.patch(f"/api/channels/{ch}", viewer, {"name": "mine"}).status_code == 403
    assert event_count(chorus.database_url) == before
    api.ok(api.patch(f"/api/channels/{ch}", owner, {"name": "town-square"}))
    api.ok(api.patch(f"/api/channels/{ch}", owner, {"topic": "news"}))
    shown = api.ok(api.get(f"/api/channels/{ch}", viewer))
    assert (shown["name"], shown["topic"]) == ("town-square", "news")
    listed = api.ok(api.get(f"/api/workspaces/{ws}/channels", member))["items"]
    assert [(c["name"], c["topic"]) for c in listed] == [("town-square", "news")]
    changes = [e["data"] for e in _events(api, viewer, ch) if e["type"] == "ChannelChanged"]
    assert changes == [
        {"name": "town-square", "topic": ""},
        {"name": "town-square", "topic": "news"},
    ]


def test_a_private_channels_members_are_listed_for_its_members_only(chorus: Running) -> None:
    api = chorus.api
    users, ws = _scene(api)
    owner, member, viewer = users["owner"], users["member"], users["viewer"]
    priv = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "staff", "private": True}), 201
    )["id"]
    api.ok(api.post(f"/api/channels/{priv}/members", owner, {"user_id": member.user_id}))
    listed = api.ok(api.get(f"/api/channels/{priv}/members", member))["items"]
    assert {m["user_id"] for m in listed} == {owner.user_id, member.user_id}
    assert {m["username"] for m in listed} == {owner.username, member.username}
    # Not in it: as for an unknown channel (the owner holds view_audit, so sees it).
    _same_as_unknown(api, "GET", "/api/channels/{ch}/members", priv, viewer)
    _same_as_unknown(api, "GET", "/api/channels/{ch}/members", priv, users["outsider"])
    api.ok(api.delete(f"/api/channels/{priv}/members/{member.user_id}", owner))
    _same_as_unknown(api, "GET", "/api/channels/{ch}/members", priv, member)


def test_deleting_a_channel_takes_it_from_every_plain_reader(chorus: Running) -> None:
    api = chorus.api
    users, ws = _scene(api)
    owner, member, viewer = users["owner"], users["member"], users["viewer"]
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "doomed"}), 201)["id"]
    kept = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "kept"}), 201)["id"]
    msg = api.ok(api.post(f"/api/channels/{ch}/messages", member, {"text": "hi"}), 201)["id"]
    before = event_count(chorus.database_url)
    assert api.delete(f"/api/channels/{ch}", member).status_code == 403
    assert api.delete(f"/api/channels/{ch}", viewer).status_code == 403
    _same_as_unknown(api, "DELETE", "/api/channels/{ch}", ch, users["outsider"])
    assert event_count(chorus.database_url) == before

    with socket(chorus, member.access_token) as live:
        send(live, {"op": "subscribe", "sub": "c", "streams": [{"channel": ch}]})
        send(live, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws}]})
        assert {until(live, "subscribed")["sub"], until(live, "subscribed")["sub"]} == {"c", "w"}
        api.ok(api.delete(f"/api/channels/{ch}", owner))
        ended = until(live, "end")
        assert (ended["sub"], ended["reason"]) == ("c", "access revoked")
        # The workspace subscription goes on, without the channel.
        api.ok(api.post(f"/api/channels/{kept}/messages", owner, {"text": "still here"}), 201)
        shown = until(live, "event")
        assert (shown["sub"], shown["event"]["type"]) == ("w", "MessageSent")
        assert shown["event"]["stream"] != ch

    for user in (owner, member, viewer):
        _same_as_unknown(api, "GET", "/api/channels/{ch}", ch, user)
        _same_as_unknown(api, "GET", "/api/channels/{ch}/messages", ch, user)
        listed = api.ok(api.get(f"/api/workspaces/{ws}/channels", user))["items"]
        assert [c["id"] for c in listed] == [kept]
    for user in (member, viewer):
        assert _events(api, user, ch) == [] and _events(api, user, msg) == []
    # Nothing more happens in it: no message, no second deletion, no change.
    before = event_count(chorus.database_url)
    assert api.post(f"/api/channels/{ch}/messages", member, {"text": "x"}).status_code == 404
    assert api.delete(f"/api/channels/{ch}", owner).status_code == 404
    assert api.patch(f"/api/channels/{ch}", owner, {"name": "back"}).status_code == 404
    assert api.post(f"/api/channels/{ch}/unarchive", owner).status_code == 404
    assert api.delete(f"/api/messages/{msg}", member).status_code == 404
    assert event_count(chorus.database_url) == before
    # The log keeps it: the workspace's auditors (the owner holds view_audit) still read it.
    audited = [e["type"] for e in _events(api, owner, ch)]
    assert audited[0] == "ChannelCreated" and audited[-1] == "ChannelDeleted"
    assert [e["type"] for e in _events(api, owner, msg)] == ["MessageSent"]
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chorus_events WHERE originator_id = %s", (msg,)
        ).fetchone()
    assert row is not None and row[0] == 1
