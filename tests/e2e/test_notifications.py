"""The notification inbox (issue 19): every kind of notification, made by reactions, read over
HTTP and live on ``/ws``, withdrawn when it no longer holds, filtered by what the user may
read when it is delivered, and shaped by the user's preferences.

Everything is real: the server, PostgreSQL, HTTP and WebSocket clients. A test waits for the
reactions by their marks (``settle``) and for the read models by ``min_position``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
from websockets.sync.client import ClientConnection, connect

from api.contexts import CONTEXTS
from domain.notifications import inbox_id
from tests.fixtures.chorus import SHORT_LINGER, Api, Running, User
from tests.fixtures.polling import wait_until

CHORUS_SETTINGS = SHORT_LINGER
TIMEOUT = 10
POLICIES = [p.name for p in CONTEXTS.policies]


# -- helpers ------------------------------------------------------------------------------------


def log_end(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM chorus_events")
        found = row.fetchone()
    return int(found[0]) if found else 0


_BARRIERS: dict[str, tuple[User, str]] = {}


def settle(chorus: Running) -> int:
    """Waits until every reaction has handled every event written so far; returns the log's
    end then (for ``min_position``: the read models include what the reactions wrote).

    A mark at the last event with some of its commands done may or may not have them all:
    a message that causes nothing is written after, and every mark must pass it."""
    if chorus.database_url not in _BARRIERS:
        user = chorus.api.signup("barrier")
        ws = chorus.api.acquaint(user)
        ch = chorus.api.ok(
            chorus.api.post(f"/api/workspaces/{ws}/channels", user, {"name": "b"}), 201
        )
        _BARRIERS[chorus.database_url] = (user, ch["id"])
    user, channel = _BARRIERS[chorus.database_url]
    end = chorus.api.ok(
        chorus.api.post(f"/api/channels/{channel}/messages", user, {"text": "-"}), 201
    )["position"]

    def passed() -> bool:
        with psycopg.connect(chorus.database_url) as conn:
            rows = conn.execute(
                "SELECT policy, position, done FROM chorus_reactions WHERE policy = ANY(%s)",
                (POLICIES,),
            ).fetchall()
        marks = {r[0]: (r[1], r[2]) for r in rows}
        return len(marks) == len(POLICIES) and all(p >= end for p, _ in marks.values())

    wait_until("the reactions to pass the barrier", passed)
    return log_end(chorus.database_url)


def inbox(chorus: Running, user: User, **params: Any) -> list[dict[str, Any]]:
    api = chorus.api
    page = api.ok(api.get("/api/notifications", user, min_position=settle(chorus), **params))
    items: list[dict[str, Any]] = page["items"]
    return items


def withdrawn(chorus: Running, user: User) -> list[tuple[str, list[str]]]:
    """(message id, kinds) of every NotificationsWithdrawn in the user's inbox, sorted."""
    settle(chorus)
    with psycopg.connect(chorus.database_url) as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb AS s FROM chorus_events"
            " WHERE originator_id = %s AND topic LIKE '%%.NotificationsWithdrawn'",
            (inbox_id(user.user_id),),
        ).fetchall()
    return sorted((r[0]["message_id"], r[0]["kinds"]) for r in rows)


