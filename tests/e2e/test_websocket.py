"""The /ws endpoint with a real WebSocket client against the running server."""

from __future__ import annotations

import base64
import json
import os
import socket as sockets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from application.commands import SendMessage
from domain.base import Cause
from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import SHORT_LINGER, TEST_SECRET, Api, Running, User
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.servers import new_database
from tests.fixtures.websocket import TIMEOUT, recv, send, socket, until

# Its tests wait for closed sockets' sessions to end: not a linger of 2 s each time.
CHORUS_SETTINGS = SHORT_LINGER


def events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [until(ws, "event") for _ in range(count)]


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=TIMEOUT)
    close = info.value.rcvd
    assert close is not None
    return close.code, close.reason


def _room(api: Api, owner: User, *members: User, private: bool = False) -> tuple[str, str]:
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "Live", "visibility": "public"}), 201)
    for m in members:
        api.ok(api.post(f"/api/workspaces/{ws['id']}/join", m))
    body = {"name": "live", "private": private}
    ch = api.ok(api.post(f"/api/workspaces/{ws['id']}/channels", owner, body), 201)
    return ws["id"], ch["id"]


# -- the handshake ------------------------------------------------------------------------------


def test_missing_forged_and_expired_tokens_are_refused(chorus: Running) -> None:
    user = chorus.api.signup("ws")
    forged = jwt.encode({"sub": user.user_id}, "not-the-key-" + "z" * 40, algorithm="HS256")
    for token in (None, forged, user.refresh_token):
        with socket(chorus, token) as ws:
            code, reason = closed_with(ws)
            assert code == 4401 and "unauthorized" in reason


def test_a_foreign_origin_is_refused(chorus: Running) -> None:
    user = chorus.api.signup("ws")
    with socket(chorus, user.access_token, Origin="https://evil.example") as ws:
        assert closed_with(ws) == (4403, "origin not allowed")
    with socket(chorus, user.access_token, Origin="https://app.example") as ws:
        send(ws, {"op": "ping"})
        assert recv(ws) == {"op": "pong"}


def test_the_socket_closes_when_its_token_lapses(chorus: Running) -> None:
    user = chorus.api.signup("ws")
    now = int(time.time())
    short = jwt.encode(
        {"iss": "chorus", "aud": "chorus-api", "sub": user.user_id, "iat": now, "nbf": now,
         "exp": now + 2, "jti": "short", "typ": "access"},
        TEST_SECRET, algorithm="HS256",
    )  # fmt: skip
    with socket(chorus, short) as ws:
        send(ws, {"op": "ping"})
        assert recv(ws) == {"op": "pong"}
        assert closed_with(ws) == (1008, "token expired")


# -- frames -------------------------------------------------------------------------------------


def test_bad_frames_get_error_frames_and_the_socket_stays_open(chorus: Running) -> None:
    user = chorus.api.signup("ws")
    with socket(chorus, user.access_token) as ws:
        ws.send("{not json")
        assert until(ws, "error")["status"] == 400
        send(ws, {"op": "fly"})
        assert until(ws, "error")["status"] == 422
        send(ws, {"op": "subscribe", "sub": "s", "streams": "all"})
        assert until(ws, "error")["status"] == 422
        ws.send(json.dumps({"op": "ping", "pad": "x" * 70_000}))
        assert until(ws, "error")["status"] == 413
        ws.send(b"\x00binary")
        assert until(ws, "error")["status"] == 400
        send(ws, {"op": "ping"})
        assert recv(ws) == {"op": "pong"}


def test_a_flood_is_rate_limited(chorus: Running) -> None:
    user = chorus.api.signup("ws")
    with socket(chorus, user.access_token) as ws:
        for _ in range(160):
            send(ws, {"op": "ping"})
        replies = [recv(ws) for _ in range(160)]
    limited = [r for r in replies if r["op"] == "error"]
    assert limited and all(r["status"] == 429 for r in limited)
    assert sum(r["op"] == "pong" for r in replies) >= 100


# -- commands -----------------------------------------------------------------------------------


