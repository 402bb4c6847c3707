"""Ephemeral signals: relayed to the workspace's subscribers, across instances through Redis,
never stored."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import (
    Api,
    Running,
    ServerThread,
    User,
    chorus_settings,
    reactions_quiet,
    running_chorus,
)
from tests.fixtures.servers import RedisServer
from tests.fixtures.signals import crosses
from tests.fixtures.websocket import recv, send, socket, until


def _stored_besides_presence(database_url: str, after: int) -> list[str]:
    """Event types appended after ``after``, other than sessions coming and going."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT topic FROM chorus_events WHERE notification_id > %s"
            " AND topic NOT LIKE 'domain.presence:%%'",
            (after,),
        ).fetchall()
    return [r[0] for r in rows]


def _workspace(api: Api) -> tuple[str, User, User, User]:
    owner, member, outsider = api.signup("own"), api.signup("mem"), api.signup("out")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "S", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    return ws, owner, member, outsider


def _channel(api: Api, ws: str, owner: User, *, private: bool = False) -> str:
    body = {"name": "c", "private": private}
    channel: str = api.ok(api.post(f"/api/workspaces/{ws}/channels", owner, body), 201)["id"]
    return channel


def test_a_typing_signal_reaches_subscribers_and_is_not_stored(chorus: Running) -> None:
    api = chorus.api
    ws, owner, member, outsider = _workspace(api)
    ch = _channel(api, ws, owner)
    # The reactions to the set-up (a join's notification) are in before the signals.
    settled = reactions_quiet(chorus.database_url)
    with (
        socket(chorus, owner.access_token) as watcher,
        socket(chorus, member.access_token) as typist,
    ):
        send(watcher, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws}]})
        until(watcher, "subscribed")
        send(typist, {"op": "signal", "channel": ch, "kind": "typing", "data": {"n": 1}})
        got = until(watcher, "signal")
        assert got == {
            "op": "signal", "workspace": ws, "channel": ch, "kind": "typing",
            "from": member.user_id, "data": {"n": 1},
        }  # fmt: skip
        # The sender does not hear its own signal; nothing reached the store.
        send(typist, {"op": "ping"})
        assert recv(typist) == {"op": "pong"}
        send(typist, {"op": "signal", "channel": ch, "kind": "shout", "data": {}})
        assert until(typist, "error")["status"] == 422
        # A signal is about one channel or one document.
        for unscoped in ({"workspace": ws}, {"channel": ch, "document": ch}):
            send(typist, {"op": "signal", "kind": "typing", **unscoped})
            assert until(typist, "error")["status"] == 422
    with socket(chorus, outsider.access_token) as intruder:
        send(intruder, {"op": "signal", "channel": ch, "kind": "typing"})
        assert until(intruder, "error")["status"] == 404
    assert _stored_besides_presence(chorus.database_url, settled) == []


def test_signals_reach_only_those_who_can_read_what_they_are_about(chorus: Running) -> None:
    """Issue 17, finding 12: typing in a private channel, or a cursor in a document, told the
    whole workspace who was there. Now a signal names its channel or document, and reaches
    only the connections that may read it (a direct channel's: its two members)."""
    api = chorus.api
    ws, owner, insider, _ = _workspace(api)
    outsider, blind, peer = api.signup("outs"), api.signup("blind"), api.signup("peer")
    for user in (outsider, blind, peer):
        api.ok(api.post(f"/api/workspaces/{ws}/join", user))
    chat = {"name": "chat", "permissions": ["view_channels", "send_messages"]}
    api.ok(api.post(f"/api/workspaces/{ws}/roles", owner, chat), 201)
    api.ok(api.put(f"/api/workspaces/{ws}/members/{blind.user_id}/roles/chat", owner))
    api.ok(api.delete(f"/api/workspaces/{ws}/members/{blind.user_id}/roles/member", owner))
    public = _channel(api, ws, owner)
    secret = _channel(api, ws, owner, private=True)
    api.ok(api.post(f"/api/channels/{secret}/members", owner, {"user_id": insider.user_id}))
    doc = api.ok(api.post(f"/api/workspaces/{ws}/documents", owner, {"title": "d"}), 201)["id"]
    dm = api.ok(api.post("/api/dms", owner, {"user_id": peer.user_id}), 201)["channel_id"]

    with (
        socket(chorus, owner.access_token) as typist,
        socket(chorus, insider.access_token) as insider_ws,
        socket(chorus, outsider.access_token) as outsider_ws,
        socket(chorus, blind.access_token) as blind_ws,
        socket(chorus, peer.access_token) as peer_ws,
    ):
        sockets = {"insider": insider_ws, "outsider": outsider_ws, "blind": blind_ws}
        for name, ws_ in sockets.items():
            send(ws_, {"op": "subscribe", "sub": name, "streams": [{"workspace": ws}]})
            until(ws_, "subscribed")
        send(peer_ws, {"op": "subscribe", "sub": "me", "streams": [{"user": "me"}]})
        until(peer_ws, "subscribed")
        # A message in each channel settles every watcher's view of both, so what follows
        # is decided at once and arrives in the order it was sent.
        hidden = api.ok(api.post(f"/api/channels/{secret}/messages", owner, {"text": "s"}), 201)
        shown = api.ok(api.post(f"/api/channels/{public}/messages", owner, {"text": "p"}), 201)
        for name, ws_ in sockets.items():
            seen = [hidden["id"]] if name == "insider" else []
            assert [until(ws_, "event")["event"]["stream"] for _ in seen] == seen
            assert until(ws_, "event")["event"]["stream"] == shown["id"]
        # The reactions to the set-up and to these messages are in before the signals.
        settled = reactions_quiet(chorus.database_url)

        def signal(target: dict[str, str], n: int) -> None:
            send(typist, {"op": "signal", "kind": "typing", "data": {"n": n}, **target})

        signal({"channel": secret}, 1)
        signal({"document": doc}, 2)
        signal({"channel": public}, 3)
        # Signals from one sender arrive in order: a leak would come before the 3.
        heard = {
            name: [until(sockets[name], "signal")["data"]["n"] for _ in range(count)]
            for name, count in (("insider", 3), ("outsider", 2), ("blind", 1))
        }
        assert heard == {"insider": [1, 2, 3], "outsider": [2, 3], "blind": [3]}, heard
        signal({"channel": dm}, 4)
        got = until(peer_ws, "signal")
        assert (got["channel"], got["workspace"], got["data"]) == (dm, None, {"n": 4})
    assert _stored_besides_presence(chorus.database_url, settled) == []