def kinds(items: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return sorted((i["kind"], i["message_id"]) for i in items)


def say(api: Api, user: User, channel: str, text: str, **body: Any) -> str:
    sent: str = api.ok(
        api.post(f"/api/channels/{channel}/messages", user, {"text": text, **body}), 201
    )["id"]
    return sent


def team(api: Api, n: int = 3) -> tuple[list[User], str, str]:
    """An owner and ``n - 1`` members of a public workspace, with a channel."""
    users = [api.signup(f"u{i}") for i in range(n)]
    ws = api.acquaint(*users)
    channel = api.ok(api.post(f"/api/workspaces/{ws}/channels", users[0], {"name": "c"}), 201)
    return users, ws, channel["id"]


@contextmanager
def socket(chorus: Running, user: User) -> Iterator[ClientConnection]:
    url = chorus.server.url.replace("http", "ws") + f"/ws?token={user.access_token}"
    with connect(url, open_timeout=TIMEOUT) as ws:
        yield ws


def frames_until(ws: ClientConnection, wanted: str) -> list[dict[str, Any]]:
    """Every frame up to and including the first event of type ``wanted``."""
    seen = []
    while True:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
        seen.append(frame)
        if frame["op"] == "event" and frame["event"]["type"] == wanted:
            return seen


# -- the kinds ------------------------------------------------------------------------------------


def test_each_kind_of_notification_reaches_the_one_it_is_for(chorus: Running) -> None:
    api = chorus.api
    (owner, ann, bob), ws, ch = team(api)
    # Joining told the owner (invites are codes addressed to nobody: the owner hears who came).
    joined = inbox(chorus, owner)
    assert sorted((i["kind"], i["from_id"]) for i in joined) == sorted(
        [("member_joined", ann.user_id), ("member_joined", bob.user_id)]
    )
    assert all(i["workspace_id"] == ws and i["message_id"] is None for i in joined)

    api.ok(api.put(f"/api/workspaces/{ws}/members/{ann.user_id}/roles/admin", owner))
    granted = inbox(chorus, ann)
    assert [(i["kind"], i["detail"], i["from_id"]) for i in granted] == [
        ("role_granted", "admin", owner.user_id)
    ]

    root = say(api, owner, ch, f"hello @{ann.username}")
    first = say(api, ann, ch, "a reply", reply_to=root)
    second = say(api, bob, ch, "me too", reply_to=root)
    dm = api.ok(api.post("/api/dms", owner, {"user_id": bob.user_id}), 201)["channel_id"]
    direct = say(api, owner, dm, f"psst @{bob.username}")

    assert kinds(inbox(chorus, ann)) == sorted(
        [("mention", root), ("role_granted", None), ("thread_reply", second)]
    )
    assert kinds(inbox(chorus, owner)) == sorted(
        [("member_joined", None), ("member_joined", None), ("reply", first), ("reply", second)]
    )
    # A mention in a direct message is told once, as the direct message.
    assert kinds(inbox(chorus, bob)) == [("direct_message", direct)]
    # Ids and positions, never the text.
    for item in inbox(chorus, ann):
        assert "text" not in item and not item["read"]
        assert item["position"] > item["cause_position"] > 0
    counts = api.ok(api.get("/api/notifications/unread-count", ann))
    assert counts == {"unread": 3, "mentions": 1}


def test_channel_and_everyone_need_mention_everyone_and_reach_the_channels_readers(
    chorus: Running,
) -> None:
    api = chorus.api
    (owner, ann, bob, cat), ws, ch = team(api, 4)
    private = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "p", "private": True}), 201
    )["id"]
    api.ok(api.post(f"/api/channels/{private}/members", owner, {"user_id": ann.user_id}))
    # The owner holds mention_everyone: every reader but the author is told once (ann,
    # also named, by her own mention).
    everyone = say(api, owner, ch, f"@channel and @{ann.username}")
    secret = say(api, owner, private, "@everyone in here")
    # A member does not hold it: nobody is told.
    say(api, bob, ch, "@everyone listen")
    assert [(i["kind"], i["detail"]) for i in inbox(chorus, bob)] == [("mention", "channel")]
    assert [i["message_id"] for i in inbox(chorus, cat)] == [everyone]
    assert sorted((i["message_id"], i["detail"]) for i in inbox(chorus, ann)) == sorted(
        [(everyone, None), (secret, "everyone")]
    )
    assert inbox(chorus, owner)[0]["kind"] == "member_joined"
    # A custom role can hand it out.
    role = {"name": "herald", "permissions": ["mention_everyone"]}
    api.ok(api.post(f"/api/workspaces/{ws}/roles", owner, role), 201)
    api.ok(api.put(f"/api/workspaces/{ws}/members/{bob.user_id}/roles/herald", owner))
    heard = say(api, bob, ch, "@everyone now")
    assert heard in [i["message_id"] for i in inbox(chorus, cat)]
    assert heard in [i["message_id"] for i in inbox(chorus, owner)]


