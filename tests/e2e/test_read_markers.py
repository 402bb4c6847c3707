"""Read markers (issue 19): per user and channel, only forward, only by a reader of the
channel; the channel, workspace and direct-message lists carry the caller's unread and
mention counts worked out from them; a move reaches the user's other devices."""

from __future__ import annotations

import json
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.fixtures.chorus import SHORT_LINGER, Api, Running, User, reactions_quiet

CHORUS_SETTINGS = SHORT_LINGER
TIMEOUT = 10


def _room(api: Api) -> tuple[User, User, str, str]:
    ann, ben = api.signup("ann"), api.signup("ben")
    ws = api.acquaint(ann, ben)
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "talk"}), 201)["id"]
    return ann, ben, ws, ch


def _say(api: Api, user: User, ch: str, text: str) -> str:
    return str(api.ok(api.post(f"/api/channels/{ch}/messages", user, {"text": text}), 201)["id"])


def _badge(api: Api, user: User, ws: str, ch: str) -> dict[str, Any]:
    channels = api.ok(api.get(f"/api/workspaces/{ws}/channels", user))["items"]
    (row,) = [c for c in channels if c["id"] == ch]
    return {k: row[k] for k in ("unread_count", "mention_count", "last_read")}


def _position(api: Api, user: User, ch: str, message_id: str) -> int:
    items = api.ok(api.get(f"/api/channels/{ch}/messages", user))["items"]
    (row,) = [m for m in items if m["id"] == message_id]
    return int(row["position"])


def _read(api: Api, user: User, ch: str, up_to: str | int) -> dict[str, Any]:
    return dict(api.ok(api.put(f"/api/channels/{ch}/read", user, json={"up_to": up_to})))


def test_counts_follow_the_marker_which_only_moves_forward(chorus: Running) -> None:
    api = chorus.api
    ann, ben, ws, ch = _room(api)
    first = _say(api, ann, ch, "one")
    second = _say(api, ann, ch, f"two @{ben.username}")
    _say(api, ben, ch, f"mine, @{ben.username} and @{ann.username}")
    third = _say(api, ann, ch, f"three @{ben.username}")
    # Nothing read yet: every message of the others, none of one's own.
    assert _badge(api, ben, ws, ch) == {"unread_count": 3, "mention_count": 2, "last_read": None}
    assert _badge(api, ann, ws, ch) == {"unread_count": 1, "mention_count": 1, "last_read": None}

    moved = _read(api, ben, ch, second)
    assert moved["moved"] is True and isinstance(moved["position"], int)
    assert moved["last_read"] == _position(api, ben, ch, second)
    assert _badge(api, ben, ws, ch) == {
        "unread_count": 1,
        "mention_count": 1,
        "last_read": _position(api, ben, ch, second),
    }
    # Backwards (or to where it is) records nothing and leaves the marker.
    before = chorus.events()
    for older in (first, second):
        back = _read(api, ben, ch, older)
        assert back == {"position": None, "moved": False, "last_read": moved["last_read"]}
    assert chorus.events() == before
    # A deleted message is not unread, and its mention is gone.
    api.ok(api.delete(f"/api/messages/{third}", ann))
    assert _badge(api, ben, ws, ch)["unread_count"] == 0
    assert _badge(api, ben, ws, ch)["mention_count"] == 0
    fourth = _say(api, ann, ch, "four")
    # A position reads up to the newest message at or before it (one far ahead: the last).
    ahead = _read(api, ben, ch, 2**62)
    assert ahead["last_read"] == _position(api, ben, ch, fourth)
    assert _badge(api, ben, ws, ch)["unread_count"] == 0
    # Another reader's marker is their own.
    assert _badge(api, ann, ws, ch)["last_read"] is None