def test_signals_are_rate_limited(chorus: Running) -> None:
    api = chorus.api
    ws, owner, member, _ = _workspace(api)
    ch = _channel(api, ws, owner)
    with socket(chorus, member.access_token) as typist:
        for _ in range(60):
            send(typist, {"op": "signal", "channel": ch, "kind": "cursor", "data": {"x": 1}})
        send(typist, {"op": "ping"})
        replies = []
        while (frame := recv(typist)) != {"op": "pong"}:
            replies.append(frame)
    assert replies and {r["status"] for r in replies} == {429}


def test_a_signal_crosses_instances_through_redis(
    postgres_server: EmbeddedPostgres, tmp_path: Path, redis_url: str
) -> None:
    with running_chorus(postgres_server, tmp_path, redis_url=redis_url) as a:
        b_server = ServerThread(chorus_settings(tmp_path, redis_url=redis_url), a.database_url)
        b_server.start()
        b = Running(a.database_url, b_server, Api(b_server.url))
        try:
            ws, owner, member, _ = _workspace(a.api)
            ch = _channel(a.api, ws, owner)
            # The reactions to the set-up (a join's notification) are in before the signals.
            settled = reactions_quiet(a.database_url)
            with (
                socket(a, owner.access_token) as watcher,
                socket(b, member.access_token) as typist,
            ):
                send(watcher, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws}]})
                until(watcher, "subscribed")
                assert crosses(watcher, typist, ch)["from"] == member.user_id
            assert _stored_besides_presence(a.database_url, settled) == []
        finally:
            b.api.close()
            b_server.stop()


@pytest.mark.faults
@pytest.mark.slow
def test_a_redis_outage_stops_only_cross_instance_signals(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path)
    url = redis_server.start()
    try:
        with running_chorus(postgres_server, tmp_path, redis_url=url) as a:
            b_server = ServerThread(chorus_settings(tmp_path, redis_url=url), a.database_url)
            b_server.start()
            b = Running(a.database_url, b_server, Api(b_server.url))
            try:
                ws, owner, member, _ = _workspace(a.api)
                ch = a.api.ok(
                    a.api.post(f"/api/workspaces/{ws}/channels", owner, {"name": "c"}), 201
                )["id"]
                with (
                    socket(a, owner.access_token) as watcher,
                    socket(b, member.access_token) as typist,
                ):
                    send(watcher, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws}]})
                    until(watcher, "subscribed")
                    crosses(watcher, typist, ch)
                    redis_server.stop()
                    # Commands commit and subscriptions deliver: the store carries them.
                    sent = b.api.post(
                        f"/api/channels/{ch}/messages", member, {"text": "still here"}
                    )
                    assert sent.status_code == 201
                    while (frame := recv(watcher))["op"] != "event":
                        pass
                    assert frame["event"]["stream"] == sent.json()["id"]
                    # Redis back on the same address: signals cross again.
                    redis_server.start(port=redis_server.port)
                    assert crosses(watcher, typist, ch)["from"] == member.user_id
            finally:
                b.api.close()
                b_server.stop()
    finally:
        redis_server.stop()