def test_here_reaches_only_the_readers_online_when_it_is_handled(chorus: Running) -> None:
    """``@here``: the channel's readers with a session open when the reaction runs (the
    presence read model), the author's ``mention_everyone`` as for ``@channel``."""
    api = chorus.api
    (owner, ann, bob), ws, ch = team(api, 3)
    with socket(chorus, ann):
        deadline = time.monotonic() + TIMEOUT
        while True:  # ann's session reaches the presence read model
            items = api.ok(api.get(f"/api/workspaces/{ws}/presence", owner))["items"]
            if {i["user_id"]: i["status"] for i in items}.get(ann.user_id) == "online":
                break
            assert time.monotonic() < deadline, items
        here = say(api, owner, ch, "@here standup")
        told = inbox(chorus, ann)
    assert [(i["message_id"], i["detail"]) for i in told] == [(here, "here")]
    assert here not in [i["message_id"] for i in inbox(chorus, bob)]  # offline
    # A member without mention_everyone tells nobody, online or not.
    with socket(chorus, owner):
        say(api, bob, ch, "@here anyone?")
        assert [i["detail"] for i in inbox(chorus, owner) if i["kind"] == "mention"] == []


def test_reading_by_ids_and_up_to_and_another_users_ids_change_nothing(chorus: Running) -> None:
    api = chorus.api
    (owner, ann, _), _, ch = team(api)
    for i in range(4):
        say(api, owner, ch, f"@{ann.username} {i}")
    items = inbox(chorus, ann)
    assert len(items) == 4
    newest, *older = items  # newest first
    assert [i["position"] for i in items] == sorted((i["position"] for i in items), reverse=True)

    # Someone else's ids are not theirs to mark: nothing written, as for unknown ids.
    assert api.ok(api.post("/api/notifications/read", owner, {"ids": [newest["id"]]})) == {
        "position": None
    }
    api.ok(api.post("/api/notifications/read", ann, {"ids": [newest["id"]]}))
    unread = inbox(chorus, ann, unread="true")
    assert [i["id"] for i in unread] == [i["id"] for i in older]
    api.ok(api.post("/api/notifications/read", ann, {"up_to": older[0]["position"]}))
    assert inbox(chorus, ann, unread="true") == []
    assert api.ok(api.get("/api/notifications/unread-count", ann))["unread"] == 0
    # Paging: ``next`` as ``before``.
    page = api.ok(api.get("/api/notifications", ann, limit=3))
    rest = api.ok(api.get("/api/notifications", ann, limit=3, before=page["next"]))
    assert [i["id"] for i in page["items"] + rest["items"]] == [i["id"] for i in items]
    assert rest["next"] is None
    for bad in ({}, {"ids": [], "up_to": 1}, {"up_to": -1}, {"up_to": 2**62}, {"ids": ["x"] * 201}):
        assert api.post("/api/notifications/read", ann, bad).status_code in (400, 422), bad


def _reads_in(chorus: Running, user: User) -> list[list[str]]:
    """The ids of every NotificationsRead event in the user's inbox."""
    with psycopg.connect(chorus.database_url) as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb AS s FROM chorus_events"
            " WHERE originator_id = %s AND topic LIKE '%%.NotificationsRead'",
            (inbox_id(user.user_id),),
        ).fetchall()
    return [r[0]["ids"] for r in rows]


def _ws_mark(live: ClientConnection, frame_id: str, data: dict[str, Any]) -> dict[str, Any]:
    live.send(
        json.dumps({"op": "command", "id": frame_id, "type": "MarkNotificationsRead", "data": data})
    )
    while True:
        frame: dict[str, Any] = json.loads(live.recv(timeout=TIMEOUT))
        if frame.get("id") == frame_id:
            return frame