def test_commands_are_acked_with_their_position_and_are_idempotent(chorus: Running) -> None:
    api, user = chorus.api, chorus.api.signup("ws")
    _, ch = _room(api, user)
    with socket(chorus, user.access_token) as ws:
        frame = {"op": "command", "id": "c-" + uuid.uuid4().hex, "type": "SendMessage",
                 "data": {"channel_id": ch, "text": "over the socket"}}  # fmt: skip
        send(ws, frame)
        ack = until(ws, "ack")
        assert ack["id"] == frame["id"] and isinstance(ack["position"], int)
        before = chorus.events()
        send(ws, frame)
        assert until(ws, "ack") == ack
        assert chorus.events() == before
        send(ws, {**frame, "id": "c2", "data": {"channel_id": str(uuid.uuid4()), "text": "x"}})
        error = until(ws, "error")
        assert (error["id"], error["status"]) == ("c2", 404)
        send(ws, {**frame, "id": "c3", "type": "RegisterUser", "data": {}})
        assert until(ws, "error")["status"] == 422
        send(ws, {**frame, "id": "c4", "data": {"channel_id": ch}})
        assert until(ws, "error")["status"] == 422
        assert chorus.events() == before
    api.position = ack["position"]
    timeline = api.ok(api.get(f"/api/channels/{ch}/messages", user))["items"]
    assert timeline[0]["id"] == ack["result"]["id"]


# -- subscriptions --------------------------------------------------------------------------------


def test_catch_up_then_live_in_order_exactly_once(chorus: Running) -> None:
    api = chorus.api
    owner, reader = api.signup("own"), api.signup("rdr")
    _, ch = _room(api, owner, reader)
    first = api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": "m0"}), 201)
    start = first["position"] - 1
    for i in range(1, 5):
        api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": f"m{i}"}), 201)
    with socket(chorus, reader.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "s1", "streams": [{"channel": ch}], "after": start})
        until(ws, "subscribed")
        caught_up = events(ws, 5)
        for i in range(5, 25):
            api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": f"m{i}"}), 201)
        live = events(ws, 20)
        send(ws, {"op": "ping"})
        assert recv(ws) == {"op": "pong"}  # nothing more was queued
    got = caught_up + live
    assert [e["event"]["data"]["text"] for e in got] == [f"m{i}" for i in range(25)]
    positions = [e["event"]["position"] for e in got]
    assert positions == sorted(set(positions))
    assert {e["sub"] for e in got} == {"s1"}


def test_resuming_with_after_gets_exactly_what_was_missed(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    _, ch = _room(api, owner)
    with socket(chorus, owner.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}]})
        until(ws, "subscribed")
        api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": "seen"}), 201)
        last = until(ws, "event")["event"]["position"]
    missed = [
        api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": f"missed {i}"}), 201)
        for i in range(3)
    ]
    with socket(chorus, owner.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}], "after": last})
        assert until(ws, "subscribed")["after"] == last
        got = events(ws, 3)
        assert [e["event"]["stream"] for e in got] == [m["id"] for m in missed]
        api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": "live"}), 201)
        assert until(ws, "event")["event"]["data"]["text"] == "live"


def test_private_channels_cannot_be_subscribed_by_outsiders(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    _, ch = _room(api, owner, member, private=True)
    with socket(chorus, member.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}], "after": 0})
        error = until(ws, "error")
        assert (error["sub"], error["status"]) == ("s", 404)
        send(ws, {"op": "subscribe", "sub": "u", "streams": [{"user": str(uuid.uuid4())}]})
        assert until(ws, "error")["status"] == 404


def test_after_in_the_future_or_negative_is_refused(chorus: Running) -> None:
    api = chorus.api
    owner = api.signup("own")
    _, ch = _room(api, owner)
    with socket(chorus, owner.access_token) as ws:
        for after in (10**12, -1):
            send(
                ws,
                {
                    "op": "subscribe",
                    "sub": f"s{after}",
                    "streams": [{"channel": ch}],
                    "after": after,
                },
            )
            error = until(ws, "error")
            assert error["status"] == 422 and "after" in error["detail"]


