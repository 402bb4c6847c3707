"""An unmodified npm Yjs client (``yjs`` + ``y-websocket`` + ``ws``, tests/interop/yclient.mjs)
against two ``chorus serve`` instances on one database: what one writes through instance A,
another reads through instance B; both restarted, the document reads the same."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import TEST_SECRET, User, running_chorus
from tests.fixtures.processes import ChorusProcess, processes, start_all
from tests.fixtures.relays import TcpRelay
from tests.fixtures.servers import new_database

INTEROP = Path(__file__).resolve().parents[1] / "interop"
NODE = shutil.which("node")
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _npm_client_installed() -> None:
    """Not a skip: CI must run these. ``make test`` installs the client."""
    assert NODE is not None, "these tests need node on PATH"
    assert (INTEROP / "node_modules" / "y-websocket").is_dir(), (
        "run `make interop` (npm ci in tests/interop) first"
    )


class NodeClient:
    """One yclient.mjs process driven action by action over stdin; each action's result is
    read from its ``{"ok": ...}`` line (no sleeps)."""

    def __init__(self, base_url: str, document_id: str, token: str) -> None:
        assert NODE is not None
        self.proc = subprocess.Popen(
            [
                NODE,
                str(INTEROP / "yclient.mjs"),
                "--url",
                base_url.replace("http", "ws", 1) + "/yjs",
                "--doc",
                document_id,
                "--token",
                token,
                "--timeout-ms",
                str(TIMEOUT_MS),
                "--roots",
                "text:content,map:shapes",
                "--stdin-ops",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=INTEROP,
        )

    def do(self, action: str) -> list[dict[str, Any]]:
        """Runs one action; returns its result lines (fails on an error line)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # As a JSON string, so leading or trailing spaces in text survive.
        self.proc.stdin.write(json.dumps(action) + "\n")
        self.proc.stdin.flush()
        results: list[dict[str, Any]] = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"yclient exited during {action!r}: {results} {err[-2000:]}")
            result = json.loads(line)
            if "error" in result:
                raise AssertionError(f"{action!r} failed: {result}")
            if "ok" in result:
                assert result["ok"] == action, (result, action)
                return results
            results.append(result)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def node_clients() -> Iterator[list[NodeClient]]:
    started: list[NodeClient] = []
    try:
        yield started
    finally:
        for c in started:
            c.stop()


def node(started: list[NodeClient], base_url: str, document_id: str, token: str) -> NodeClient:
    c = NodeClient(base_url, document_id, token)
    started.append(c)
    return c