def test_marking_read_over_ws_and_http_keeps_only_the_callers_own_ids(chorus: Running) -> None:
    """One check on both paths: another user's notification id, an unknown id and a non-id
    change nothing (no event in the caller's inbox), the caller's own are marked."""
    api = chorus.api
    (owner, ann, _), _, ch = team(api)
    say(api, owner, ch, f"@{ann.username} one")
    say(api, owner, ch, f"@{ann.username} two")
    say(api, ann, ch, f"@{owner.username} back")
    first, second = inbox(chorus, ann)
    (owners,) = [i for i in inbox(chorus, owner) if i["kind"] == "mention"]
    strangers = [first["id"], str(uuid4()), "not-an-id"]

    assert api.ok(api.post("/api/notifications/read", owner, {"ids": strangers})) == {
        "position": None
    }
    with socket(chorus, owner) as live:
        refused = _ws_mark(live, "a", {"ids": strangers})
        assert refused["op"] == "ack" and refused["position"] is None, refused
        too_many = _ws_mark(live, "b", {"ids": [str(uuid4()) for _ in range(201)]})
        assert too_many["op"] == "error" and too_many["status"] in (400, 422), too_many
        mine = _ws_mark(live, "c", {"ids": [owners["id"], *strangers]})
        assert mine["op"] == "ack" and mine["position"] is not None, mine
    settle(chorus)
    assert _reads_in(chorus, owner) == [[owners["id"]]]
    assert {i["id"] for i in inbox(chorus, ann, unread="true")} == {first["id"], second["id"]}

    # The owner of the ids marks them, on each path.
    api.ok(api.post("/api/notifications/read", ann, {"ids": [second["id"]]}))
    with socket(chorus, ann) as live:
        assert _ws_mark(live, "d", {"ids": [first["id"]]})["position"] is not None
    assert inbox(chorus, ann, unread="true") == []
    assert sorted(_reads_in(chorus, ann)) == sorted([[first["id"]], [second["id"]]])


# -- withdrawal -----------------------------------------------------------------------------------


def test_a_deleted_message_or_an_edit_that_drops_the_mention_withdraws_it(chorus: Running) -> None:
    api = chorus.api
    (owner, ann, bob), _, ch = team(api)
    gone = say(api, owner, ch, f"@{ann.username} soon deleted")
    edited = say(api, owner, ch, f"@{ann.username} @{bob.username} soon edited")
    kept = say(api, owner, ch, f"@{ann.username} edited but still mentioned")
    reply = say(api, bob, ch, "a reply", reply_to=kept)
    assert len(inbox(chorus, ann)) == 3 and len(inbox(chorus, owner)) == 3

    api.ok(api.delete(f"/api/messages/{gone}", owner))
    api.ok(api.patch(f"/api/messages/{edited}", owner, {"text": f"only @{bob.username}"}))
    api.ok(api.patch(f"/api/messages/{kept}", owner, {"text": f"still @{ann.username}"}))
    api.ok(api.delete(f"/api/messages/{reply}", bob))
    assert kinds(inbox(chorus, ann)) == [("mention", kept)]
    assert kinds(inbox(chorus, bob)) == [("mention", edited)]
    # The reply's deletion withdrew the owner's "reply" notification.
    assert [i["kind"] for i in inbox(chorus, owner)] == ["member_joined", "member_joined"]
    # Each withdrawal is an event in the inbox (the policy's), beside the read model hiding
    # it at once.
    assert withdrawn(chorus, ann) == sorted([(gone, ["mention"]), (edited, ["mention"])])
    assert withdrawn(chorus, owner) == [(reply, ["reply"])]
    assert withdrawn(chorus, bob) == []


# -- delivery -------------------------------------------------------------------------------------


def test_live_on_the_user_stream_and_a_removed_member_stops_getting_them(chorus: Running) -> None:
    api = chorus.api
    (owner, ann, _), ws, ch = team(api)
    dm = api.ok(api.post("/api/dms", owner, {"user_id": ann.user_id}), 201)["channel_id"]
    with socket(chorus, ann) as live:
        live.send(json.dumps({"op": "subscribe", "sub": "me", "streams": [{"user": "me"}]}))
        assert json.loads(live.recv(timeout=TIMEOUT))["op"] == "subscribed"
        say(api, owner, ch, f"@{ann.username} hi")
        frames = frames_until(live, "MentionNotified")
        notified = frames[-1]["event"]
        assert notified["data"]["channel_id"] == ch and "text" not in notified["data"]
    assert len(inbox(chorus, ann)) == 1

    api.ok(api.post(f"/api/workspaces/{ws}/members/{ann.user_id}/kick", owner))
    # At once, in the inbox and the count...
    assert inbox(chorus, ann) == []
    assert api.ok(api.get("/api/notifications/unread-count", ann))["unread"] == 0
    # ... and on /ws, where a catch-up from the start delivers what is still hers (a direct
    # message, outside the workspace) and not the mention from the workspace she left.
    say(api, owner, dm, "still here?")
    settle(chorus)
    with socket(chorus, ann) as again:
        again.send(
            json.dumps({"op": "subscribe", "sub": "me", "streams": [{"user": "me"}], "after": 0})
        )
        frames = frames_until(again, "Notified")
    types = [f["event"]["type"] for f in frames if f["op"] == "event"]
    assert "MentionNotified" not in types
    assert frames[-1]["event"]["data"]["kind"] == "direct_message"


