"""Group direct messages (issue 19, point 4): 3 to 10 people, the creator and others who
share a workspace with them; listed in ``GET /api/dms`` with every other party; messages,
unread counts and a notification to every member; a member leaves. Outsiders get 404, as for
an unknown id; bad groups are refused with nothing appended."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import psycopg

from tests.fixtures.chorus import Api, Running, User
from tests.fixtures.polling import wait_until


def dms(api: Api, user: User) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.ok(api.get("/api/dms", user))["items"]
    return items


def told(api: Api, user: User, message_id: str) -> list[str]:
    """The kinds of the user's notifications about the message."""
    items = api.ok(api.get("/api/notifications", user))["items"]
    return [i["kind"] for i in items if i["message_id"] == message_id]


def channels_created(chorus: Running) -> int:
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chorus_events WHERE topic LIKE '%%.ChannelCreated'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_group_lists_every_other_member_notifies_them_all_and_can_be_left(
    chorus: Running,
) -> None:
    api = chorus.api
    me, ann, bob, cat = (api.signup(n) for n in ("gme", "gann", "gbob", "gcat"))
    api.acquaint(me, ann, bob, cat)
    made = api.post("/api/group-dms", me, {"user_ids": [ann.user_id, bob.user_id]})
    group = api.ok(made, 201)["channel_id"]

    (mine,) = [i for i in dms(api, me) if i["channel_id"] == group]
    assert mine["other"] is None
    assert sorted(o["id"] for o in mine["others"]) == sorted([ann.user_id, bob.user_id])
    (anns,) = [i for i in dms(api, ann) if i["channel_id"] == group]
    assert sorted(o["username"] for o in anns["others"]) == sorted([me.username, bob.username])

    hello = api.ok(api.post(f"/api/channels/{group}/messages", ann, {"text": "hi all"}), 201)
    for member in (me, bob):
        wait_until("the message to notify", lambda: told(api, member, hello["id"]))  # noqa: B023
        assert told(api, member, hello["id"]) == ["direct_message"]
        (row,) = [i for i in dms(api, member) if i["channel_id"] == group]
        assert row["unread_count"] == 1 and row["last_message"]["text"] == "hi all"
    assert told(api, ann, hello["id"]) == []

    # Not a member: the group does not exist for cat.
    assert api.get(f"/api/channels/{group}/messages", cat).status_code == 404
    assert api.post(f"/api/channels/{group}/messages", cat, {"text": "x"}).status_code == 404
    assert api.post(f"/api/group-dms/{group}/leave", cat).status_code == 404
    assert [i for i in dms(api, cat) if i["channel_id"] == group] == []

    # Bob leaves: gone from his list, out of reach, told of nothing more.
    assert api.ok(api.post(f"/api/group-dms/{group}/leave", bob))["position"] is not None
    assert [i for i in dms(api, bob) if i["channel_id"] == group] == []
    assert api.get(f"/api/channels/{group}/messages", bob).status_code == 404
    assert api.post(f"/api/group-dms/{group}/leave", bob).status_code == 404
    after = api.ok(api.post(f"/api/channels/{group}/messages", me, {"text": "bye bob"}), 201)
    wait_until("the message to notify ann", lambda: told(api, ann, after["id"]))
    assert told(api, bob, after["id"]) == []  # decided in the same batch as ann's
    (mine,) = [i for i in dms(api, me) if i["channel_id"] == group]
    assert [o["id"] for o in mine["others"]] == [ann.user_id]

    # A two-person direct message is not left.
    pair = api.ok(api.post("/api/dms", me, {"user_id": cat.user_id}), 201)["channel_id"]
    assert api.post(f"/api/group-dms/{pair}/leave", me).status_code == 404


def test_bad_groups_are_refused_and_nothing_is_appended(chorus: Running) -> None:
    api = chorus.api
    me, ann, bob, outsider = (api.signup(n) for n in ("bme", "bann", "bbob", "bout"))
    api.acquaint(me, ann, bob)
    api.acquaint(outsider)
    before = channels_created(chorus)
    fake = [str(uuid4()) for _ in range(10)]
    for body, statuses in [
        ({"user_ids": [ann.user_id]}, (400, 422)),  # 2 people
        ({"user_ids": fake}, (400, 422)),  # 11 people
        ({"user_ids": [ann.user_id, ann.user_id]}, (400, 422)),
        ({"user_ids": [me.user_id, ann.user_id]}, (400, 422)),
        ({"user_ids": [ann.user_id, str(uuid4())]}, (404,)),  # unknown
        ({"user_ids": [ann.user_id, outsider.user_id]}, (404,)),  # shares no workspace
        ({"user_ids": [ann.user_id, "not-an-id"]}, (404,)),
        ({"user_ids": [ann.user_id, bob.user_id], "name": "x"}, (400, 422)),
    ]:
        got = api.post("/api/group-dms", me, body)
        assert got.status_code in statuses, (body, got.status_code, got.text)
    assert channels_created(chorus) == before
    # And the same people make one when nothing is wrong.
    api.ok(api.post("/api/group-dms", me, {"user_ids": [ann.user_id, bob.user_id]}), 201)
    assert channels_created(chorus) == before + 1