def test_the_workspace_list_sums_the_channels_i_can_read(chorus: Running) -> None:
    api = chorus.api
    ann, ben, ws, ch = _room(api)
    private = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "p", "private": True}), 201
    )["id"]
    _say(api, ann, ch, f"@{ben.username} hi")
    _say(api, ann, ch, "there")
    secret = _say(api, ann, private, f"@{ben.username} not for ben")
    mine = {w["id"]: w for w in api.ok(api.get("/api/workspaces/", ben))["items"]}
    assert (mine[ws]["unread_count"], mine[ws]["mention_count"]) == (2, 1)
    # The private channel ben is not in: not counted, and not his to mark.
    before = chorus.events()
    refused = api.put(f"/api/channels/{private}/read", ben, json={"up_to": secret})
    unknown = api.put(
        "/api/channels/5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001/read", ben, json={"up_to": secret}
    )
    assert (refused.status_code, refused.json()) == (404, unknown.json())
    assert chorus.events() == before
    owner = {w["id"]: w for w in api.ok(api.get("/api/workspaces/", ann))["items"]}
    assert (owner[ws]["unread_count"], owner[ws]["mention_count"]) == (0, 0)


def test_bad_reads_are_refused_and_append_nothing(chorus: Running) -> None:
    api = chorus.api
    ann, ben, ws, ch = _room(api)
    other = api.ok(api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "other"}), 201)["id"]
    elsewhere = _say(api, ann, other, "elsewhere")
    _say(api, ann, ch, "here")
    before = chorus.events()
    for body, status in [
        ({"up_to": elsewhere}, 404),  # a message of another channel
        ({"up_to": "5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001"}, 404),
        ({"up_to": 0}, 422),
        ({"up_to": -5}, 422),
        ({"up_to": 2**63}, 422),
        ({"up_to": None}, 422),
        ({}, 422),
        ({"up_to": 5, "user_id": ann.user_id}, 422),
    ]:
        answer = api.put(f"/api/channels/{ch}/read", ben, json=body)
        assert answer.status_code == status, (body, answer.text)
    assert chorus.events() == before
    # A position before the channel's first message: nothing to mark, nothing appended.
    assert _read(api, ben, ch, 1) == {"position": None, "moved": False, "last_read": None}
    assert chorus.events() == before


def _socket(chorus: Running, user: User) -> ClientConnection:
    url = chorus.server.url.replace("http", "ws") + f"/ws?token={user.access_token}"
    return connect(url, open_timeout=TIMEOUT)


def _frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return frame


def test_a_move_reaches_the_users_other_devices_and_no_one_else(chorus: Running) -> None:
    api = chorus.api
    ann, ben, _, ch = _room(api)
    message = _say(api, ann, ch, "read me")
    # Ben's join tells Ann, the owner, in her inbox (a reaction, later): in before she listens.
    reactions_quiet(chorus.database_url)
    with _socket(chorus, ben) as phone, _socket(chorus, ben) as laptop, _socket(chorus, ann) as spy:
        for device in (phone, laptop, spy):
            device.send(json.dumps({"op": "subscribe", "sub": "me", "streams": [{"user": "me"}]}))
            assert _frame(device)["op"] == "subscribed"
        moved = _read(api, ben, ch, message)
        seen = []
        for device in (phone, laptop):
            # The first move opens the markers' stream: its opening, then the move.
            opened, read = _frame(device), _frame(device)
            assert opened["event"]["type"] == "ReadMarkersOpened"
            seen.append(read["event"])
        for event in seen:
            assert event["type"] == "ChannelRead"
            assert event["position"] == moved["position"]
            assert event["data"]["channel_id"] == ch
            assert event["data"]["message_id"] == message
            assert event["data"]["up_to"] == moved["last_read"]
        # Ann's own stream showed none of it: its first frame is her own markers' opening.
        _read(api, ann, ch, message)
        first = _frame(spy)
        assert first["event"]["type"] == "ReadMarkersOpened"
        assert first["event"]["data"]["user_id"] == ann.user_id
