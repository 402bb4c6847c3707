"""Presence: online while a socket is open on any instance, offline when it closes or when
its instance dies."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
from websockets.sync.client import connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api, Running, User, running_chorus
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.websocket import send, socket, until

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
    # Two sockets at once are one session (issue #16: only the first connect and the last
    # disconnect are recorded).
    assert kinds.count("SessionStarted") >= 1 and kinds.count("SessionEnded") >= 1
    assert _session_events(chorus.database_url, member) == (1, 1)


def _session_events(database_url: str, user: User) -> tuple[int, int]:
    """(SessionStarted, SessionEnded) events caused by ``user``."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE topic LIKE '%%.SessionStarted'),"
            " count(*) FILTER (WHERE topic LIKE '%%.SessionEnded') FROM chorus_events"
            " WHERE topic LIKE 'domain.presence:%%'"
            " AND convert_from(state, 'UTF8')::jsonb ->> 'actor_id' = %s",
            (user.user_id,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_connect_close_churn_does_not_grow_the_log(chorus: Running) -> None:
    """Issue #16, finding 13: each /ws connect and close used to append two permanent events.
    Now a user's churn on an instance costs one session, ended once they stay away."""
    api = chorus.api
    owner, churner = api.signup("own"), api.signup("churn")
    ws = api.ok(api.post("/api/workspaces", owner, {"name": "C", "visibility": "public"}), 201)[
        "id"
    ]
    api.ok(api.post(f"/api/workspaces/{ws}/join", churner))
    for _ in range(60):
        with socket(chorus, churner.access_token) as conn:
            send(conn, {"op": "ping"})
            until(conn, "pong")
    # Several at once, too.
    with ExitStack() as stack:
        for _ in range(5):
            conn = stack.enter_context(socket(chorus, churner.access_token))
            send(conn, {"op": "ping"})
            until(conn, "pong")
        _wait_for_status(api, ws, owner, churner, "online")
    _wait_for_status(api, ws, owner, churner, "offline")
    started, ended = _session_events(chorus.database_url, churner)
    # 65 sockets: one session (two if the test's own pauses outlasted the linger).
    assert 1 <= started <= 2 and ended == started, (started, ended)


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