def test_losing_access_ends_the_subscription(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws_id, ch = _room(api, owner, member, private=True)
    api.ok(api.post(f"/api/channels/{ch}/members", owner, {"user_id": member.user_id}))
    with socket(chorus, member.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "c", "streams": [{"channel": ch}]})
        send(ws, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws_id}]})
        assert {until(ws, "subscribed")["sub"], until(ws, "subscribed")["sub"]} == {"c", "w"}
        api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": "before"}), 201)
        both = {until(ws, "event")["sub"], until(ws, "event")["sub"]}
        assert both == {"c", "w"}
        # Removed from the channel: its subscription ends; the workspace one no longer
        # shows that channel (not even the removal).
        api.ok(api.delete(f"/api/channels/{ch}/members/{member.user_id}", owner))
        ended = until(ws, "end")
        assert ended["sub"] == "c" and ended["reason"] == "access revoked"
        # The workspace subscription goes on, without the private channel any more.
        api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": "after"}), 201)
        api.ok(api.post(f"/api/workspaces/{ws_id}/members/{member.user_id}/kick", owner))
        end = until(ws, "end")
        assert end["sub"] == "w" and end["reason"] == "access revoked"


def test_a_workspace_subscription_hides_private_channels(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws_id, public = _room(api, owner, member)
    secret = api.ok(
        api.post(f"/api/workspaces/{ws_id}/channels", owner, {"name": "s", "private": True}), 201
    )["id"]
    with socket(chorus, member.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws_id}], "after": 0})
        until(ws, "subscribed")
        api.ok(api.post(f"/api/channels/{secret}/messages", owner, {"text": "hidden"}), 201)
        api.ok(api.post(f"/api/channels/{public}/messages", owner, {"text": "shown"}), 201)
        history = [until(ws, "event")]
        while history[-1]["event"]["data"].get("text") != "shown":
            history.append(until(ws, "event"))
        streams = {f["event"]["stream"] for f in history}
        assert public in streams and ws_id in streams
        assert secret not in streams
        assert "hidden" not in [f["event"]["data"].get("text") for f in history]


def test_direct_messages_arrive_on_the_user_stream(chorus: Running) -> None:
    api = chorus.api
    a, b, c = api.signup("a"), api.signup("b"), api.signup("c")
    api.acquaint(a, b, c)
    with socket(chorus, b.access_token) as ws:
        send(ws, {"op": "subscribe", "sub": "me", "streams": [{"user": "me"}]})
        until(ws, "subscribed")
        dm = api.ok(api.post("/api/dms", a, {"user_id": b.user_id}), 201)["channel_id"]
        other = api.ok(api.post("/api/dms", a, {"user_id": c.user_id}), 201)["channel_id"]
        api.ok(api.post(f"/api/channels/{other}/messages", a, {"text": "not for b"}), 201)
        api.ok(api.post(f"/api/channels/{dm}/messages", a, {"text": "for b"}), 201)
        created, sent = until(ws, "event"), until(ws, "event")
        assert created["event"]["type"] == "ChannelCreated" and created["event"]["stream"] == dm
        assert sent["event"]["data"]["text"] == "for b"


@pytest.mark.slow
def test_two_server_processes_act_as_one_service(
    postgres_server: EmbeddedPostgres, tmp_path: Path, redis_url: str
) -> None:
    """Two `chorus serve` processes on one PostgreSQL and Redis: 200 messages posted on B
    reach a subscriber on A in order, exactly once; it then resumes on B with ``after`` and
    gets exactly what it missed, then live ones."""
    with new_database(postgres_server) as url, processes() as instances:
        a = ChorusProcess(tmp_path / "a", url, env={"REDIS_URL": redis_url})
        b = ChorusProcess(tmp_path / "b", url, env={"REDIS_URL": redis_url})
        start_all(instances, a, b)
        api_a, api_b = Api(a.url), Api(b.url)
        try:
            owner = api_b.signup("own")
            _, ch = _room(api_b, owner)
            with connect(f"{a.url.replace('http', 'ws')}/ws?token={owner.access_token}") as ws:
                send(ws, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}]})
                until(ws, "subscribed")
                sent = [
                    api_b.ok(
                        api_b.post(f"/api/channels/{ch}/messages", owner, {"text": f"{i}"}), 201
                    )
                    for i in range(200)
                ]
                got = events(ws, 200)
                send(ws, {"op": "ping"})
                assert recv(ws) == {"op": "pong"}  # nothing more, nothing twice
            assert [e["event"]["stream"] for e in got] == [m["id"] for m in sent]
            last = got[-1]["event"]["position"]
            missed = [
                api_a.ok(api_a.post(f"/api/channels/{ch}/messages", owner, {"text": "x"}), 201)
                for _ in range(3)
            ]
            with connect(f"{b.url.replace('http', 'ws')}/ws?token={owner.access_token}") as ws:
                send(
                    ws, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}], "after": last}
                )
                until(ws, "subscribed")
                assert [e["event"]["stream"] for e in events(ws, 3)] == [m["id"] for m in missed]
                live = api_a.ok(
                    api_a.post(f"/api/channels/{ch}/messages", owner, {"text": "y"}), 201
                )
                assert until(ws, "event")["event"]["stream"] == live["id"]
        finally:
            api_a.close()
            api_b.close()


