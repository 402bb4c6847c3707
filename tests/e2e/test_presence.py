"""Presence: online while a socket is open on any instance, offline when it closes or when
its instance dies."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from websockets.sync.client import connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.e2e.test_websocket import send, socket, until
from tests.fixtures.chorus import Api, Running, User, running_chorus
from tests.fixtures.processes import ChorusProcess, processes, start_all

HEARTBEAT_S = 0.3


def _status(api: Api, ws: str, viewer: User) -> dict[str, str]:
    items = api.ok(api.get(f"/api/workspaces/{ws}/presence", viewer))["items"]
    return {i["user_id"]: i["status"] for i in items}


def _wait_for_status(api: Api, ws: str, viewer: User, user: User, status: str) -> None:
    """Sessions end after the socket closes, asynchronously: poll the read model, bounded."""
    deadline = time.monotonic() + 20
    while _status(api, ws, viewer).get(user.user_id) != status:
        assert time.monotonic() < deadline, f"{user.username} never became {status}"
        time.sleep(0.05)


def test_online_while_connected_offline_after(chorus: Running) -> None:
    api = chorus.api
    owner, member = api.signup("own"), api.signup("mem")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "P", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", member))
    assert _status(api, ws, owner) == {owner.user_id: "offline", member.user_id: "offline"}
    with socket(chorus, member.access_token) as conn:
        send(conn, {"op": "ping"})
        until(conn, "pong")
        _wait_for_status(api, ws, owner, member, "online")
        with socket(chorus, member.access_token) as second:
            send(second, {"op": "ping"})
            until(second, "pong")
        # One of two sessions closed: still online.
        assert _status(api, ws, owner)[member.user_id] == "online"
    _wait_for_status(api, ws, owner, member, "offline")
    items = api.ok(api.get(f"/api/workspaces/{ws}/presence", owner))["items"]
    seen = next(i for i in items if i["user_id"] == member.user_id)
    assert seen["last_seen"] is not None
    # Outsiders cannot see a workspace's presence.
    assert api.get(f"/api/workspaces/{ws}/presence", api.signup("out")).status_code == 404
    # Sessions are events in the user's presence stream.
    with psycopg.connect(chorus.database_url) as conn_db:
        kinds = [
            r[0].rsplit(".", 1)[-1]
            for r in conn_db.execute(
                "SELECT topic FROM chorus_events WHERE topic LIKE 'domain.presence:%%'"
                " ORDER BY notification_id"
            ).fetchall()
        ]
    assert kinds.count("SessionStarted") >= 2 and kinds.count("SessionEnded") >= 2


@pytest.mark.slow
def test_sessions_of_a_killed_instance_go_offline(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(postgres_server, tmp_path, presence_heartbeat_s=HEARTBEAT_S) as a:
        api = a.api
        owner, member = api.signup("own"), api.signup("mem")
        ws = api.ok(api.post("/api/workspaces", owner, {"name": "K", "visibility": "public"}), 201)[
            "id"
        ]
        api.ok(api.post(f"/api/workspaces/{ws}/join", member))
        with processes() as instances:
            b = ChorusProcess(
                tmp_path / "b",
                a.database_url,
                env={"CHORUS_PRESENCE_HEARTBEAT_S": str(HEARTBEAT_S)},
            )
            start_all(instances, b)
            url = b.url.replace("http", "ws") + f"/ws?token={member.access_token}"
            with connect(url, open_timeout=10) as conn:
                send(conn, {"op": "ping"})
                until(conn, "pong")
                _wait_for_status(api, ws, owner, member, "online")
                b.kill9()
            # Instance A notices B's silence and closes its sessions: offline within the
            # documented bound ((3 + 1) heartbeats, plus projection).
            started = time.monotonic()
            _wait_for_status(api, ws, owner, member, "offline")
            assert time.monotonic() - started < 20
