"""Sessions can be ended (issue 17, finding 6): logout, logout everywhere, the session list,
and a password change end sessions at once: their access tokens are refused on every route
and every instance, their refresh tokens are spent for good, and their open ``/ws`` and
``/yjs`` sockets close with 4401 ``session ended``. Each is an event; refused requests append
nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import (
    SHORT_LINGER,
    Api,
    Running,
    ServerThread,
    User,
    chorus_settings,
    running_chorus,
    wait_for_sessions_to_end,
)
from tests.fixtures.yjs import YClient

pytestmark = pytest.mark.security

# Its tests wait for closed sockets' sessions to end: not a linger of 2 s each time.
CHORUS_SETTINGS = SHORT_LINGER

TIMEOUT = 10
NEW_PASSWORD = "violet-Harbour-lantern-73"
CLOSE_SESSION_ENDED = 4401


# -- helpers -----------------------------------------------------------------------------------


def login(api: Api, user: User, password: str | None = None) -> User:
    r = api.http.post(
        "/api/auth/login",
        json={"username": user.username, "password": password or user.password},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return User(
        user.user_id,
        user.username,
        password or user.password,
        body["access_token"],
        body["refresh_token"],
    )


def works(api: Api, user: User) -> bool:
    """Whether the user's access token is honoured, on a read and on a write."""
    me = api.get("/api/auth/me", user)
    listed = api.get("/api/workspaces", user)
    assert me.status_code in (200, 401) and listed.status_code == me.status_code, (me, listed)
    if me.status_code == 401:
        assert me.headers["content-type"].startswith("application/problem+json")
    return me.status_code == 200


def refreshes(api: Api, user: User) -> bool:
    r = api.http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


@contextmanager
def ws(base_url: str, token: str) -> Iterator[ClientConnection]:
    url = base_url.replace("http", "ws", 1) + f"/ws?token={token}"
    with connect(url, open_timeout=TIMEOUT) as socket:
        # A round trip: the server has taken the socket in before the test goes on.
        socket.send(json.dumps({"op": "ping"}))
        frame = json.loads(socket.recv(timeout=TIMEOUT))
        assert frame["op"] in ("pong", "error"), frame
        yield socket


def closed_with(socket: ClientConnection) -> tuple[int, str]:
    """Reads until the server closes the socket; its close code and reason."""
    try:
        while True:
            socket.recv(timeout=TIMEOUT)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd.code, closed.rcvd.reason


def a_document(api: Api, user: User) -> str:
    ws_id = api.ok(api.post("/api/workspaces", user, {"name": "Sessions"}), 201)["id"]
    return str(
        api.ok(api.post(f"/api/workspaces/{ws_id}/documents", user, {"title": "Notes"}), 201)["id"]
    )


def sessions(api: Api, user: User) -> list[dict[str, Any]]:
    body = api.ok(api.http.get("/api/auth/sessions", headers=user.headers))
    items: list[dict[str, Any]] = body["items"]
    return items


def current_session(api: Api, user: User) -> str:
    [mine] = [s for s in sessions(api, user) if s["current"]]
    return str(mine["id"])


def log_of(database_url: str, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The session and password events of a user, as stored, in order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT topic, state FROM chorus_events"
            " WHERE topic LIKE ANY (ARRAY['%.SignedIn', '%.SignedOut', '%.PasswordChanged'])"
            " ORDER BY notification_id"
        ).fetchall()
    found = []
    for topic, state in rows:
        data = json.loads(bytes(state))
        if user_id in (data.get("user_id"), data.get("actor_id")):
            found.append((topic.rsplit(".", 1)[-1], data))
    return found


# -- logout ------------------------------------------------------------------------------------