def test_no_gap_or_duplicate_at_the_catch_up_seam(chorus: Running) -> None:
    """Writers keep posting while a subscriber catches up from 0 and goes live."""
    api = chorus.api
    owner = api.signup("own")
    _, ch = _room(api, owner)
    for i in range(30):
        api.ok(api.post(f"/api/channels/{ch}/messages", owner, {"text": f"old {i}"}), 201)
    done = threading.Event()
    posted: list[int] = []

    def writer() -> None:
        client = Api(chorus.server.url)
        try:
            for i in range(60):
                r = client.post(f"/api/channels/{ch}/messages", owner, {"text": f"new {i}"})
                posted.append(r.json()["position"])
        finally:
            client.close()
            done.set()

    thread = threading.Thread(target=writer)
    with socket(chorus, owner.access_token) as ws:
        thread.start()
        send(ws, {"op": "subscribe", "sub": "s", "streams": [{"channel": ch}], "after": 0})
        until(ws, "subscribed")
        got = [until(ws, "event") for _ in range(1 + 30 + 60)]  # ChannelCreated + messages
        thread.join()
    positions = [e["event"]["position"] for e in got]
    assert positions == sorted(set(positions))
    assert set(posted) <= set(positions)


def _raw_socket(chorus: Running, token: str) -> sockets.socket:
    """A WebSocket opened by hand on a plain TCP socket, with a small receive window, so the
    test decides exactly when (never) to read."""
    raw = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
    raw.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", chorus.server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return raw


def _send_text(raw: sockets.socket, text: str) -> None:
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    raw.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


def test_a_consumer_that_stops_reading_is_cut_off(
    chorus: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server buffers a bounded number of batches per subscription, then ends the
    subscription and closes the socket instead of buffering without bound."""
    from api.realtime import socket as realtime

    monkeypatch.setattr(realtime, "INBOX_BATCHES", 2)
    api = chorus.api
    owner = api.signup("own")
    _, ch = _room(api, owner)
    hub = chorus.server.services.hub
    before = hub.listener_count
    raw = _raw_socket(chorus, owner.access_token)
    try:
        _send_text(raw, json.dumps({"op": "subscribe", "sub": "s", "streams": [{"channel": ch}]}))
        deadline = time.monotonic() + TIMEOUT
        while hub.listener_count == before:  # bounded wait for the subscription to register
            assert time.monotonic() < deadline
            time.sleep(0.01)
        app, text = chorus.server.services.app, "x" * 3900
        for _ in range(3000):  # up to ~12 MB of frames nobody reads
            app.execute(SendMessage(channel_id=ch, text=text), Cause(owner.user_id))
            if hub.listener_count == before:
                break
        assert hub.listener_count == before, "the unread subscription was never cut off"
        # The server dropped the connection rather than waiting on it: its session ended
        # (the handler returned) although the client still reads nothing.
        deadline = time.monotonic() + TIMEOUT
        while _open_sessions(chorus, owner) > 0:
            assert time.monotonic() < deadline, "the stuck connection was never dropped"
            time.sleep(0.05)
    finally:
        raw.close()


def _open_sessions(chorus: Running, user: User) -> int:
    with psycopg.connect(chorus.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE topic LIKE '%%SessionStarted')"
            " - count(*) FILTER (WHERE topic LIKE '%%SessionEnded')"
            " FROM chorus_events WHERE topic LIKE 'domain.presence:%%'"
            " AND convert_from(state, 'UTF8')::jsonb ->> 'actor_id' = %s",
            (user.user_id,),
        ).fetchone()
    return int(row[0]) if row else 0