def signup(http: httpx.Client, name: str) -> dict[str, Any]:
    r = http.post(
        "/api/auth/signup",
        json={"username": f"{name}_{uuid.uuid4().hex[:8]}", "password": "a good password"},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    body["headers"] = {"Authorization": f"Bearer {body['access_token']}"}
    return body


def content(base_url: str, document_id: str, user: dict[str, Any], at_least: int) -> Any:
    with httpx.Client(base_url=base_url, timeout=20) as http:
        r = http.get(
            f"/api/documents/{document_id}",
            params={"min_position": at_least},
            headers=user["headers"],
        )
        assert r.status_code == 200, r.text
        return r.json()


def test_npm_clients_on_two_instances(
    postgres_server: EmbeddedPostgres, redis_url: str, tmp_path: Path
) -> None:
    with (
        new_database(postgres_server) as url,
        processes() as started,
        node_clients() as clients,
    ):
        env = {"CHORUS_DOCUMENT_FLUSH_S": "0.05", "REDIS_URL": redis_url}
        a = ChorusProcess(tmp_path / "a", url, env=env)
        b = ChorusProcess(tmp_path / "b", url, env=env)
        start_all(started, a, b)
        with httpx.Client(base_url=a.url, timeout=20) as http:
            owner, viewer = signup(http, "owner"), signup(http, "viewer")
            ws = http.post(
                "/api/workspaces",
                json={"name": "interop", "visibility": "public"},
                headers=owner["headers"],
            ).json()["id"]
            assert http.post(f"/api/workspaces/{ws}/join", json={}, headers=viewer["headers"])
            for step in ("grant", "revoke"):
                role = "viewer" if step == "grant" else "member"
                path = f"/api/workspaces/{ws}/members/{viewer['user_id']}/roles/{role}"
                r = (
                    http.put(path, headers=owner["headers"])
                    if step == "grant"
                    else http.delete(path, headers=owner["headers"])
                )
                assert r.status_code == 200, r.text
            r = http.post(
                f"/api/workspaces/{ws}/documents", json={"title": "Paper"}, headers=owner["headers"]
            )
            assert r.status_code == 201, r.text
            doc = r.json()["id"]

        reader = node(clients, b.url, doc, owner["access_token"])
        reader.do("wait-synced")
        writer = node(clients, a.url, doc, owner["access_token"])
        writer.do("wait-synced")
        writer.do("insert-text:content:0:Hello from A")
        writer.do('set-map:shapes:s1:{"kind":"rect","x":10,"y":20}')
        # Through B: the update went A -> store -> B's store subscription -> B's editors.
        reader.do("wait-text:content:Hello from A")
        reader.do('wait-map:shapes:s1:{"kind":"rect","x":10,"y":20}')
        reader.do("insert-text:content:12: and B")
        writer.do("wait-text:content:Hello from A and B")
        # Awareness (cursors, names) crosses instances through Redis.
        reader.do('set-awareness:{"who":"reader"}')
        writer.do('set-awareness:{"who":"writer"}')
        seen = writer.do("wait-awareness-count:2")[0]["awareness"]
        assert sorted(v["who"] for v in seen.values()) == ["reader", "writer"]
        # The reader's state comes with the user the server knows its connection as (issue
        # 17, finding 10); the writer's own is as the writer set it.
        stamped = [v["user"] for v in seen.values() if "user" in v]
        assert [u["id"] for u in stamped] == [owner["user_id"]], seen
        reader.do("wait-awareness-count:2")

        # A viewer's edit is refused (auth message) and reaches nobody.
        spy = node(clients, b.url, doc, viewer["access_token"])
        spy.do("wait-synced")
        spy.do("insert-text:content:0:EVIL")
        assert spy.do("expect-permission-denied")[0]["permission_denied"].startswith("read-only")
        writer.do("insert-text:content:0:>> ")
        reader.do("wait-text:content:>> Hello from A and B")
        # A bad token is closed with a 44xx code, which stops the client retrying.
        intruder = node(clients, a.url, doc, "not-a-token")
        closed = intruder.do("expect-close:4400:4499")[0]
        assert closed["closed"] == 4401

        expected = {
            "content": ">> Hello from A and B",
            "shapes": {"s1": {"kind": "rect", "x": 10, "y": 20}},
        }
        printed = writer.do("print")[0]["content"]
        assert printed == expected
        # Saved: the REST view (from the log) shows it on both instances.
        head = _wait_saved(a.url, doc, owner, expected)
        assert content(b.url, doc, owner, head)["content"] == expected
        for c in clients:
            c.stop()
        clients.clear()

        a.kill9()
        b.kill9()
        a2 = ChorusProcess(tmp_path / "a2", url)
        b2 = ChorusProcess(tmp_path / "b2", url)
        start_all(started, a2, b2)
        again = node(clients, b2.url, doc, owner["access_token"])
        again.do("wait-synced")
        assert again.do("print")[0]["content"] == expected
        assert content(a2.url, doc, owner, head)["content"] == expected


def _wait_saved(base_url: str, document_id: str, user: dict[str, Any], expected: Any) -> int:
    """Follows the document's stream over /ws until its saved content is ``expected``;
    returns the position that shows it."""
    from websockets.sync.client import connect

    ws_url = base_url.replace("http", "ws", 1) + f"/ws?token={user['access_token']}"
    with connect(ws_url, open_timeout=20) as ws:
        ws.send(
            json.dumps(
                {"op": "subscribe", "sub": "d", "streams": [{"document": document_id}], "after": 0}
            )
        )
        position = 0
        while True:
            shown = content(base_url, document_id, user, position)
            if shown["content"] == expected:
                return int(shown["position"])
            frame = json.loads(ws.recv(timeout=20))
            if frame["op"] == "event":
                position = max(position, frame["event"]["position"])


class CountingRelay(TcpRelay):
    """Counts the connections a client opens to the server (every /yjs attempt)."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port, "counting")
        self.count = 0

    def connected(self, client: socket.socket, upstream: socket.socket) -> None:
        self.count += 1
        super().connected(client, upstream)


def _short_token(user_id: str, lifetime_s: int) -> str:
    now = int(time.time())
    claims = {
        "iss": "chorus", "aud": "chorus-api", "sub": user_id, "iat": now, "nbf": now,
        "exp": now + lifetime_s, "jti": uuid.uuid4().hex, "typ": "access",
    }  # fmt: skip
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def test_a_stock_client_renews_its_token_without_a_storm(
    postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The unmodified npm client on a token about to expire. Renewed (its ``params.token``
    set to a fresh token before ``exp``): the server closes the socket at ``exp`` (1008), the
    client reconnects once with the new token and edits go on. Not renewed: one reconnect,
    refused for good with 4401. The connections the server saw are counted, not guessed."""
    with (
        running_chorus(postgres_server, tmp_path, document_flush_s=0.05) as chorus,
        node_clients() as clients,
    ):
        api = chorus.api
        owner = api.signup("renew")
        ws = api.ok(api.post("/api/workspaces", owner, {"name": "r", "visibility": "public"}), 201)
        doc = api.ok(api.post(f"/api/workspaces/{ws['id']}/documents", owner, {"title": "d"}), 201)
        doc_id = str(doc["id"])

        renewed = CountingRelay(chorus.server.port)
        try:
            c = node(
                clients, f"http://127.0.0.1:{renewed.port}", doc_id, _short_token(owner.user_id, 3)
            )
            c.do("wait-synced")
            c.do("insert-text:content:0:before")
            c.do(f"set-token:{owner.access_token}")
            assert c.do("wait-reconnected")[0]["closed"] == 1008
            c.do("insert-text:content:6: after")
            expected = {"content": "before after"}
            _wait_saved(chorus.server.url, doc_id, _as_dict(owner), expected)
            assert renewed.count == 2, renewed.count
        finally:
            renewed.close()

        lapsed = CountingRelay(chorus.server.port)
        try:
            c = node(
                clients, f"http://127.0.0.1:{lapsed.port}", doc_id, _short_token(owner.user_id, 3)
            )
            c.do("wait-synced")
            stopped = c.do("wait-stopped")[0]
            assert (stopped["closed"], stopped["closes"]) == (4401, [1008, 4401]), stopped
            assert lapsed.count == 2, lapsed.count
        finally:
            lapsed.close()


def _as_dict(user: User) -> dict[str, Any]:
    return {"access_token": user.access_token, "headers": user.headers}