def test_logout_ends_the_access_token_and_closes_its_sockets(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("leaver")
    other = login(api, user)  # another session of the same user: not ended
    document = a_document(api, user)
    with (
        ws(chorus.server.url, user.access_token) as socket,
        YClient(chorus.server.url, document, user.access_token) as editor,
    ):
        editor.wait_synced()
        r = api.http.post("/api/auth/logout", json={"refresh_token": user.refresh_token})
        assert r.status_code == 204, r.text
        # At once: the very next request is refused.
        assert not works(api, user)
        assert closed_with(socket) == (CLOSE_SESSION_ENDED, "session ended")
        assert editor.wait_closed() == CLOSE_SESSION_ENDED
        assert editor.close_reason == "session ended"
    assert not refreshes(api, user)
    # A new socket with the ended session's token is refused at the handshake.
    url = chorus.server.url.replace("http", "ws", 1) + f"/ws?token={user.access_token}"
    with connect(url, open_timeout=TIMEOUT) as late:
        assert closed_with(late)[0] == CLOSE_SESSION_ENDED
    assert works(api, other) and refreshes(api, other)
    assert [name for name, _ in log_of(chorus.database_url, user.user_id)] == [
        "SignedIn",
        "SignedIn",
        "SignedOut",
    ]


def test_logout_with_the_access_token_alone(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("bearer")
    r = api.http.post("/api/auth/logout", headers=user.headers)
    assert r.status_code == 204, r.text
    assert not works(api, user)
    assert not refreshes(api, user)


def test_logout_all_ends_every_session(chorus: Running) -> None:
    api = chorus.api
    first = api.signup("everywhere")
    second, third = login(api, first), login(api, first)
    bystander = api.signup("bystander")
    with ws(chorus.server.url, second.access_token) as socket:
        r = api.http.post("/api/auth/logout-all", headers=third.headers)
        assert r.status_code == 200, r.text
        for session in (first, second, third):
            assert not works(api, session)
            assert not refreshes(api, session)
        assert closed_with(socket) == (CLOSE_SESSION_ENDED, "session ended")
    assert works(api, bystander)
    assert works(api, login(api, first))  # signing in again works
    names = [name for name, _ in log_of(chorus.database_url, first.user_id)]
    assert names.count("SignedOut") == 3


# -- the session list --------------------------------------------------------------------------


def test_sessions_are_listed_and_one_can_be_ended(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("lister")
    phone, laptop = login(api, user), login(api, user)
    listed = sessions(api, user)
    assert len(listed) == 3
    assert [s["current"] for s in listed].count(True) == 1
    for item in listed:
        # Minimal: no address, no user agent.
        assert set(item) == {"id", "created_at", "last_used_at", "current"}, item
    phone_id = current_session(api, phone)
    assert phone_id != current_session(api, laptop)

    r = api.http.delete(f"/api/auth/sessions/{phone_id}", headers=laptop.headers)
    assert r.status_code == 200, r.text
    assert not works(api, phone) and not refreshes(api, phone)
    assert works(api, user) and works(api, laptop)
    assert phone_id not in {s["id"] for s in sessions(api, user)}
    assert len(sessions(api, user)) == 2


def test_another_user_s_session_is_not_found(chorus: Running) -> None:
    api = chorus.api
    owner, stranger = api.signup("owner"), api.signup("stranger")
    theirs = current_session(api, owner)
    ended = login(api, stranger)
    ended_id = current_session(api, ended)
    api.ok(api.http.delete(f"/api/auth/sessions/{ended_id}", headers=stranger.headers))
    unknown = str(uuid.uuid4())
    wait_for_sessions_to_end(chorus.database_url)  # earlier sockets' presence
    before = chorus.events()
    answers = {}
    for session_id in (theirs, unknown, ended_id, "not-a-uuid", "0" * 40):
        r = api.http.delete(f"/api/auth/sessions/{session_id}", headers=stranger.headers)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        answers[session_id] = r.json()
    # Identical: another user's session reads exactly like an unknown or ended one.
    assert answers[theirs] == answers[unknown] == answers[ended_id]
    assert chorus.events() == before
    assert works(api, owner) and works(api, stranger)


# -- password change ---------------------------------------------------------------------------


def test_a_password_change_ends_every_other_session(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("changer")
    other = login(api, user)
    wait_for_sessions_to_end(chorus.database_url)  # earlier sockets' presence
    before = chorus.events()
    for body in (
        {"old_password": "not-the-Right-one-42", "new_password": NEW_PASSWORD},
        {"new_password": NEW_PASSWORD},
        {"old_password": user.password},
    ):
        r = api.http.post("/api/auth/password", json=body, headers=user.headers)
        assert r.status_code in (400, 403, 422), r.text
    assert chorus.events() == before
    assert works(api, other)

    with ws(chorus.server.url, other.access_token) as socket:
        r = api.http.post(
            "/api/auth/password",
            json={"old_password": user.password, "new_password": NEW_PASSWORD},
            headers=user.headers,
        )
        assert r.status_code == 200, r.text
        assert not works(api, other) and not refreshes(api, other)
        assert closed_with(socket) == (CLOSE_SESSION_ENDED, "session ended")
    # The session that changed it goes on, and refreshes.
    assert works(api, user) and refreshes(api, user)
    old = api.http.post(
        "/api/auth/login", json={"username": user.username, "password": user.password}
    )
    assert old.status_code == 401
    assert works(api, login(api, user, NEW_PASSWORD))
    names = [name for name, data in log_of(chorus.database_url, user.user_id)]
    assert "PasswordChanged" in names
    with psycopg.connect(chorus.database_url) as conn:
        states = conn.execute("SELECT state FROM chorus_events").fetchall()
    for (state,) in states:
        assert NEW_PASSWORD.encode() not in bytes(state)
        assert b"$argon2" not in bytes(state)


def test_a_wrong_old_password_counts_against_the_login_throttle(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    with running_chorus(
        postgres_server, tmp_path, login_free_failures_per_account=2, login_backoff_base_s=60
    ) as chorus:
        api = chorus.api
        user = api.signup("guessed")
        wait_for_sessions_to_end(chorus.database_url)  # earlier sockets' presence
        before = chorus.events()
        statuses = []
        for _ in range(3):
            r = api.http.post(
                "/api/auth/password",
                json={
                    "old_password": "a-Wrong-guess-" + uuid.uuid4().hex[:6],
                    "new_password": NEW_PASSWORD,
                },
                headers=user.headers,
            )
            statuses.append(r.status_code)
        assert statuses[:2] == [403, 403] and statuses[2] == 429, statuses
        # Backing off: even the right old password waits, and so does a login.
        right = api.http.post(
            "/api/auth/password",
            json={"old_password": user.password, "new_password": NEW_PASSWORD},
            headers=user.headers,
        )
        assert right.status_code == 429
        assert "retry-after" in right.headers
        assert chorus.events() == before


# -- stolen refresh token ----------------------------------------------------------------------


def test_a_stolen_refresh_token_is_useless_once_its_session_ends(chorus: Running) -> None:
    api = chorus.api
    victim = api.signup("victim")
    # The thief copies the session's tokens and keeps it alive with them.
    stolen = api.ok(
        api.http.post("/api/auth/refresh", json={"refresh_token": victim.refresh_token})
    )
    thief = User(
        victim.user_id,
        victim.username,
        "",
        stolen["access_token"],
        stolen["refresh_token"],
    )
    assert works(api, thief)
    # The victim, signed in elsewhere, sees a session they do not know and ends it.
    device = login(api, victim)
    strange = [s["id"] for s in sessions(api, device) if not s["current"]]
    assert len(strange) == 1
    api.ok(api.http.delete(f"/api/auth/sessions/{strange[0]}", headers=device.headers))
    assert not works(api, thief)
    assert not refreshes(api, thief)
    assert works(api, device)


# -- two instances -----------------------------------------------------------------------------


def test_an_ended_session_is_refused_by_every_instance(chorus: Running, tmp_path: Path) -> None:
    """The logout commits on instance A; instance B, following the same log, closes the
    session's socket and refuses its token from then on."""
    b = ServerThread(chorus_settings(tmp_path), chorus.database_url).start()
    b_api = Api(b.url)
    try:
        api = chorus.api
        user = api.signup("roamer")
        b_api.position = api.position  # B's reads wait for the sign-up
        assert works(b_api, user)
        with ws(b.url, user.access_token) as socket:
            r = api.http.post("/api/auth/logout", json={"refresh_token": user.refresh_token})
            assert r.status_code == 204
            assert not works(api, user)  # A: at once
            assert closed_with(socket) == (CLOSE_SESSION_ENDED, "session ended")
            assert not works(b_api, user)  # B: once it has the event, which closed the socket
        assert not refreshes(b_api, user)
    finally:
        b_api.close()
        b.stop()


def test_refused_session_requests_append_nothing(chorus: Running) -> None:
    api = chorus.api
    user = api.signup("quiet")
    wait_for_sessions_to_end(chorus.database_url)  # earlier sockets' presence
    before = chorus.events()
    anonymous: list[httpx.Response] = [
        api.http.post("/api/auth/logout-all"),
        api.http.get("/api/auth/sessions"),
        api.http.delete(f"/api/auth/sessions/{uuid.uuid4()}"),
        api.http.post("/api/auth/password", json={"old_password": "x", "new_password": "y"}),
        api.http.post("/api/auth/logout", json={"refresh_token": "not-a-token"}),
        api.http.post("/api/auth/logout"),
    ]
    assert [r.status_code for r in anonymous[:4]] == [401, 401, 401, 401]
    assert anonymous[4].status_code == 204  # an unknown refresh token: nothing to end
    assert anonymous[5].status_code == 401
    assert chorus.events() == before
    assert works(api, user)
