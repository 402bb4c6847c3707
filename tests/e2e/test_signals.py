"""Ephemeral signals: relayed to the workspace's subscribers, across instances through Redis,
never stored."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.sync.client import ClientConnection

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.e2e.test_websocket import recv, send, socket, until
from tests.fixtures.chorus import (
    Api,
    Running,
    ServerThread,
    User,
    chorus_settings,
    running_chorus,
)
from tests.fixtures.servers import RedisServer


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


def test_a_typing_signal_reaches_subscribers_and_is_not_stored(chorus: Running) -> None:
    api = chorus.api
    ws, owner, member, outsider = _workspace(api)
    with (
        socket(chorus, owner.access_token) as watcher,
        socket(chorus, member.access_token) as typist,
    ):
        send(watcher, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws}]})
        until(watcher, "subscribed")
        send(typist, {"op": "signal", "workspace": ws, "kind": "typing", "data": {"channel": "c"}})
        got = until(watcher, "signal")
        assert got == {
            "op": "signal", "workspace": ws, "kind": "typing",
            "from": member.user_id, "data": {"channel": "c"},
        }  # fmt: skip
        # The sender does not hear its own signal; nothing reached the store.
        send(typist, {"op": "ping"})
        assert recv(typist) == {"op": "pong"}
        send(typist, {"op": "signal", "workspace": ws, "kind": "shout", "data": {}})
        assert until(typist, "error")["status"] == 422
    with socket(chorus, outsider.access_token) as intruder:
        send(intruder, {"op": "signal", "workspace": ws, "kind": "typing"})
        assert until(intruder, "error")["status"] == 404
    assert _stored_besides_presence(chorus.database_url, api.position) == []


def test_signals_are_rate_limited(chorus: Running) -> None:
    api = chorus.api
    ws, _, member, _ = _workspace(api)
    with socket(chorus, member.access_token) as typist:
        for _ in range(60):
            send(typist, {"op": "signal", "workspace": ws, "kind": "cursor", "data": {"x": 1}})
        send(typist, {"op": "ping"})
        replies = []
        while (frame := recv(typist)) != {"op": "pong"}:
            replies.append(frame)
    assert replies and {r["status"] for r in replies} == {429}


def _crosses(watcher: ClientConnection, typist: ClientConnection, ws: str) -> dict[str, Any]:
    """Sends signals until one reaches the other instance (Redis subscriptions start, and
    come back after an outage, asynchronously), within a bounded time."""
    deadline = time.monotonic() + 20
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        send(typist, {"op": "signal", "workspace": ws, "kind": "typing", "data": {"n": attempt}})
        try:
            while True:
                frame: dict[str, Any] = json.loads(watcher.recv(timeout=0.5))
                if frame["op"] == "signal":
                    return frame
        except TimeoutError:
            continue
    raise AssertionError("no signal crossed between the instances")


def test_a_signal_crosses_instances_through_redis(
    postgres_server: EmbeddedPostgres, tmp_path: Path, redis_url: str
) -> None:
    with running_chorus(postgres_server, tmp_path, redis_url=redis_url) as a:
        b_server = ServerThread(chorus_settings(tmp_path, redis_url=redis_url), a.database_url)
        b_server.start()
        b = Running(a.database_url, b_server, Api(b_server.url))
        try:
            ws, owner, member, _ = _workspace(a.api)
            with (
                socket(a, owner.access_token) as watcher,
                socket(b, member.access_token) as typist,
            ):
                send(watcher, {"op": "subscribe", "sub": "w", "streams": [{"workspace": ws}]})
                until(watcher, "subscribed")
                assert _crosses(watcher, typist, ws)["from"] == member.user_id
            assert _stored_besides_presence(a.database_url, a.api.position) == []
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
                    _crosses(watcher, typist, ws)
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
                    assert _crosses(watcher, typist, ws)["from"] == member.user_id
            finally:
                b.api.close()
                b_server.stop()
    finally:
        redis_server.stop()