# -- preferences ----------------------------------------------------------------------------------


def test_preferences_shape_what_notifies(chorus: Running) -> None:
    api = chorus.api
    (owner, ann, bob), ws, ch = team(api)
    other = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "o"}), 201)["id"]
    root = say(api, ann, ch, "my thread")

    # Mentions only, in this channel: a reply does not notify, a mention does.
    api.ok(api.put(f"/api/notification-preferences/channel/{ch}", ann, json={"level": "mentions"}))
    say(api, owner, ch, "a reply", reply_to=root)
    mention = say(api, owner, ch, f"@{ann.username} look")
    assert kinds(inbox(chorus, ann)) == [("mention", mention)]
    # Nothing from the workspace, but the channel's own setting wins over it.
    api.ok(api.put(f"/api/notification-preferences/workspace/{ws}", ann, json={"level": "nothing"}))
    in_other = say(api, owner, other, f"@{ann.username} elsewhere")
    in_ch = say(api, owner, ch, f"@{ann.username} here")
    assert kinds(inbox(chorus, ann)) == sorted([("mention", mention), ("mention", in_ch)])
    assert in_other
    # Muted until tomorrow: not even a mention; a direct message only when not muted.
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    api.ok(api.put(f"/api/notification-preferences/channel/{ch}", ann, json={"muted_until": until}))
    say(api, owner, ch, f"@{ann.username} muted")
    dm = api.ok(api.post("/api/dms", owner, {"user_id": ann.user_id}), 201)["channel_id"]
    direct = say(api, owner, dm, "hello")
    # (A reaction decides with the preferences as they are when it runs: let it run first.)
    settle(chorus)
    api.ok(api.put(f"/api/notification-preferences/channel/{dm}", ann, json={"muted_until": until}))
    say(api, owner, dm, "muted now")
    assert kinds(inbox(chorus, ann)) == sorted(
        [("mention", mention), ("mention", in_ch), ("direct_message", direct)]
    )
    # Unmuted: notifies again.
    api.ok(api.put(f"/api/notification-preferences/channel/{ch}", ann, json={"unmute": True}))
    again = say(api, owner, ch, f"@{ann.username} back")
    assert ("mention", again) in kinds(inbox(chorus, ann))

    settings = api.ok(api.get("/api/notification-preferences", ann))["items"]
    assert {(s["target"], s["target_id"], s["level"]) for s in settings} == {
        ("channel", ch, "mentions"),
        ("workspace", ws, "nothing"),
        ("channel", dm, "default"),
    }
    assert api.ok(api.get("/api/notification-preferences", bob))["items"] == []

    # Someone else's workspace or channel answers as an unknown one, and writes nothing.
    stranger = api.signup("stranger")
    before = chorus.events()
    unknown = "5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001"
    for target in (f"workspace/{ws}", f"channel/{ch}", f"channel/{unknown}"):
        path = f"/api/notification-preferences/{target}"
        r = api.put(path, stranger, json={"level": "all"})
        assert r.status_code == 404, (path, r.text)
    for bad in ({"level": "loud"}, {"muted_until": "2030-01-01T00:00:00"}, {"colour": 1}):
        r = api.put(f"/api/notification-preferences/channel/{ch}", ann, json=bad)
        assert r.status_code in (400, 422), (bad, r.text)
    assert chorus.events() == before
