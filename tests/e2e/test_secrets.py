"""Secrets (issue #7, item 12): passwords are kept only as argon2id hashes and appear in no
other table, no password or token reaches the server's log, and HTTP responses carry the
security headers a browser needs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from psycopg import sql
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import Api, Running, User
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.servers import new_database

pytestmark = pytest.mark.security

TIMEOUT = 10
# README, "Libraries": RFC 9106's low-memory profile.
ARGON2ID_PHC = re.compile(
    r"^\$argon2id\$v=19\$m=65536,t=3,p=4\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$"
)


def _every_table(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE'"
        " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        " ORDER BY 1, 2"
    ).fetchall()
    return [(str(schema), str(name)) for schema, name in rows]


def _cells(conn: psycopg.Connection[Any], schema: str, table: str) -> Iterator[bytes]:
    """Every value of the table as bytes: bytea as stored, anything else as its text."""
    query = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    for row in conn.execute(query):
        for value in row:
            if value is None:
                continue
            if isinstance(value, bytes | bytearray | memoryview):
                yield bytes(value)
            else:
                text = value if isinstance(value, str) else json.dumps(value, default=str)
                yield text.encode()


def _tables_holding(database_url: str, needle: str | bytes) -> set[str]:
    wanted = needle.encode() if isinstance(needle, str) else needle
    found = set()
    with psycopg.connect(database_url) as conn:
        for schema, table in _every_table(conn):
            if any(wanted in cell for cell in _cells(conn, schema, table)):
                found.add(f"{schema}.{table}")
    return found


def test_passwords_are_only_argon2id_hashes_in_every_table(chorus: Running) -> None:
    """A user's password and a workspace's join password: an argon2id PHC string in
    chorus_credentials, and nowhere else: not in the log, the read models, the idempotency
    records or the analytics schema."""
    api = chorus.api
    user_password = f"user pw {uuid.uuid4().hex}"
    join_password = f"join pw {uuid.uuid4().hex}"
    owner = api.signup("hashed", password=user_password)
    joiner = api.signup("joiner")
    workspace = api.ok(
        api.post(
            "/api/workspaces",
            owner,
            {"name": "locked", "visibility": "public", "password": join_password},
            headers={"Idempotency-Key": "ws-with-password"},
        ),
        201,
    )
    api.ok(api.post(f"/api/workspaces/{workspace['id']}/join", joiner, {"password": join_password}))
    # Every read model has applied all of it before the tables are searched.
    api.ok(api.get(f"/api/workspaces/{workspace['id']}/members", owner))

    with psycopg.connect(chorus.database_url) as conn:
        hashes: dict[str, str] = dict(
            conn.execute(
                "SELECT subject_id::text, password_hash FROM chorus_credentials"
                " WHERE subject_id::text IN (%s, %s)",
                (owner.user_id, workspace["id"]),
            ).fetchall()
        )
    assert set(hashes) == {owner.user_id, workspace["id"]}
    for subject, stored in hashes.items():
        assert ARGON2ID_PHC.match(stored), (subject, stored)

    for secret in (user_password, join_password):
        assert _tables_holding(chorus.database_url, secret) == set()
    # The same search finds what is meant to be there (so it reads every kind of column):
    # the workspace's name in the log (bytea) and in its read model (text), the username in
    # the users read model (in the log it is sealed, issue 20).
    assert {"public.chorus_events", "public.rm_workspaces"} <= _tables_holding(
        chorus.database_url, "locked"
    )
    assert "public.rm_users" in _tables_holding(chorus.database_url, owner.username)
    assert "public.chorus_credentials" in _tables_holding(
        chorus.database_url, hashes[owner.user_id]
    )


def test_tokens_are_stored_nowhere(chorus: Running) -> None:
    """Refresh tokens are kept only as SHA-256 digests; access tokens are not kept at all."""
    api = chorus.api
    user = api.signup("tokens")
    rotated = api.ok(api.http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token}))
    tokens = [user.access_token, user.refresh_token, rotated["access_token"]]
    tokens.append(rotated["refresh_token"])
    for token in tokens:
        assert _tables_holding(chorus.database_url, token) == set()
    # The search reads the bytea column where the digests are.
    for refresh in (user.refresh_token, rotated["refresh_token"]):
        digest = hashlib.sha256(refresh.encode()).digest()
        assert _tables_holding(chorus.database_url, digest) == {"public.chorus_refresh_tokens"}


# -- logs --------------------------------------------------------------------------------


def _ws_roundtrip(url: str) -> tuple[int, str] | None:
    """Opens a socket and waits for its first frame; the close, if it was refused."""
    with connect(url, open_timeout=TIMEOUT) as ws:
        try:
            if "/ws?" in url:
                ws.send(json.dumps({"op": "ping"}))
            ws.recv(timeout=TIMEOUT)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason
    return None


def _log_secrets(
    postgres_server: EmbeddedPostgres, tmp_path: Path, log_format: str
) -> tuple[str, dict[str, str]]:
    """Runs sign-up, failed and good logins, refresh, refresh-token reuse, logout, a
    workspace join password, REST with good and forged tokens, and both WebSockets with
    ``?token=`` against a real ``chorus serve`` (log level info, uvicorn's access log on);
    returns its log and every secret it was handed."""
    secrets: dict[str, str] = {}
    with new_database(postgres_server) as url, processes() as started:
        server = ChorusProcess(tmp_path / "serve", url, env={"CHORUS_LOG_FORMAT": log_format})
        start_all(started, server)
        api = Api(server.url)
        try:
            password = f"pw-{uuid.uuid4().hex}"
            secrets["password"] = password
            user = api.signup("logged", password=password)
            secrets["signup access"], secrets["signup refresh"] = (
                user.access_token,
                user.refresh_token,
            )
            wrong = f"wrong-{uuid.uuid4().hex}"
            secrets["wrong password"] = wrong
            body = {"username": user.username, "password": wrong}
            assert api.http.post("/api/auth/login", json=body).status_code == 401
            body["password"] = password
            login = api.ok(api.http.post("/api/auth/login", json=body))
            secrets["login access"], secrets["login refresh"] = (
                login["access_token"],
                login["refresh_token"],
            )
            pair = api.ok(
                api.http.post("/api/auth/refresh", json={"refresh_token": login["refresh_token"]})
            )
            secrets["refreshed access"], secrets["refreshed refresh"] = (
                pair["access_token"],
                pair["refresh_token"],
            )
            # Reuse (a warning on the server) revokes the family; then a logout of another.
            reuse = {"refresh_token": login["refresh_token"]}
            assert api.http.post("/api/auth/refresh", json=reuse).status_code == 401
            logout = {"refresh_token": user.refresh_token}
            assert api.http.post("/api/auth/logout", json=logout).status_code == 204
            # The logout ended the sign-up's session (issue 17): its access token is refused,
            # and what follows runs in a new session.
            assert api.http.get("/api/auth/me", headers=user.headers).status_code == 401
            again = api.ok(api.http.post("/api/auth/login", json=body))
            secrets["second login access"], secrets["second login refresh"] = (
                again["access_token"],
                again["refresh_token"],
            )
            user = dataclasses.replace(
                user, access_token=again["access_token"], refresh_token=again["refresh_token"]
            )

            forged = jwt.encode({"sub": user.user_id}, "forged-" + "k" * 40, algorithm="HS256")
            secrets["forged access"] = forged
            assert api.http.get("/api/auth/me", headers=user.headers).status_code == 200
            bad = {"Authorization": f"Bearer {forged}"}
            assert api.http.get("/api/auth/me", headers=bad).status_code == 401
            # REST takes no token in the URL (401), and the access log does not keep it.
            query = {"token": user.access_token}
            assert api.http.get("/api/auth/me", params=query).status_code == 401

            join_password = f"join-{uuid.uuid4().hex}"
            secrets["join password"] = join_password
            ws = api.ok(
                api.post(
                    "/api/workspaces",
                    user,
                    {"name": "w", "visibility": "public", "password": join_password},
                ),
                201,
            )
            other = api.signup("joiner")
            secrets["joiner access"] = other.access_token
            join = {"password": join_password}
            api.ok(api.post(f"/api/workspaces/{ws['id']}/join", other, join))
            doc = api.ok(
                api.post(f"/api/workspaces/{ws['id']}/documents", user, {"title": "d"}), 201
            )
            # Invite codes (issue #16, finding 15): the old route with the code in the URL
            # still works and its code stays out of the log, as does one sent in the body.
            for route in ("path", "body"):
                invite = api.ok(api.post(f"/api/workspaces/{ws['id']}/invites", user), 201)
                code = invite["code"]
                secrets[f"invite code ({route})"] = code
                invitee = api.signup(f"invitee_{route}")
                if route == "path":
                    accepted = api.post(f"/api/invites/{code}/accept", invitee)
                else:
                    accepted = api.post("/api/invites/accept", invitee, {"code": code})
                assert api.ok(accepted)["workspace_id"] == ws["id"]

            base = server.url.replace("http", "ws", 1)
            assert _ws_roundtrip(f"{base}/ws?token={user.access_token}") is None
            assert _ws_roundtrip(f"{base}/yjs/{doc['id']}?token={user.access_token}") is None
            assert _ws_roundtrip(f"{base}/ws?token={forged}") == (
                4401,
                "unauthorized: bad signature",
            )
            refused = _ws_roundtrip(f"{base}/yjs/{doc['id']}?token={forged}")
            assert refused is not None and refused[0] == 4401
            # Lines of earlier requests are written before their answers; one more request
            # after the sockets closed, so their lines are in too.
            assert api.http.get("/health").status_code == 200
        finally:
            api.close()
        for process in started:
            process.stop()
        log = server.log_path.read_text(errors="replace")
    return log, secrets


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_password_or_token_reaches_the_server_log(
    postgres_server: EmbeddedPostgres, tmp_path: Path, log_format: str
) -> None:
    """In both formats (issue 22: JSON lines carry the request's fields too)."""
    log, secrets = _log_secrets(postgres_server, tmp_path, log_format)
    # The log did record the flow (so finding nothing in it means something).
    for seen in (
        '"POST /api/auth/login',
        '"POST /api/auth/refresh',
        '"GET /api/auth/me',
        '"WebSocket /ws?',
        '"WebSocket /yjs/',
        '"POST /api/invites/[redacted]/accept',
        '"POST /api/invites/accept',
    ):
        assert seen in log, (seen, log[-3000:])
    for what, secret in secrets.items():
        assert secret not in log, what
        for part in secret.split(".")[1:]:
            # The payload and signature of a JWT are unique to it (its header is not).
            assert part not in log, f"part of the {what} token"


# -- security headers --------------------------------------------------------------------


def _check_common_headers(response: httpx.Response) -> None:
    h = response.headers
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    assert h.get("x-content-type-options") == "nosniff", where
    assert h.get("referrer-policy") == "no-referrer", where
    assert h.get("x-frame-options") == "DENY", where
    assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), where


def _no_store(response: httpx.Response) -> None:
    assert "no-store" in response.headers.get("cache-control", ""), (
        response.request.url.path,
        response.status_code,
        response.headers.get("cache-control"),
    )


def test_security_headers_on_every_kind_of_response(chorus: Running) -> None:
    """nosniff, no referrer, no framing (X-Frame-Options and CSP frame-ancestors) on
    successes, problems and the router's 404; no-store on every auth answer and on API
    answers with private data; a CSP that runs nothing in API answers."""
    api = chorus.api
    http = api.http
    user: User = api.signup("headers")
    auth_responses = [
        http.post(
            "/api/auth/signup",
            json={"username": f"h_{uuid.uuid4().hex[:10]}", "password": "plum-Orbit-kettle-42"},
        ),
        http.post("/api/auth/login", json={"username": user.username, "password": user.password}),
        http.post("/api/auth/login", json={"username": user.username, "password": "wrong one"}),
        http.post("/api/auth/refresh", json={"refresh_token": user.refresh_token}),
        http.post("/api/auth/refresh", json={"refresh_token": "spent-or-unknown"}),
        http.get("/api/auth/me", headers=user.headers),
        http.get("/api/auth/me"),
    ]
    assert [r.status_code for r in auth_responses] == [201, 200, 401, 200, 401, 200, 401]
    # The login's session: the sign-up's goes on for the requests below (issue 17: a logout
    # ends its session's access tokens).
    logout = http.post(
        "/api/auth/logout", json={"refresh_token": auth_responses[1].json()["refresh_token"]}
    )
    assert logout.status_code == 204
    auth_responses.append(logout)
    for r in auth_responses:
        _check_common_headers(r)
        _no_store(r)

    others = [
        http.get("/health"),
        http.get("/ready"),
        http.get("/api/workspaces", headers=user.headers),
        http.post("/api/workspaces", json={"name": ""}, headers=user.headers),  # 422
        http.get("/api/workspaces/not-a-workspace", headers=user.headers),  # 404
        http.get("/no/such/path"),  # 404 from the router
        http.get("/schema/openapi.json"),
    ]
    assert [r.status_code for r in others] == [200, 200, 200, 422, 404, 404, 200]
    for r in others:
        _check_common_headers(r)
    # What carries private data is not cached either.
    for r in others[2:5]:
        _no_store(r)
    # The API answers JSON, never a page to run scripts in.
    assert "default-src 'none'" in others[2].headers["content-security-policy"]


def test_cors_preflight_and_websocket_handshake_still_work_with_the_headers(
    chorus: Running,
) -> None:
    """The headers do not get in the way of an allowed origin's browser client."""
    user = chorus.api.signup("cors")
    preflight = chorus.api.http.options(
        "/api/auth/me",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers.get("access-control-allow-origin") == "https://app.example"
    base = chorus.server.url.replace("http", "ws", 1)
    assert _ws_roundtrip(f"{base}/ws?token={user.access_token}") is None
