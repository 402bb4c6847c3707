"""The server's log (issue 22, point 2): one format for every line, JSON by default off a
terminal; each request's lines carry its id (echoed in ``X-Request-ID``), its user, and for a
command its id and the position it was stored at; refused sockets and slow requests are
logged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.processes import ChorusProcess, processes
from tests.fixtures.servers import new_database

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(
    postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChorusProcess]:
    with new_database(postgres_server) as url, processes() as started:
        # Every request counts as slow: the slow-request line is written for each.
        env = {"CHORUS_SLOW_REQUEST_S": "0.000001"}
        process = ChorusProcess(tmp_path_factory.mktemp("logs"), url, env=env)
        started.append(process.start())
        yield process.wait_ready()


def lines(server: ChorusProcess) -> list[dict[str, Any]]:
    text = server.log_path.read_text(errors="replace")
    parsed = []
    for line in text.splitlines():
        if line.strip():
            parsed.append(json.loads(line))  # every line is one JSON object
    return parsed


def test_every_line_is_json_and_a_commands_access_line_says_who_what_and_where(
    server: ChorusProcess,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        r = http.post("/api/auth/signup", json={"username": "logan", "password": "a good password"})
        assert r.status_code == 201, r.text
        user_id, token = r.json()["user_id"], r.json()["access_token"]
        generated = r.headers["x-request-id"]
        assert len(generated) == 32  # made up: the client sent none
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Request-ID": "trace-me-42",
            "Idempotency-Key": "create-ws-1",
        }
        r = http.post("/api/workspaces", json={"name": "Logs"}, headers=headers)
        assert r.status_code == 201, r.text
        assert r.headers["x-request-id"] == "trace-me-42"
        position = r.json()["position"]
        # Not a sane id (markup and spaces, or too long): replaced, not written to the log.
        for bad in ("evil id <script>", "x" * 500):
            r = http.get(
                "/api/auth/me", headers={"Authorization": f"Bearer {token}", "X-Request-ID": bad}
            )
            assert r.status_code == 200
            assert r.headers["x-request-id"] != bad and len(r.headers["x-request-id"]) == 32
    logged = lines(server)
    access = [
        line
        for line in logged
        if line.get("logger") == "uvicorn.access" and line.get("request_id") == "trace-me-42"
    ]
    assert len(access) == 1, access
    (line,) = access
    assert line["method"] == "POST" and line["path"] == "/api/workspaces" and line["status"] == 201
    assert line["user_id"] == user_id
    assert line["command_id"] == "create-ws-1"
    assert line["position"] == position
    assert {"time", "level", "message"} <= set(line)
    assert any(
        line.get("logger") == "uvicorn.access" and line.get("request_id") == generated
        for line in logged
    )
    assert not any("x" * 500 in json.dumps(line) or "evil" in json.dumps(line) for line in logged)
    slow = [line for line in logged if line["message"].startswith("slow request")]
    assert any(line.get("request_id") == "trace-me-42" and line["duration_s"] >= 0 for line in slow)


def test_a_refused_socket_is_logged_with_its_close_code(server: ChorusProcess) -> None:
    url = server.url.replace("http", "ws") + "/ws?token=not-a-real-token"
    with (
        connect(url, open_timeout=10, additional_headers={"X-Request-ID": "socket-7"}) as ws,
        pytest.raises(ConnectionClosed),
    ):
        ws.recv(timeout=10)
    refused = [line for line in lines(server) if line.get("request_id") == "socket-7"]
    assert any(line.get("code") == 4401 for line in refused), refused
    assert "not-a-real-token" not in server.log_path.read_text()


def test_the_text_format_is_plain_lines(postgres_server: EmbeddedPostgres, tmp_path: Path) -> None:
    with new_database(postgres_server) as url, processes() as started:
        process = ChorusProcess(tmp_path, url, env={"CHORUS_LOG_FORMAT": "text"})
        started.append(process.start())
        process.wait_ready()
        r = httpx.get(f"{process.url}/health", headers={"X-Request-ID": "plain-1"})
        assert r.status_code == 200
        text = process.log_path.read_text()
    assert not text.lstrip().startswith("{")
    assert any(
        " INFO uvicorn.access: " in line and line.endswith("[plain-1]")
        for line in text.splitlines()
    )
